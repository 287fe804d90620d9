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
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcme_layers.core.decoding import PAPER_THRESHOLDS, decode, parse_thresholds
from dcme_layers.core.encoding import vector_map
from dcme_layers.data import cityscapes
from dcme_layers.data.lmdb_io import DatumReader, frame_key
from dcme_layers.evaluation.bootstrap import BOOTSTRAP
from dcme_layers.evaluation.cs_eval import CLASS_NAMES, evaluate
from dcme_layers.evaluation.export import export_split
from dcme_layers.evaluation.labels import (
    best_scored,
    classifier_labels,
    confusion_matrix,
    ground_truth_classes,
    majority_label_ids,
)
from dcme_layers.evaluation.oracle import OracleOptions, run_oracle
from dcme_layers.evaluation.report import format_confusion, write_report
from dcme_layers.net.inference import infer_split, read_blob, read_frames, use_predictions
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import png_size

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
        deploy: the deploy prototxt to infer with; None: prototxt/<model>_deploy.prototxt (the demo passes its own,
            e.g. a slim SegNet).
        bootstrap: resamples of the frames for each row's AP interval (cs_eval.bootstrap_interval); 0: none.
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


def evaluate_model(model, split, root, encoded, out, weights, classifier=None, options=EvalOptions()):
    """Run the whole test pipeline; returns the list of evaluate() results (model first, oracle rows after).

    classifier: a ``classify.Classifier``, or None for oracle classes (the majority ground-truth class under each
    decoded instance). options: an ``EvalOptions``. weights: the SegNet / FCN-8s caffemodel (unused, may be None,
    with ``options.predictions``).
    """
    from dcme_layers.evaluation.visualize import instance_figure, write_figure

    o = options
    out, split_dir = Path(out), Path(encoded) / split
    th = parse_thresholds(o.thresholds or PAPER_THRESHOLDS[model])
    names = read_frames(split_dir)
    frames = frames_of(root, split, names, split_dir / "frames.txt")
    index = {n: i for i, n in enumerate(names)}
    deploy = o.deploy or f"prototxt/{model}_deploy.prototxt"
    if o.predictions:
        blobs = use_predictions(o.predictions, split_dir, out / "pred_vectors.h5", model, force=o.force)
    else:
        blobs = infer_split(deploy, weights, split_dir, out / "pred_vectors.h5", model, force=o.force)
    # what the vector maps come from, in the export's settings and the report
    source = ("predictions", str(Path(o.predictions).resolve())) if o.predictions else \
        ("weights", str(Path(weights).resolve()))
    figures = [f.name for f in frames[:o.figures]]
    notes, sections = [], []

    with h5py.File(blobs, "r") as h5, DatumReader(split_dir / "images") as images:
        size = tuple(h5["vectors"].shape[2:])  # frames and resolution: infer_split's job.json matched them

        def ground_truth(frame):
            """(full-resolution ids, instance map at the encoded size) of a frame, validated."""
            gt_ids = cityscapes.read_ground_truth(frame)
            return gt_ids, cityscapes.instance_map(cityscapes.subsample_ids(gt_ids, size))

        def classifier_image(frame):
            """The frame at the classifier's resolution: the encoded image, or the frame resized like it."""
            if tuple(classifier.size) == size:
                return np.ascontiguousarray(images[frame_key(index[frame.name], frame.name)].transpose(1, 2, 0))
            return cityscapes.resize_image(cityscapes.read_image(frame.image), classifier.size)

        def predictions(classes, spent):
            """predict(frame) for export_split: decoded labels, classes from ``classes`` (a Classifier or None:
            ground truth), confidences; it records the classifier's (truth, class) pairs and the figure frames."""
            def predict(frame):
                t0 = time.perf_counter()
                vmap = read_blob(h5, index[frame.name], blobs)
                dec = decode(vmap, *th, method=o.method)
                labels, scores = best_scored(dec.labels, dec.scores, o.max_instances)
                t1 = time.perf_counter()
                gt_ids, inst = ground_truth(frame)
                truth = majority_label_ids(labels, inst)                          # (K,) 0 = no instance
                t2 = time.perf_counter()
                if classes is not None:
                    label_ids, conf = classes.classify(classifier_image(frame), classifier_labels(labels, classes))
                    spent["pairs"][frame.name] = np.stack([truth, label_ids], 1)
                    scores = conf * scores
                else:
                    labels, label_ids, scores = ground_truth_classes(labels, scores, truth)
                t3 = time.perf_counter()
                spent["decode"] += t1 - t0
                spent["truth"] += t2 - t1
                spent["classify"] += t3 - t2
                spent["frames"] += 1
                if frame.name in figures:
                    spent["drawn"][frame.name] = (vmap, labels, label_ids, scores, gt_ids, inst)
                return labels, label_ids, scores, gt_ids.shape
            return predict

        def score(classes):
            """Export and score the decoded instances with ``classes``; returns the evaluate() result."""
            cfg = f"dt{th[0]:g}-vt{th[1]}-et{th[2]:g}-{o.method}-{'googlenet' if classes else 'oracle-classes'}"
            settings = dict([source], max_instances=o.max_instances,
                            classifier=str(Path(classes.weights).resolve()) if classes else None)
            inputs = [blobs, split_dir / "images" / "data.mdb"]
            inputs += [classes.deploy, classes.weights] if classes else []
            spent = dict(decode=0.0, truth=0.0, classify=0.0, frames=0, pairs={}, drawn={})
            predict = predictions(classes, spent)
            t0 = time.perf_counter()
            pred_dir = out / f"pred-{cfg}"
            export_split(frames, pred_dir, predict, o.upsample, desc=f"decode+export {model}", settings=settings,
                         inputs=inputs, force=o.force)
            total = time.perf_counter() - t0
            what = "GoogLeNet" if classes else "ground-truth"
            if spent["frames"]:
                n = spent["frames"]
                rest = total - spent["decode"] - spent["truth"] - spent["classify"]
                notes.append(f"Time per frame with {what} classes ({n} frames exported in this run): decode "
                             f"{1e3 * spent['decode'] / n:.0f} ms, classify {1e3 * spent['classify'] / n:.0f} ms, "
                             f"export {1e3 * rest / n:.0f} ms (and {1e3 * spent['truth'] / n:.0f} ms reading the "
                             f"ground truth{' for the confusion matrix' if classes else ''}).")
            # an export that was up to date skipped predict: recompute what the report needs from those frames
            for f in frames:
                if (classes is not None and f.name not in spent["pairs"]) or (
                        f.name in figures and f.name not in spent["drawn"]):
                    predict(f)
            result = evaluate(frames, pred_dir, workers=o.workers, bootstrap=o.bootstrap,
                              name=f"DCME {model} ({what} classes), DT={th[0]:g} VT={th[1]} ET={th[2]:g}, "
                                   f"{o.method}")
            if classes is not None:
                m = confusion_matrix(np.concatenate([spent["pairs"][f.name] for f in frames]))
                result["confusion"] = {"rows": list(CLASS_NAMES) + ["none"], "columns": list(CLASS_NAMES),
                                       "counts": m.tolist()}
                sections.append(("GoogLeNet's classes of the decoded instances",
                                 "Each decoded instance's majority ground-truth class (rows; none: no ground-truth "
                                 "instance under it) against GoogLeNet's class (columns), over the split.\n\n"
                                 + format_confusion(m)))
            return result, spent["drawn"]

        first, drawn = score(classifier)
        results = [first] + ([score(None)[0]] if o.oracle and classifier is not None else [])
        class_name = dict(zip(cityscapes.INSTANCE_LABEL_IDS, CLASS_NAMES))
        links = []
        for name in figures:
            vmap, labels, label_ids, scores, gt_ids, inst = drawn[name]
            frame = frames[index[name]]
            captions = [f"{class_name[int(c)]} {s:.2f}" for c, s in zip(label_ids, scores)]
            path = out / "figures" / f"{name}.png"
            write_figure(path, instance_figure(cityscapes.read_image(frame.image), labels, captions, gt_ids, vmap,
                                            vector_map(inst)))
            links.append(f"![{name}](figures/{name}.png)")
        if links:
            sections.append(("Figures", f"The first {len(links)} frames: decoded instances with "
                             f"{'GoogLeNet' if classifier else 'ground-truth'} classes and their confidence | the "
                             f"ground truth, with |V| of each below.\n\n" + "\n\n".join(links)))
    notes[:0] = [f"Model {model}, {source[0]} {o.predictions or weights}; {len(frames)} frames of {split} at "
                 f"{size[0]}x{size[1]}, masks upsampled ({o.upsample}) to the ground truth's resolution.",
                 "Confidence = GoogLeNet probability x decoding score; ground-truth classes: the majority "
                 "ground-truth class under each decoded instance, which drops instances on background."
                 if classifier else
                 "Classes: majority ground-truth class under each decoded instance (no classifier).",
                 f"At most the {o.max_instances} best-scored decoded instances of a frame are kept."]
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
