#!/usr/bin/env python
"""`make evaluate`: infer, decode, classify, export and score a trained SegNet or FCN-8s on one split.

Writes into --out: pred_vectors.h5 (network output), pred-*/ (Cityscapes results format), figures/*.png
(input | magnitude map | instances), report.md and report.json (AP, AP50%, AP100m, AP50m, overall and per class).
Every step resumes from what a killed run left. --predictions scores vector maps computed elsewhere (e.g. on a GPU
machine by tools/gpu_check.sh --demo) instead of running the deploy net.
"""
import argparse
import sys

from dcme_layers.core import paper
from dcme_layers.core.decoding import METHODS
from dcme_layers.data import synthetic
from dcme_layers.evaluation.export import UPSAMPLING
from dcme_layers.net.netfiles import DEPLOY_PROTOTXT
from dcme_layers.pipeline.evaluate import EvalOptions
from dcme_layers.util import cli


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(paper.THRESHOLDS), default="segnet")
    ap.add_argument("--split", default="val")
    ap.add_argument("--root", default=synthetic.default_root(),
                    help="Cityscapes root (default: $CITYSCAPES_DATASET, else %(default)s)")
    ap.add_argument("--encoded", default="data/lmdb", help="output folder of `make encode-data`")
    ap.add_argument("--out", help="default: out/<model>_<split>")
    ap.add_argument("--weights", help="default: the newest models/<model>/<model>_iter_*.caffemodel")
    ap.add_argument("--predictions", metavar="FILE",
                    help="score the vector maps in this HDF5 file instead of running the deploy net: tools/infer.py's "
                         "output, or Caffe's HDF5Output file with FILE.frames.txt beside it; its frames must be those "
                         "of --encoded/--split, in order (--weights and --deploy are then unused)")
    ap.add_argument("--classifier-weights",
                    help="GoogLeNet weights (default: the newest models/googlenet/googlenet_iter_*.caffemodel)")
    ap.add_argument("--oracle-classes", action="store_true",
                    help="no classifier: each instance takes the majority ground-truth class under it")
    ap.add_argument("--deploy", help="deploy prototxt matching --weights (default: %s)"
                    % DEPLOY_PROTOTXT.format(model="<model>"))
    ap.add_argument("--classifier-deploy", default=DEPLOY_PROTOTXT.format(model="googlenet"),
                    help="GoogLeNet deploy prototxt matching --classifier-weights (default: %(default)s)")
    ap.add_argument("--classifier-size", nargs=2, type=cli.positive, default=list(paper.SIZE), metavar=("H", "W"),
                    help="resolution GoogLeNet's crops are cut at: its training crops' (tools/extract_instances.py "
                         "--size; default %d %d)" % paper.SIZE)
    ap.add_argument("--thresholds", help="DT,VT,ET (default: the model's paper values)")
    ap.add_argument("--method", choices=METHODS, default="vote", help="step 4: vote (paper) or watershed (ablation)")
    ap.add_argument("--upsample", choices=UPSAMPLING, default="nearest")
    ap.add_argument("--oracle", action="store_true",
                    help="add the rows that use the ground truth: the same instances with ground-truth classes, "
                         "and decoded ground truth")
    ap.add_argument("--max-instances", type=cli.count, default=EvalOptions.max_instances,
                    help="best-scored instances kept per frame")
    ap.add_argument("--figures", type=cli.count, default=EvalOptions.figures, help="frames drawn as PNG figures")
    ap.add_argument("--bootstrap", type=cli.count, default=EvalOptions.bootstrap,
                    help="resamples of the frames for the AP intervals, 0 for none (default %(default)s)")
    ap.add_argument("--workers", type=cli.positive, default=2, help="processes for the evaluator's matching")
    ap.add_argument("--force", action="store_true", help="redo the inference and the export even if up to date")
    return ap


def run(args):
    from dcme_layers.net.classify import Classifier
    from dcme_layers.net.inference import newest_snapshot
    from dcme_layers.pipeline.evaluate import evaluate_model

    def need(path, what, solver):
        if path is None:
            sys.exit(f"evaluate: no {what} snapshot found; train it (caffe train -solver prototxt/{solver}) "
                     f"or pass the weights explicitly")
        return path

    weights = None if args.predictions else args.weights or need(
        newest_snapshot(f"models/{args.model}/{args.model}"), args.model, f"{args.model}_solver.prototxt")
    classifier = None
    if not args.oracle_classes:
        cw = args.classifier_weights or need(newest_snapshot("models/googlenet/googlenet"), "GoogLeNet",
                                             "googlenet_solver.prototxt (after tools/extract_instances.py)")
    out = args.out or f"out/{args.model}_{args.split}"
    if not args.oracle_classes:
        classifier = Classifier(args.classifier_deploy, cw, size=args.classifier_size)
    options = EvalOptions(args.thresholds, args.method, args.upsample, args.max_instances, args.figures,
                          args.oracle, args.workers, args.force, args.deploy, args.bootstrap, args.predictions)
    evaluate_model(args.model, args.split, args.root, args.encoded, out, weights, classifier, options)
    print(f"report: {out}/report.md")


def main(argv=None):
    return cli.run_tool("evaluate", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
