#!/usr/bin/env python
"""`make encode-data`: encode a Cityscapes root into Caffe LMDBs of images and DCME vector maps.

For each split: out/{split}/images (Datum uint8 3xHxW BGR), out/{split}/vectors (Datum float_data 2xHxW),
identical keys in identical order, frames.txt and manifest.json. Parallel over frames, resumable after a kill,
and atomic (see dcme_layers/data/lmdb_io.py).

  .venv/bin/python tools/encode_data.py --root $CITYSCAPES_DATASET --out data/lmdb --splits train val
"""
import argparse
import os
import sys

import lmdb

from dcme_layers.core import paper
from dcme_layers.data import lmdb_io, synthetic
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=synthetic.default_root(),
                   help="Cityscapes root (default: $CITYSCAPES_DATASET, else %(default)s)")
    p.add_argument("--out", default="data/lmdb", help="output folder (default: %(default)s)")
    p.add_argument("--splits", nargs="+", help="splits to encode (default: those of --root with gtFine)")
    p.add_argument("--size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                   help="encoded resolution (default: %(default)s, Cityscapes subsampled 3x)")
    p.add_argument("--anchor", choices=("cm", "bbox"), default="cm",
                   help="center of mass (the paper) or bounding-box centroid (ablation)")
    p.add_argument("--workers", type=cli.positive, default=os.cpu_count() or 1, help="processes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=lmdb_io.TRAIN_SEED,
                   help="seed of the train split's random LMDB order (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="encode again, even an up-to-date output or one written with another configuration")
    p.add_argument("--commit-every", type=cli.positive, default=16,
                   help="frames per LMDB transaction (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(a):
    try:
        if a.root == synthetic.ROOT and not os.path.isdir(a.root):
            raise DataError(f"{a.root}: not found; run `make synthetic` or set --root / CITYSCAPES_DATASET")
        lmdb_io.encode_dataset(a.root, a.out, a.splits, size=a.size, anchor=a.anchor, workers=a.workers,
                               force=a.force, commit_every=a.commit_every, seed=a.seed,
                               progress=not a.quiet)
    except ImportError as e:
        print(f"encode_data: error: pycaffe is needed for the Datum LMDBs ({e}); run `make setup`", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("encode_data: interrupted; committed frames are kept, re-run to resume", file=sys.stderr)
        return 130
    return 0


def main(argv=None):
    return cli.run_tool("encode_data: error", parser, run, argv, errors=(OSError, lmdb.Error))


if __name__ == "__main__":
    sys.exit(main())
