#!/usr/bin/env python
"""`make synthetic`: write a synthetic Cityscapes root (images, gtFine, polygons, disparity, camera), deterministic.

  .venv/bin/python tools/make_synthetic_cityscapes.py --out data/cityscapes_synthetic [--train 12 --val 6]
"""
import argparse
import os
import sys

from dcme_layers.core import paper
from dcme_layers.data import synthetic
from dcme_layers.util import cli


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=synthetic.ROOT, help="output root (default: %(default)s)")
    for split, n in synthetic.SPLITS.items():
        p.add_argument(f"--{split}", type=int, default=n, help=f"{split} frames (default: %(default)s)")
    p.add_argument("--test", type=int, default=0, help="test frames (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, default=list(paper.FRAME_SIZE), metavar=("H", "W"),
                   help="image size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=cli.positive, default=os.cpu_count() or 1,
                   help="processes rendering frames (default: %(default)s; the files are the same)")
    p.add_argument("--force", action="store_true", help="replace a set generated with another configuration")
    return p


def run(a):
    splits = {s: n for s, n in (("train", a.train), ("val", a.val), ("test", a.test)) if n > 0}
    out = synthetic.generate(a.out, splits, size=a.size, seed=a.seed, force=a.force, progress=True,
                             workers=a.workers)
    print(f"{out}: " + ", ".join(f"{s} {n}" for s, n in splits.items()) + f" frames at {a.size[0]}x{a.size[1]}")
    return 0


def main(argv=None):
    return cli.run_tool("make_synthetic_cityscapes: error", parser, run, argv, errors=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
