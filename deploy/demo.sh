#!/bin/sh
# demo -- one-shot demo client shipped in the image as statesaver-demo: pings
# the server, declares the saver of the default model (LSTM, 8 units), runs a
# 20-step demo sequence through the job queue in segments of 5 (workers
# compute them), and shows the outputs' location and the server's counters.
# Server from $STATESAVER_SERVER; STATESAVER_DEMO_KEY, STATESAVER_DEMO_INPUTS
# and STATESAVER_DEMO_OUTPUTS (a directory) override the defaults.
set -eu
saver=${STATESAVER_SAVER:-default}
key=${STATESAVER_DEMO_KEY:-demo-$(date +%s)-$$}
inputs=${STATESAVER_DEMO_INPUTS:-/opt/statesaver/demo/inputs.npy}
outdir=${STATESAVER_DEMO_OUTPUTS:-${TMPDIR:-/tmp}/statesaver-demo}
indir=$(mktemp -d "${TMPDIR:-/tmp}/statesaver-demo-in.XXXXXX")
trap 'rm -rf "$indir"' EXIT

echo "demo: server ${STATESAVER_SERVER:-127.0.0.1:7450}, saver $saver, key $key"
statesaver ping
statesaver declare "$saver" --state cell_0/c:float32:8 --state cell_0/h:float32:8
# `statesaver submit` runs every DIR/<key>.npy [length, input_size] as one
# sequence and writes OUT/<key>.npy [length, output_size].
cp "$inputs" "$indir/$key.npy"
statesaver submit "$saver" --inputs "$indir" --num-unroll 5 --outputs "$outdir" \
  --max-wait-ms 120000
statesaver stats "$saver"
echo "demo: done, outputs in $outdir/$key.npy"
