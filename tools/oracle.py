#!/usr/bin/env python
"""The paper's ground-truth ceilings: decode the ground-truth vector maps instead of network output and score them.

For one split: the full-resolution ground truth (AP = 1), the ground truth subsampled to --size, and the decoded
ground-truth vector maps for every --anchor x --method, with the cityscapesscripts instance evaluator; one
report (out/report.md, out/report.json) and figures (input | magnitude map | instances) in out/figures/.
Resumable: predictions already exported are kept, and redone when the ground truth changed (--force: always).

  .venv/bin/python tools/oracle.py --root $CITYSCAPES_DATASET --split val --out out/oracle
"""
import argparse
import os
import sys

from dcme_layers.core import paper
from dcme_layers.core.decoding import METHODS
from dcme_layers.core.encoding import ANCHORS
from dcme_layers.core.thresholds import parse_thresholds, scale_thresholds
from dcme_layers.data import cityscapes, synthetic
from dcme_layers.evaluation.export import UPSAMPLING
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=synthetic.default_root(),
                   help="Cityscapes root (default: $CITYSCAPES_DATASET, else %(default)s)")
    p.add_argument("--split", default="val")
    p.add_argument("--size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                   help="encoded resolution (default: %(default)s)")
    p.add_argument("--anchor", nargs="+", choices=ANCHORS, default=list(ANCHORS))
    p.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--thresholds", default="segnet",
                   help="segnet, fcn8s or DT,VT,ET in pixels of --size (default: %(default)s)")
    p.add_argument("--scale-thresholds", action="store_true",
                   help="thresholds are given at %dx%d: scale them to --size" % paper.SIZE)
    p.add_argument("--upsample", choices=UPSAMPLING, default="nearest", help="masks to full resolution")
    p.add_argument("--out", default="out/oracle")
    p.add_argument("--no-full-res", dest="full_res", action="store_false", help="skip the full-resolution GT row")
    p.add_argument("--no-gt-subsampled", dest="gt_subsampled", action="store_false",
                   help="skip the subsampled-GT row")
    p.add_argument("--figures", type=cli.count, default=3, help="frames to draw per configuration (default: 3)")
    p.add_argument("--limit", type=cli.count, help="only the first N frames")
    p.add_argument("--workers", type=cli.positive, default=1, help="processes for the evaluator's matching")
    p.add_argument("--force", action="store_true", help="export every configuration again")
    return p


def run(a):
    from dcme_layers.evaluation.oracle import OracleOptions, run_oracle

    th = scale_thresholds(a.thresholds, a.size) if a.scale_thresholds else parse_thresholds(a.thresholds)
    frames = cityscapes.list_frames(a.root, a.split)[:a.limit]
    if not frames:
        raise DataError(f"{a.root}: no frames in split {a.split}")
    options = OracleOptions(tuple(a.size), tuple(a.anchor), tuple(a.method), th, a.upsample, a.full_res,
                            a.gt_subsampled, a.figures)
    results = run_oracle(frames, a.out, options, workers=a.workers, force=a.force)
    for r in results:
        print(f"{r['name']}: AP {100 * r['AP']:.1f}")
    print(f"report: {os.path.join(a.out, 'report.md')}")


def main(argv=None):
    return cli.run_tool("oracle", parser, run, argv, errors=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
