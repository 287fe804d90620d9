"""The paper's test pipeline for one trained model and split (Caffe): infer -> decode -> classify -> export -> score.

1. ``inference.infer_split``: the deploy net's 2-D vector maps for every encoded frame, saved to HDF5 (resumable).
2. ``decoding.decode``: the four decoding steps with the model's (DT, VT, ET) at the encoded resolution.
3. ``classify.Classifier``: GoogLeNet gives each decoded instance one of the 8 classes (``classes="oracle"`` takes
   the majority ground-truth class instead, to separate segmentation from classification errors).
4. ``export.export_split`` / ``cs_eval.evaluate``: masks upsampled to the ground truth's resolution, scored by
   cityscapesscripts' evaluator (AP, AP50%, AP100m, AP50m), written as report.md / report.json, with the oracle
   rows (decoded ground truth) beside it when asked.

Confidence of an instance = classifier probability x decoding score (``Decoded.scores``), so that the evaluator's
precision-recall ranking sees both how sure the class is and how consistent the votes were.
"""
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcme_layers import cityscapes
from dcme_layers.cs_eval import evaluate
from dcme_layers.decoding import PAPER_THRESHOLDS, decode, parse_thresholds
from dcme_layers.export import EvaluationError, png_size, export_split
from dcme_layers.inference import infer_split, read_blob, read_frames
from dcme_layers.lmdb_io import DatumReader, frame_key
from dcme_layers.oracle import OracleOptions, keep_instances, majority_label_ids, run_oracle
from dcme_layers.report import write_report


@dataclass(frozen=True)
class EvalOptions:
    """How ``evaluate_model`` decodes, exports and reports.

    Arguments:
        thresholds: (DT, VT, ET), "segnet" or "fcn8s"; None: the model's paper values.
        method: step 4 of decoding, "vote" (the paper) or "watershed" (ablation).
        upsample: masks to the ground truth's resolution (export.UPSAMPLING).
        max_instances: per frame, the best-scored decoded instances kept (like COCO's 100 detections).
        figures: frames drawn as input | magnitude | instances PNGs.
        oracle: add the decoded-ground-truth rows (oracle.run_oracle) to the report.
        workers: processes for the evaluator's matching.
        force: redo the inference and the export even if up to date.
        deploy: the deploy prototxt to infer with; None: prototxt/<model>_deploy.prototxt (the demo passes its own,
            e.g. a slim SegNet).
    """
    thresholds: object = None
    method: str = "vote"
    upsample: str = "nearest"
    max_instances: int = 100
    figures: int = 3
    oracle: bool = False
    workers: int = 1
    force: bool = False
    deploy: object = None


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


def best_scored(labels, scores, n):
    """The ``n`` best-scored instances of a decoded label map (a poorly trained net yields hundreds), renumbered
    in their order: (labels (h, w), scores (min(K, n),))."""
    if len(scores) <= n:
        return labels, scores
    keep = np.zeros(len(scores), bool)
    keep[np.argsort(-scores, kind="stable")[:n]] = True
    return keep_instances(labels, keep), scores[keep]


