#!/bin/sh
# demo -- one-shot demo client shipped in the image as statesaver-demo: pings
# the server, declares the saver of the default model (LSTM, 8 units), submits
# a 20-step demo sequence in segments of 5 for the workers to run, waits for
# the outputs and shows the saver. Server from $STATESAVER_SERVER.
set -eu
saver=${STATESAVER_SAVER:-default}
key=${STATESAVER_DEMO_KEY:-demo-$(date +%s)-$$}
inputs=${STATESAVER_DEMO_INPUTS:-/opt/statesaver/demo/inputs.npy}
out=${TMPDIR:-/tmp}/statesaver-demo-outputs.npy

echo "demo: server ${STATESAVER_SERVER:-127.0.0.1:7450}, saver $saver, key $key"
statesaver ping
statesaver declare "$saver" --state cell_0/c:float32:8 --state cell_0/h:float32:8
# TODO(integrator): check these flags against `statesaver submit --help` once
# the CLI's submit command lands (whole sequence split into --num-unroll steps,
# waits for every segment, writes the outputs).
statesaver submit "$saver" "$key" --inputs "$inputs" --num-unroll 5 --outputs "$out"
statesaver ls "$saver"
statesaver stats
echo "demo: done, outputs in $out"
