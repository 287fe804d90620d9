"""The paper's test pipeline for one trained model and split (Caffe): infer -> decode -> classify -> export -> score.

1. ``inference.infer_split``: the deploy net's 2-D vector maps for every encoded frame, saved to HDF5 (resumable);
   or ``inference.use_predictions``: maps predicted elsewhere (another machine's GPU), checked the same way.
2. ``decoding.decode``: the four decoding steps with the model's (DT, VT, ET) at the encoded resolution.
3. ``classify.Classifier``: GoogLeNet gives each decoded instance one of the 8 classes, from crops of the frame at
   the classifier's own resolution (``Classifier.size``). Without a classifier, or beside it with ``oracle``, each
   instance takes the majority ground-truth class instead, to separate segmentation from classification errors;
   the report's confusion matrix shows where GoogLeNet's classes go.
4. ``export.export_split`` / ``cs_eval.evaluate``: masks upsampled to the ground truth's resolution, scored by
   cityscapesscripts' evaluator (AP, AP50%, AP100m, AP50m, with bootstrap intervals), written as report.md /
   report.json with figures of the first frames, and the oracle rows (decoded ground truth) beside it when asked.

Confidence of an instance = classifier probability x decoding score (``Decoded.scores``), so that the evaluator's
precision-recall ranking sees both how sure the class is and how consistent the votes were.
"""
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcme_layers.core import paper
from dcme_layers.core.thresholds import parse_thresholds
from dcme_layers.data import cityscapes
from dcme_layers.data.lmdb_io import DatumReader
from dcme_layers.evaluation.bootstrap import BOOTSTRAP
from dcme_layers.evaluation.cs_eval import CLASS_NAMES, evaluate
from dcme_layers.evaluation.export import export_split
from dcme_layers.evaluation.labels import confusion_matrix
from dcme_layers.evaluation.oracle import OracleOptions, run_oracle
from dcme_layers.evaluation.report import write_report
from dcme_layers.net.inference import infer_split, read_frames, use_predictions
from dcme_layers.net.netfiles import DEPLOY_PROTOTXT
from dcme_layers.pipeline.decode_classify import FramePredictor, SplitMaps
from dcme_layers.pipeline.evaluate_report import (
    confusion_section,
    figures_section,
    intro_notes,
    timing_note,
    write_figures,
)
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import png_size

__all__ = ["MAX_INSTANCES", "EvalOptions", "Scored", "frames_of", "ground_truth_size",
           "vector_maps_file", "maps_source", "export_and_score", "evaluate_model"]

#: Per frame, the best-scored decoded instances kept (like COCO's 100 detections).
MAX_INSTANCES = 100


@dataclass(frozen=True)
class EvalOptions:
    """How ``evaluate_model`` decodes, exports and reports.

    Arguments:
        thresholds: (DT, VT, ET), "segnet" or "fcn8s"; None: the model's paper values.
        method: step 4 of decoding, "vote" (the paper) or "watershed" (ablation).
        upsample: masks to the ground truth's resolution (export.UPSAMPLING).
        max_instances: per frame, the best-scored decoded instances kept (MAX_INSTANCES).
        figures: frames drawn (visualize.instance_figure), linked from the report.
        oracle: add the rows that need the ground truth: the same decoded instances with ground-truth classes
            (with a classifier) and decoded ground truth (oracle.run_oracle).
        workers: processes for the evaluator's matching and the bootstrap.
        force: redo the inference and the export even if up to date.
        deploy: the deploy prototxt to infer with; None: DEPLOY_PROTOTXT (the demo passes its own, e.g. a slim
            SegNet).
        bootstrap: resamples of the frames for each row's AP interval (bootstrap.bootstrap_interval); 0: none.
        predictions: an HDF5 file of vector maps to score instead of running the deploy net (tools/infer.py's,
            or Caffe's HDF5Output file with its frame names beside it: inference.use_predictions); None: infer.
    """
    thresholds: object = None
    method: str = "vote"
    upsample: str = "nearest"
    max_instances: int = MAX_INSTANCES
    figures: int = 4
    oracle: bool = False
    workers: int = 1
    force: bool = False
    deploy: object = None
    bootstrap: int = BOOTSTRAP
    predictions: object = None


Scored = namedtuple("Scored", "result predictor seconds confusion")
Scored.__doc__ = """One classification scored: result (cs_eval.evaluate's dict), predictor (its FramePredictor),
seconds (of the export), confusion ((9, 8) labels.confusion_matrix with a classifier, else None)."""


