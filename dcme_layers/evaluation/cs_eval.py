"""Scoring a prediction folder with cityscapesscripts' instance evaluator (its own matching and AP code, called
step by step in ``cs_match``), with AP100m/AP50m from disparity and camera files (``distances``) and a bootstrap
interval of AP and AP50% (``bootstrap``).

Without disparity/camera files AP100m and AP50m are None (N/A), never a number.
"""
import multiprocessing
import os
from pathlib import Path

import numpy as np

from dcme_layers.data import cityscapes
from dcme_layers.data.cityscapes import INSTANCE_LABELS
from dcme_layers.evaluation.bootstrap import bootstrap_interval
from dcme_layers.evaluation.cs_match import (
    evaluate_matches,
    evaluator,
    evaluator_args,
    instances_dict,
    match_frame,
    quiet_warnings,
)
from dcme_layers.evaluation.distances import side_files
from dcme_layers.evaluation.export import PRED_SUFFIX, prediction_file
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import png_size

__all__ = ["METRICS", "CLASS_NAMES", "evaluate"]

#: The four metrics of the paper's tables, in order.
METRICS = ("AP", "AP50%", "AP100m", "AP50m")
#: The 8 evaluated classes by name, in trainId order (person ... bicycle).
CLASS_NAMES = tuple(l.name for l in INSTANCE_LABELS)


def _num(x):
    x = float(x)
    return None if not np.isfinite(x) else x


def _checked_predictions(frames, pred_dir):
    """The frames' prediction files, after checking that each frame has one and its ground truth, and that every
    prediction file has a frame."""
    names = {f.name for f in frames}
    orphans = sorted(p for p in pred_dir.glob(f"*{PRED_SUFFIX}") if p.name[:-len(PRED_SUFFIX)] not in names)
    if orphans:
        raise EvaluationError(f"{orphans[0]}: prediction has no ground truth among the {len(frames)} frames "
                              f"evaluated")
    preds = [prediction_file(pred_dir, f.name) for f in frames]
    for p, f in zip(preds, frames):
        if not p.is_file():
            raise EvaluationError(f"{p}: missing prediction file for frame {f.name}")
        if not os.path.isfile(f.instance_ids):
            raise EvaluationError(f"{f.instance_ids}: missing ground truth for prediction {p}")
        cityscapes.read_ground_truth(f, png_size(f.image))  # one line for bad ground truth, not the evaluator's
    return preds


def _with_distance(frames, distance):
    """Whether to score AP100m/AP50m: ``distance`` (True, False or "auto": when every frame has its files)."""
    sides = [side_files(f.instance_ids) for f in frames]
    have = all(a.is_file() and b.is_file() for a, b in sides)
    if distance == "auto":
        return have
    if distance and not have:
        missing = next(str(x) for s in sides for x in s if not x.is_file())
        raise EvaluationError(f"{missing}: missing, needed for AP100m/AP50m")
    return distance


def evaluate(frames, pred_dir, name="", distance="auto", workers=1, bootstrap=0):
    """Score the predictions in ``pred_dir`` (``<frame>_pred.txt`` + masks) against the frames' gtFine.

    frames: cityscapes.Frame list (the ground truth); every frame needs its prediction .txt, and every .txt in
    pred_dir needs a frame (else EvaluationError naming the file). distance: True, False or "auto" (AP100m and
    AP50m when every frame has disparity and camera files, else None). workers: processes for the per-image
    matching (identical AP). bootstrap: resamples of the frames for a ``bootstrap.LEVEL`` interval of AP and AP50%
    (``bootstrap_interval``), 0 for none. Returns a JSON-ready dict: name, frames, distance_available, AP, AP50%,
    AP100m, AP50m (fractions in [0, 1]; None = not available), classes {class name: same four metrics} and, with
    ``bootstrap``, interval {"AP": [lo, hi], "AP50%": [lo, hi], "level", "resamples"}.
    """
    frames = list(frames)
    if not frames:
        raise EvaluationError(f"{pred_dir}: no frames to evaluate")
    pred_dir = Path(pred_dir)
    preds = _checked_predictions(frames, pred_dir)
    distance = _with_distance(frames, distance)
    args = evaluator_args(pred_dir, distance)
    jobs = [(str(p), str(f.instance_ids), instances_dict(f.instance_ids, distance), args)
            for p, f in zip(preds, frames)]
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            matches = dict(pool.starmap(match_frame, jobs))
    else:
        matches = dict(match_frame(*job) for job in jobs)
    ap = evaluate_matches(matches, args)
    with np.errstate(all="ignore"), quiet_warnings():
        avg = evaluator().computeAverages(ap, args)
    res = {"name": name, "frames": len(frames), "distance_available": bool(distance),
           "AP": _num(avg["allAp"]), "AP50%": _num(avg["allAp50%"]),
           "AP100m": _num(avg["allAp100m"]) if distance else None,
           "AP50m": _num(avg["allAp50m"]) if distance else None, "classes": {}}
    for label in CLASS_NAMES:
        c = avg["classes"][label]
        res["classes"][label] = {"AP": _num(c["ap"]), "AP50%": _num(c["ap50%"]),
                                 "AP100m": _num(c["ap100m"]) if distance else None,
                                 "AP50m": _num(c["ap50m"]) if distance else None}
    if bootstrap:
        res["interval"] = bootstrap_interval(matches, args, bootstrap, workers=workers)
    return res
