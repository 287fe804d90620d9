"""Extract the ground-truth instances of a Cityscapes root into LMDBs for training the GoogLeNet classifier.

Each frame is subsampled to --size (paper.SIZE, 340x680: the resolution DCME decodes at, so training crops look like the
test-time crops of decoded instances); every instance of the 8 evaluated classes with at least --min-pixels pixels
there is cropped (bounding box + --margin on each side, clipped), resized to --crop x --crop and written as a caffe
Datum (uint8 3xCxC BGR, label = class index 0..7 in trainId order) to <out>/<split>, with <out>/<split>/manifest.json
(counts per class). Interrupted runs resume; finished splits with the same settings are skipped (--force redoes).

    .venv/bin/python tools/extract_instances.py --root $CITYSCAPES_DATASET --out data/instances
    .venv/bin/caffe train -solver prototxt/googlenet_solver.prototxt [-weights bvlc_googlenet.caffemodel]
"""
import argparse
import sys

from dcme_layers.core import paper
from dcme_layers.data.cityscapes import available_splits
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="Cityscapes root (leftImg8bit/, gtFine/)")
    p.add_argument("--split", "--splits", dest="splits", nargs="+", choices=["train", "val", "test"],
                   help="splits to extract (default: train and val, those of them that --root has)")
    p.add_argument("--out", default="data/instances", help="output folder; LMDBs at <out>/<split>")
    p.add_argument("--size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                   help="resolution the frames are subsampled to before cropping (default %d %d)" % paper.SIZE)
    p.add_argument("--crop", type=cli.positive, default=paper.CROP,
                   help="crop side in pixels (default %d)" % paper.CROP)
    p.add_argument("--margin", type=cli.non_negative, default=paper.MARGIN,
                   help="box enlargement per side, as a fraction of the box's width/height (default %g)" % paper.MARGIN)
    p.add_argument("--min-pixels", type=cli.count, default=paper.MIN_PIXELS,
                   help="skip instances with fewer pixels at --size (default %d)" % paper.MIN_PIXELS)
    p.add_argument("--workers", type=cli.positive, default=1, help="processes reading frames (default 1)")
    p.add_argument("--seed", type=int, help="seed of the LMDB's random order and the fragments (default: one fixed "
                                            "order)")
    p.add_argument("--fragments", type=cli.count, default=0,
                   help="per instance, crops of that many random parts of its box too (default %(default)s)")
    p.add_argument("--force", action="store_true", help="re-extract even if an up-to-date LMDB exists")
    return p


def run(args):
    from dcme_layers.net import crops

    splits = args.splits or [s for s in available_splits(args.root) if s in ("train", "val")]
    if not splits:
        raise DataError(f"{args.root}: no train or val split with leftImg8bit/ and gtFine/ (a Cityscapes root?)")
    for split in splits:
        m = crops.extract_instances(args.root, split, args.out, size=args.size, crop=args.crop,
                                    margin=args.margin, min_pixels=args.min_pixels, workers=args.workers,
                                    force=args.force, seed=args.seed, fragments=args.fragments)
        per_class = ", ".join("%s %d" % kv for kv in m["per_class"].items())
        print(f"{args.out}/{split}: {m['count']} instances ({per_class}); "
              f"{m['skipped_small']} under {args.min_pixels} px skipped")
        if m["count"] == 0:
            print(f"extract_instances: warning: {args.out}/{split} is empty; Caffe cannot train on it",
                  file=sys.stderr)
    return 0


def main(argv=None):
    return cli.run_tool("extract_instances: error", parser, run, argv, errors=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