def frames_of(root, split, names, where):
    """The cityscapes Frames (ground truth) of the encoded frame names, in that order."""
    by_name = {f.name: f for f in cityscapes.list_frames(root, split)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise EvaluationError(f"{where}: frame {missing[0]} has no ground truth under {root} ({split})")
    return [by_name[n] for n in names]


def ground_truth_size(frame):
    """(H, W) of a frame's ground truth from its PNG header (cs_eval validates the files before scoring); a
    missing or non-PNG file gets read_ground_truth's one line naming it."""
    try:
        size = png_size(frame.instance_ids)
    except OSError:
        size = None
    return size or cityscapes.read_ground_truth(frame).shape


def vector_maps_file(model, split_dir, out, weights, options):
    """The split's vector maps as an HDF5 file in ``out``: ``options.predictions`` checked (use_predictions), or
    the output of the deploy net (``options.deploy``, else DEPLOY_PROTOTXT) with ``weights`` (infer_split)."""
    o = options
    if o.predictions:
        return use_predictions(o.predictions, split_dir, out / "pred_vectors.h5", model, force=o.force)
    deploy = o.deploy or DEPLOY_PROTOTXT.format(model=model)
    return infer_split(deploy, weights, split_dir, out / "pred_vectors.h5", model, force=o.force)


def maps_source(weights, options):
    """What the vector maps come from, for the export's settings and the report: ("predictions", path) or
    ("weights", path), the path absolute."""
    if options.predictions:
        return "predictions", str(Path(options.predictions).resolve())
    return "weights", str(Path(weights).resolve())


def export_and_score(model, frames, maps, th, options, classes, source, out, figures=()):
    """Export every frame's decoded instances with ``classes`` (a Classifier, or None: ground-truth classes) into
    ``out``/pred-<config>/ and score them (cs_eval.evaluate). Returns a Scored."""
    o = options
    cfg = f"dt{th[0]:g}-vt{th[1]}-et{th[2]:g}-{o.method}-{'googlenet' if classes else 'oracle-classes'}"
    settings = dict([source], max_instances=o.max_instances,
                    classifier=str(Path(classes.weights).resolve()) if classes else None)
    inputs = [maps.path, maps.split_dir / "images" / "data.mdb"]
    inputs += [classes.deploy, classes.weights] if classes else []
    predictor = FramePredictor(maps, th, o, classes, figures)
    pred_dir = out / f"pred-{cfg}"
    t0 = time.perf_counter()
    export_split(frames, pred_dir, predictor, o.upsample, desc=f"decode+export {model}", settings=settings,
                 inputs=inputs, force=o.force)
    seconds = time.perf_counter() - t0
    predictor.complete(frames)
    what = "GoogLeNet" if classes else "ground-truth"
    result = evaluate(frames, pred_dir, workers=o.workers, bootstrap=o.bootstrap,
                      name=f"DCME {model} ({what} classes), DT={th[0]:g} VT={th[1]} ET={th[2]:g}, {o.method}")
    m = None
    if classes is not None:
        m = confusion_matrix(np.concatenate([predictor.pairs[f.name] for f in frames]))
        result["confusion"] = {"rows": list(CLASS_NAMES) + ["none"], "columns": list(CLASS_NAMES),
                               "counts": m.tolist()}
    return Scored(result, predictor, seconds, m)


def evaluate_model(model, split, root, encoded, out, weights, classifier=None, options=EvalOptions()):
    """Run the whole test pipeline; returns the list of evaluate() results (model first, oracle rows after).

    classifier: a ``classify.Classifier``, or None for oracle classes (the majority ground-truth class under each
    decoded instance). options: an ``EvalOptions``. weights: the SegNet / FCN-8s caffemodel (unused, may be None,
    with ``options.predictions``).
    """
    o = options
    out, split_dir = Path(out), Path(encoded) / split
    th = parse_thresholds(o.thresholds or paper.THRESHOLDS[model])
    names = read_frames(split_dir)
    frames = frames_of(root, split, names, split_dir / "frames.txt")
    blobs = vector_maps_file(model, split_dir, out, weights, o)
    source = maps_source(weights, o)
    figures = [f.name for f in frames[:o.figures]]
    with h5py.File(blobs, "r") as h5, DatumReader(split_dir / "images") as images:
        size = tuple(h5["vectors"].shape[2:])  # frames and resolution: infer_split's job.json matched them
        maps = SplitMaps(blobs, h5, split_dir, images, {n: i for i, n in enumerate(names)}, size)
        scored = [export_and_score(model, frames, maps, th, o, classifier, source, out, figures)]
        if o.oracle and classifier is not None:
            scored.append(export_and_score(model, frames, maps, th, o, None, source, out))
    links = write_figures(out, frames, scored[0].predictor.drawn, figures)
    results = [s.result for s in scored]
    notes = intro_notes(model, split, o, source, weights, len(frames), size, classifier)
    notes += [timing_note(s.predictor, s.seconds) for s in scored if s.predictor.count]
    sections = [confusion_section(scored[0].confusion)] if classifier is not None else []
    sections += [figures_section(links, classifier)] if links else []
    if classifier is not None and tuple(classifier.size) != size:
        notes.append(f"GoogLeNet's crops are cut from the frame at {classifier.size[0]}x{classifier.size[1]} "
                     f"(the resolution it was trained at), the decoded masks upsampled to it.")
    if o.oracle:
        results += run_oracle(frames, out / "oracle", OracleOptions(size=size, thresholds=th, upsample=o.upsample,
                                                                    anchors=("cm",), methods=(o.method,),
                                                                    full_res=False, figures=0,
                                                                    bootstrap=o.bootstrap),
                              workers=o.workers, force=o.force)
        notes.append("Oracle rows (GT at ...) decode the ground-truth vector maps instead of network output "
                     "(tools/oracle.py gives the whole table).")
    write_report(results, out, title=f"DCME {model} on {split}", notes=notes, sections=sections)
    return results