def evaluate_model(model, split, root, encoded, out, weights, classifier=None, options=EvalOptions()):
    """Run the whole test pipeline; returns the list of evaluate() results (model first, oracle rows after).

    classifier: a ``classify.Classifier``, or None for oracle classes (the majority ground-truth class under each
    decoded instance). options: an ``EvalOptions``.
    """
    from dcme_layers.visualize import side_by_side, write_png

    o = options
    out, split_dir = Path(out), Path(encoded) / split
    th = parse_thresholds(o.thresholds or PAPER_THRESHOLDS[model])
    names = read_frames(split_dir)
    frames = frames_of(root, split, names, split_dir / "frames.txt")
    index = {n: i for i, n in enumerate(names)}
    deploy = o.deploy or f"prototxt/{model}_deploy.prototxt"
    blobs = infer_split(deploy, weights, split_dir, out / "pred_vectors.h5", model,
                        force=o.force)
    cfg = f"dt{th[0]:g}-vt{th[1]}-et{th[2]:g}-{o.method}-{'googlenet' if classifier else 'oracle-classes'}"
    pred_dir = out / f"pred-{cfg}"
    settings = dict(weights=str(Path(weights).resolve()),
                    classifier=str(Path(classifier.weights).resolve()) if classifier else None,
                    max_instances=o.max_instances)
    inputs = [blobs, split_dir / "images" / "data.mdb"]
    inputs += [classifier.deploy, classifier.weights] if classifier else []
    figures = {f.name for f in frames[:o.figures]}
    drawn = {}  # the figure frames' (vector map, decoded labels), decoded once
    spent = dict(decode=0.0, classify=0.0, frames=0)  # seconds of this run's exported frames (the report's timing)

    with h5py.File(blobs, "r") as h5, DatumReader(split_dir / "images") as images:
        size = h5["vectors"].shape[2:]  # frames and resolution: the blob file's job.json matched them (infer_split)

        def decoded(frame):
            vmap = read_blob(h5, index[frame.name], blobs)
            dec = decode(vmap, *th, method=o.method)
            if frame.name in figures:
                drawn[frame.name] = (vmap, dec.labels)
            return dec

        def predict(frame):
            t0 = time.perf_counter()
            dec = decoded(frame)
            labels, scores = best_scored(dec.labels, dec.scores, o.max_instances)
            t1 = time.perf_counter()
            spent["decode"] += t1 - t0
            spent["frames"] += 1
            if classifier is not None:
                image = np.ascontiguousarray(images[frame_key(index[frame.name], frame.name)].transpose(1, 2, 0))
                t2 = time.perf_counter()
                label_ids, conf = classifier.classify(image, labels)
                spent["classify"] += time.perf_counter() - t2
                return labels, label_ids, conf * scores, ground_truth_size(frame)
            gt_ids = cityscapes.read_ground_truth(frame)
            label_ids = majority_label_ids(labels, cityscapes.instance_map(cityscapes.subsample_ids(gt_ids, size)))
            keep = label_ids > 0
            spent["classify"] += time.perf_counter() - t1          # oracle classes: from the ground truth
            return keep_instances(labels, keep), label_ids[keep], scores[keep], gt_ids.shape

        t0 = time.perf_counter()
        export_split(frames, pred_dir, predict, o.upsample, desc=f"decode+export {model}", settings=settings,
                     inputs=inputs, force=o.force)
        spent["total"] = time.perf_counter() - t0
        for frame in frames[:o.figures]:
            if frame.name not in drawn:  # the export was up to date: decode the figure frames now
                decoded(frame)
            vmap, labels = drawn[frame.name]
            image = images[frame_key(index[frame.name], frame.name)].transpose(1, 2, 0)
            write_png(out / "figures" / f"{frame.name}.png", side_by_side(image, vmap, labels))
    results = [evaluate(frames, pred_dir, workers=o.workers,
                        name=f"DCME {model} ({'GoogLeNet' if classifier else 'oracle'} classes), "
                             f"DT={th[0]:g} VT={th[1]} ET={th[2]:g}, {o.method}")]
    notes = [f"Model {model}, weights {weights}; {len(frames)} frames of {split} at {size[0]}x{size[1]}, "
             f"masks upsampled ({o.upsample}) to the ground truth's resolution.",
             "Confidence = GoogLeNet probability x decoding score." if classifier else
             "Classes: majority ground-truth class under each decoded instance (no classifier).",
             f"At most the {o.max_instances} best-scored decoded instances of a frame are kept."]
    if spent["frames"]:
        n = spent["frames"]
        rest = spent["total"] - spent["decode"] - spent["classify"]
        notes.append(f"Time per frame in this run ({n} frames exported): decode {1e3 * spent['decode'] / n:.0f} ms, "
                     f"classify {1e3 * spent['classify'] / n:.0f} ms, export {1e3 * rest / n:.0f} ms.")
    if o.oracle:
        results += run_oracle(frames, out / "oracle", OracleOptions(size=tuple(size), thresholds=th,
                                                                    upsample=o.upsample, figures=0),
                              workers=o.workers, force=o.force)
        notes.append("Oracle rows decode the ground-truth vector maps instead of network output (tools/oracle.py).")
    write_report(results, out, title=f"DCME {model} on {split}", notes=notes)
    return results
