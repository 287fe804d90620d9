#!/usr/bin/env python
"""Run a trained SegNet or FCN-8s deploy net over an encoded split; save the predicted vector maps to HDF5.

Example: tools/infer.py --model segnet --split val   (weights: newest models/segnet/segnet_iter_*.caffemodel)
Resumable: a killed run (or one stopped by a full disk) continues from <out>.partial/ when re-run.
"""
import argparse
import sys
from pathlib import Path

from dcme_layers.net.netfiles import DEPLOY_PROTOTXT
from dcme_layers.util import cli


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["segnet", "fcn8s"], default="segnet")
    ap.add_argument("--split", default="val")
    ap.add_argument("--encoded", default="data/lmdb", help="output folder of `make encode-data`")
    ap.add_argument("--deploy", help="default: " + DEPLOY_PROTOTXT.format(model="<model>"))
    ap.add_argument("--weights", help="default: the newest models/<model>/<model>_iter_*.caffemodel")
    ap.add_argument("--out", help="default: out/<model>_<split>/pred_vectors.h5")
    ap.add_argument("--force", action="store_true", help="redo it even if up to date, or made with other weights")
    return ap


def run(args):
    from dcme_layers.net.inference import infer_split, newest_snapshot

    deploy = args.deploy or DEPLOY_PROTOTXT.format(model=args.model)
    weights = args.weights or newest_snapshot(f"models/{args.model}/{args.model}")
    if weights is None:
        sys.exit(f"infer: no snapshot models/{args.model}/{args.model}_iter_*.caffemodel; "
                 f"train first (caffe train -solver prototxt/{args.model}_solver.prototxt) or pass --weights")
    out = Path(args.out or f"out/{args.model}_{args.split}/pred_vectors.h5")
    try:
        infer_split(deploy, weights, Path(args.encoded) / args.split, out, model=args.model, force=args.force)
    except KeyboardInterrupt:
        sys.exit("infer: interrupted; the frames done are kept, re-run to resume")
    print(out)


def main(argv=None):
    return cli.run_tool("infer: error", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
