"""The paper's test pipeline for one trained model and split (Caffe): infer -> decode -> classify -> export -> score.

1. ``inference.infer_split``: the deploy net's 2-D vector maps for every encoded frame, saved to HDF5 (resumable).
2. ``decoding.decode``: the four decoding steps with the model's (DT, VT, ET) at the encoded resolution.
3. ``classify.Classifier``: GoogLeNet gives each decoded instance one of the 8 classes (``classes="oracle"`` takes
   the majority ground-truth class instead, to separate segmentation from classification errors).
4. ``evaluation.export_split`` / ``evaluate``: masks upsampled to the ground truth's resolution, scored by
   cityscapesscripts' evaluator (AP, AP50%, AP100m, AP50m), written as report.md / report.json, with the oracle
   rows (decoded ground truth) beside it when asked.

Confidence of an instance = classifier probability x decoding score (``Decoded.scores``), so that the evaluator's
precision-recall ranking sees both how sure the class is and how consistent the votes were.
"""
from pathlib import Path

import h5py
import numpy as np

from dcme_layers import cityscapes
from dcme_layers.decoding import PAPER_THRESHOLDS, decode, parse_thresholds
from dcme_layers.evaluation import (EvaluationError, evaluate, export_split, keep_instances, majority_label_ids,
                                    run_oracle, write_report)
from dcme_layers.inference import check_blobs, infer_split, read_blob, read_frames
from dcme_layers.lmdb_io import read_datum_lmdb


def frames_of(root, split, names, where):
    """The cityscapes Frames (ground truth) of the encoded frame names, in that order."""
    by_name = {f.name: f for f in cityscapes.list_frames(root, split)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise EvaluationError(f"{where}: frame {missing[0]} has no ground truth under {root} ({split})")
    return [by_name[n] for n in names]


def evaluate_model(model, split, root, encoded, out, weights, classifier=None, thresholds=None, method="vote",
                   upsample="nearest", oracle=False, figures=3, workers=1, max_instances=100, force=False):
    """Run the whole test pipeline; returns the list of evaluate() results (model first, oracle rows after).

    classifier: a ``classify.Classifier`` or None for oracle classes. thresholds: (DT, VT, ET), "segnet" or
    "fcn8s" (default: the model's paper values). max_instances: per frame, the best-scored decoded instances
    kept (like COCO's 100 detections). force: redo the inference and the export even if up to date.
    """
    from dcme_layers.visualize import side_by_side, write_png

    out, split_dir = Path(out), Path(encoded) / split
    dt, vt, et = parse_thresholds(thresholds or PAPER_THRESHOLDS[model])
    names = read_frames(split_dir)
    frames = frames_of(root, split, names, split_dir / "frames.txt")
    blobs = infer_split(f"prototxt/{model}_deploy.prototxt", weights, split_dir, out / "pred_vectors.h5", model,
                        force=force)
    images = read_datum_lmdb(split_dir / "images")
    index = {n: i for i, n in enumerate(names)}
    cfg = f"dt{dt:g}-vt{vt}-et{et:g}-{method}-{'googlenet' if classifier else 'oracle-classes'}"
    pred_dir = out / f"pred-{cfg}"
    settings = dict(weights=str(Path(weights).resolve()),
                    classifier=str(Path(classifier.weights).resolve()) if classifier else None,
                    max_instances=max_instances)
    inputs = [blobs, split_dir / "images" / "data.mdb"] + ([classifier.weights] if classifier else [])

    shape, _ = check_blobs(blobs, names)
    size = shape[2:]
    with h5py.File(blobs, "r") as h5:

        def predict(frame):
            i = index[frame.name]
            key, image = next(images)  # the LMDB is in frames.txt order, and so is export_split
            while not key.endswith(frame.name):
                key, image = next(images)
            dec = decode(read_blob(h5, i, blobs), dt, vt, et, method=method)
            labels, scores = dec.labels, dec.scores
            if len(scores) > max_instances:  # keep the best-scored ones (a poorly trained net yields hundreds)
                keep = np.zeros(len(scores), bool)
                keep[np.argsort(-scores, kind="stable")[:max_instances]] = True
                labels, scores = keep_instances(labels, keep), scores[keep]
            gt_ids = cityscapes.read_ground_truth(frame)
            if classifier is not None:
                label_ids, conf = classifier.classify(np.ascontiguousarray(image.transpose(1, 2, 0)), labels)
                return labels, label_ids, conf * scores, gt_ids.shape
            gt = cityscapes.instance_map(cityscapes.subsample_ids(gt_ids, size))
            label_ids = majority_label_ids(labels, gt)
            keep = label_ids > 0
            return keep_instances(labels, keep), label_ids[keep], scores[keep], gt_ids.shape

        export_split(frames, pred_dir, predict, upsample, desc=f"decode+export {model}", settings=settings,
                     inputs=inputs, force=force)
        images.close()  # lmdb allows one open environment per path and process
        for (key, image), frame in zip(read_datum_lmdb(split_dir / "images"), frames[:figures]):
            vmap = read_blob(h5, index[frame.name], blobs)
            labels = decode(vmap, dt, vt, et, method=method).labels
            write_png(out / "figures" / f"{frame.name}.png", side_by_side(image.transpose(1, 2, 0), vmap, labels))
    results = [evaluate(frames, pred_dir, workers=workers,
                        name=f"DCME {model} ({'GoogLeNet' if classifier else 'oracle'} classes), "
                             f"DT={dt:g} VT={vt} ET={et:g}, {method}")]
    notes = [f"Model {model}, weights {weights}; {len(frames)} frames of {split} at {size[0]}x{size[1]}, "
             f"masks upsampled ({upsample}) to the ground truth's resolution.",
             "Confidence = GoogLeNet probability x decoding score." if classifier else
             "Classes: majority ground-truth class under each decoded instance (no classifier)."]
    notes.append(f"At most the {max_instances} best-scored decoded instances of a frame are kept.")
    if oracle:
        results += run_oracle(frames, out / "oracle", size=size, thresholds=(dt, vt, et), upsample=upsample,
                              figures=0, workers=workers, progress=True, force=force)
        notes.append("Oracle rows decode the ground-truth vector maps instead of network output (tools/oracle.py).")
    write_report(results, out, title=f"DCME {model} on {split}", notes=notes)
    return results
