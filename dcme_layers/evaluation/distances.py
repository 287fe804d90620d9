"""Distances of ground-truth instances for AP100m and AP50m, from a frame's disparity and camera files.

cityscapesscripts' public evaluator gives every ground-truth instance ``medDist = -1, distConf = 0``; here they come
from ``disparity/`` and ``camera/``: depth = baseline * fx / d, d = (p - 1) / 256 for p > 0 (p = 0 invalid);
medDist = median depth of the instance's valid pixels, distConf = share of valid pixels.
"""
import json
import os
from pathlib import Path

import cv2
import numpy as np

from dcme_layers.data import cityscapes
from dcme_layers.util.errors import EvaluationError

__all__ = ["side_files", "instance_distances"]


def side_files(gt_path):
    """(disparity PNG, camera JSON) paths of a gtFine instanceIds file (root/gtFine/split/city/name_...); outside
    the Cityscapes layout, paths that do not exist."""
    p = Path(os.path.abspath(gt_path))
    name = p.name[:-len(cityscapes.INSTANCE_SUFFIX)]
    if len(p.parents) < 4:
        return p.with_suffix(".no-disparity"), p.with_suffix(".no-camera")
    root, split, city = p.parents[3], p.parents[1].name, p.parent.name
    return (root / "disparity" / split / city / f"{name}_disparity.png",
            root / "camera" / split / city / f"{name}_camera.json")


def instance_distances(instance_ids, disparity_path, camera_path):
    """{raw instance id: (medDist, distConf)} for every id in an instanceIds map, from the frame's disparity PNG
    (uint16, d = (p - 1) / 256 for p > 0, 0 invalid) and camera JSON (depth = extrinsic.baseline * intrinsic.fx
    / d). medDist = median depth (m) over the instance's valid pixels (inf if none), distConf = valid share."""
    disp = cv2.imread(str(disparity_path), cv2.IMREAD_UNCHANGED)
    if disp is None:
        raise EvaluationError(f"{disparity_path}: missing or unreadable disparity PNG")
    if disp.ndim != 2 or disp.dtype != np.uint16 or disp.shape != np.shape(instance_ids):
        raise EvaluationError(f"{disparity_path}: disparity must be uint16 {np.shape(instance_ids)}, got "
                              f"{disp.dtype} {disp.shape}")
    try:
        cam = json.loads(Path(camera_path).read_text())
        baseline, fx = float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvaluationError(f"{camera_path}: missing or bad camera file ({type(e).__name__})") from None
    d = (disp.astype(np.float64) - 1.0) / 256.0
    valid = (disp > 0) & (d > 0)
    depth = np.where(valid, baseline * fx / np.where(valid, d, 1.0), np.inf)
    ids, inv = np.unique(np.asarray(instance_ids).ravel(), return_inverse=True)
    total = np.bincount(inv, minlength=len(ids))
    good = np.bincount(inv, weights=valid.ravel(), minlength=len(ids))
    # median of the valid depths of each instance: sort by (instance, depth), pick the middle of each run
    order = np.lexsort((depth.ravel(), inv))
    vi = valid.ravel()[order]
    inv_v, dep_v = inv[order][vi], depth.ravel()[order][vi]
    start = np.searchsorted(inv_v, np.arange(len(ids)))
    n = good.astype(np.int64)
    med = np.full(len(ids), np.inf)
    has = n > 0
    lo = dep_v[start[has] + (n[has] - 1) // 2]
    hi = dep_v[start[has] + n[has] // 2]
    med[has] = (lo + hi) / 2
    return {int(i): (float(m), float(g / t)) for i, m, g, t in zip(ids, med, good, total)}
