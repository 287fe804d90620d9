#!/usr/bin/env python
"""Search the decoding thresholds (DT, VT, ET) on a split and score each setting with cityscapesscripts.

Maps: --predictions, the HDF5 file tools/infer.py (make evaluate) writes, or --oracle-noise, the ground truth at
--size plus network-like noise (dcme_layers.evaluation.oracle.noisy_map). Classes: each decoded instance's majority
ground-truth class, or GoogLeNet's with --classifier-weights. Scored at the maps' resolution against the ground
truth subsampled to it (the evaluator's own matching and AP; dcme_layers/pipeline/tuning_search.py says how), the best setting
again at full resolution (what make evaluate reports; --no-confirm skips it).

Writes into --out: table.csv / table.md (DT, VT, ET, AP, AP50%), best.json, best.txt (one line DT,VT,ET that
`tools/evaluate.py --thresholds` takes) and heatmap.png (AP over DT x VT at the best ET, the paper's setting
outlined). Default grid: 5 values of each threshold around the paper's SegNet setting scaled to the maps' size.

  tools/tune_thresholds.py --predictions out/segnet_val/pred_vectors.h5 --split val --out out/segnet_val/tune
  tools/tune_thresholds.py --oracle-noise --root data/cityscapes_synthetic --split val --out out/tune_noise
"""
import argparse
import sys
from pathlib import Path

from dcme_layers.core import paper
from dcme_layers.core.decoding import METHODS
from dcme_layers.data import cityscapes, synthetic
from dcme_layers.net.netfiles import DEPLOY_PROTOTXT
from dcme_layers.pipeline.tuning import Source, TuneOptions, prediction_frames, tune
from dcme_layers.pipeline.tuning_grid import default_grid
from dcme_layers.util import cli


def values(kind):
    """argparse type: a comma-separated list of numbers."""
    def parse(text):
        try:
            return tuple(kind(float(x)) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    return parse


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    maps = ap.add_mutually_exclusive_group(required=True)
    maps.add_argument("--predictions", help="HDF5 file of tools/infer.py (vectors, frames)")
    maps.add_argument("--oracle-noise", action="store_true",
                      help="the ground truth at --size plus network-like noise instead of a net's maps")
    ap.add_argument("--root", default=synthetic.default_root(),
                    help="Cityscapes root (default: $CITYSCAPES_DATASET, else %(default)s)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--frames", type=cli.count, default=0, help="the first N frames only (default: all)")
    ap.add_argument("--size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                    help="--oracle-noise: the maps' size (default %d %d)" % paper.SIZE)
    ap.add_argument("--seed", type=int, default=0, help="--oracle-noise: the noise's seed (default %(default)s)")
    ap.add_argument("--dt", type=values(float), help="DT values, e.g. 5,10,20 (default: around the paper's)")
    ap.add_argument("--vt", type=values(int), help="VT values")
    ap.add_argument("--et", type=values(float), help="ET values")
    ap.add_argument("--method", choices=METHODS, default="vote")
    ap.add_argument("--max-instances", type=cli.count, default=TuneOptions.max_instances,
                    help="best-scored instances kept per frame (default %(default)s, as make evaluate)")
    ap.add_argument("--classifier-weights", help="GoogLeNet weights: its classes instead of the ground truth's")
    ap.add_argument("--classifier-deploy", default=DEPLOY_PROTOTXT.format(model="googlenet"),
                    help="GoogLeNet deploy prototxt matching --classifier-weights (default: %(default)s)")
    ap.add_argument("--classifier-size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                    help="resolution GoogLeNet's crops are cut at (default %d %d)" % paper.SIZE)
    ap.add_argument("--no-confirm", action="store_true", help="skip scoring the best setting at full resolution")
    ap.add_argument("--workers", type=cli.positive, default=2, help="processes (default %(default)s)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--force", action="store_true", help="redo it even if up to date, or made with other settings")
    return ap


def run(args):
    try:
        if args.predictions:
            if not Path(args.predictions).is_file():
                sys.exit(f"tune_thresholds: {args.predictions}: no such file; write it with tools/infer.py")
            frames, size = prediction_frames(args.predictions, args.root, args.split, args.frames or None)
            source = Source(args.predictions, size)
        else:
            frames = cityscapes.list_frames(args.root, args.split)[:args.frames or None]
            source = Source(None, tuple(args.size), args.seed)
        dts, vts, ets = default_grid(source.size)
        grid = (args.dt or dts, args.vt or vts, args.et or ets)
        classifier = ((args.classifier_deploy, args.classifier_weights, tuple(args.classifier_size))
                      if args.classifier_weights else None)
        options = TuneOptions(args.method, args.max_instances, classifier, args.workers, not args.no_confirm,
                              args.force)
        best = tune(frames, source, grid, args.out, options, split=args.split)
    except KeyboardInterrupt:
        sys.exit("tune_thresholds: interrupted; the settings scored are kept, re-run to resume")
    full = best["full_resolution"]
    print(f"best {best['thresholds']}: AP {100 * best['AP']:.1f} at {best['size'][0]}x{best['size'][1]}"
          + (f", {100 * full['AP']:.1f} at full resolution" if full else "")
          + f"; paper's {best['paper']['thresholds']}: AP "
          + (f"{100 * best['paper']['AP']:.1f}" if best["paper"]["AP"] is not None else "not in the grid")
          + f"\ntable: {args.out}/table.md; heat map: {args.out}/heatmap.png; thresholds: {args.out}/best.txt")



def main(argv=None):
    return cli.run_tool("tune_thresholds", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
