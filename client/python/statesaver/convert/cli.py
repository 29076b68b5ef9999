"""cli -- `statesaver-convert`, the converters' command line.

    statesaver-convert torch IN.pt --out M.safetensors [--map embedding=P,rnn=P,head=P]
                       [--head-activation A] [--rnn-activation tanh|relu] [--check]
                       [--tolerance X] [--worker PATH]
    statesaver-convert keras IN.h5 --out M.safetensors [--check] [--tolerance X]
                       [--worker PATH]

Exit status: 0 converted (and checked); 2 the input cannot be converted
(the message names the tensor or layer; nothing is written); 3 --check
found a difference above the tolerance (the file is removed again); 1
anything else.
"""
import argparse
import os
import sys

from .errors import ConvertError
from .model import HEAD_ACTIVATIONS

DEFAULT_TOLERANCE = 1e-5


def _parser():
    ap = argparse.ArgumentParser(
        prog="statesaver-convert",
        description="Convert a trained PyTorch or Keras RNN model to the worker's safetensors "
                    "format (docs/worker.md, Converters).")
    sub = ap.add_subparsers(dest="framework", required=True)
    for fw, what in (("torch", "a torch.save'd state_dict or whole nn.Module (.pt)"),
                     ("keras", "a Keras model saved as HDF5 (.h5)")):
        p = sub.add_parser(fw, help=what)
        p.add_argument("input", help=what)
        p.add_argument("--out", required=True, help="the safetensors file to write")
        p.add_argument("--check", action="store_true",
                       help="run the source (torch, or for keras a numpy reference of the "
                            "Keras formulas) and `statesaver-worker unroll` on random inputs; "
                            "exit 3 above the tolerance")
        p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help="worst |ours - ref| / max(1, |ref|) accepted by --check "
                            "(default %g)" % DEFAULT_TOLERANCE)
        p.add_argument("--worker", help="statesaver-worker binary for --check (default: "
                                        "$STATESAVER_WORKER, the build tree, then PATH)")
        if fw == "torch":
            p.add_argument("--map", help="the parts' prefixes: embedding=P,rnn=P[+P...],head=P")
            p.add_argument("--head-activation", choices=HEAD_ACTIVATIONS,
                           help="activation after the head (default: a final Softmax/"
                                "LogSoftmax/Sigmoid/Tanh module of a whole module, else none)")
            p.add_argument("--rnn-activation", choices=("tanh", "relu"),
                           help="nn.RNN's nonlinearity for a state_dict (which does not "
                                "record it; default tanh)")
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    out = args.out
    existed = os.path.exists(out)
    try:
        if args.framework == "torch":
            from . import torch_convert
            src = torch_convert.load(args.input)
            model, parts = torch_convert.convert(src, torch_convert.parse_map(args.map),
                                                 args.head_activation, args.rnn_activation)
            what = "embedding=%s, rnn=%s, head=%s" % (parts["embedding"], "+".join(p or "<root>" for p in parts["rnn"]),
                                                      parts["head"])
        else:
            from . import keras_convert
            src = keras_convert.load(args.input)
            model = keras_convert.convert(src)
            what = "layers " + ", ".join(src.used)
        model.write(out)
    except ConvertError as e:
        print("statesaver-convert: %s: %s" % (args.input, e), file=sys.stderr)
        return 2
    except OSError as e:
        print("statesaver-convert: %s" % e, file=sys.stderr)
        return 1
    for n in model.notes:
        print("note: %s" % n, file=sys.stderr)
    print("wrote %s: %s (%s)" % (out, model.describe(), what))
    if not args.check:
        return 0
    try:
        if args.framework == "torch":
            from . import torch_check
            worst = torch_check.check(src, parts, model, out, args.worker)
            ref = "torch"
        else:
            from . import keras_check
            worst = keras_check.check(src, model, out, args.worker)
            ref = "numpy reference of the Keras formulas"
    except ConvertError as e:
        print("statesaver-convert: --check: %s" % e, file=sys.stderr)
        return 1
    name, w = max(worst.items(), key=lambda kv: kv[1])
    print("check against %s: worst relative difference %.3g (%s); tolerance %g"
          % (ref, w, name, args.tolerance))
    if not (w <= args.tolerance):
        print("statesaver-convert: --check failed: %s differs by %.3g > %g; %s removed"
              % (name, w, args.tolerance, out), file=sys.stderr)
        if not existed:
            os.unlink(out)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
