"""Scoring a prediction folder with cityscapesscripts' instance evaluator (its own matching and AP code), with
AP100m/AP50m from disparity and camera files.

About the evaluator (cityscapesscripts 2.3.0, facts in /work/shared/reference/cityscapes_eval.md):
its module functions are called in the order of its ``evaluateImgLists`` with three documented adaptations:
(1) a per-run ``args`` object, no ``gtInstances.json`` cache and no ``matches.json`` in the working directory;
(2) AP100m/AP50m: the public evaluator gives every ground-truth instance ``medDist = -1, distConf = 0``; here they
are filled from ``disparity/`` and ``camera/`` (depth = baseline * fx / d, d = (p - 1) / 256 for p > 0, p = 0
invalid; medDist = median depth of the instance's valid pixels, distConf = share of valid pixels) and
``distanceAvailable`` is set; without disparity/camera files the two metrics are None (N/A), never a number;
(3) upstream issue #89 (IndexError when a class's only predictions lie on void and no ground truth is matched):
that (distance, class, overlap) cell is scored 0.0, the AP it has by definition (ground truth, no true positive).
numpy stays at 2.2 (requirements.txt), which its ``np.in1d`` needs.
"""
import contextlib
import io
import json
import os
from copy import copy
from pathlib import Path

import cv2
import numpy as np

from dcme_layers.data import cityscapes
from dcme_layers.data.cityscapes import INSTANCE_LABEL_IDS, INSTANCE_LABELS
from dcme_layers.evaluation.export import PRED_SUFFIX, prediction_file
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import png_size

#: The four metrics of the paper's tables, in order.
METRICS = ("AP", "AP50%", "AP100m", "AP50m")
#: The 8 evaluated classes by name, in trainId order (person ... bicycle).
CLASS_NAMES = tuple(l.name for l in INSTANCE_LABELS)
#: Frame resamples of the bootstrap interval of AP and AP50% (``evaluate(bootstrap=...)``), and its level.
BOOTSTRAP = 200
LEVEL = 0.9


# ---------------------------------------------------------------------------------------------------------------
# Evaluation with cityscapesscripts


def _evaluator():
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev
    return ev


@contextlib.contextmanager
def _no_exit(what):
    """cityscapesscripts reports bad input by printing 'ERROR: ...' and calling sys.exit: turn that into an
    EvaluationError naming ``what``."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    except SystemExit:
        msg = " ".join(buf.getvalue().split()) or "cityscapesscripts exited"
        raise EvaluationError(f"{what}: {msg}") from None


def _make_args(pred_dir, distance, region_scale=1.0):
    ev = _evaluator()
    args = ev.CArgs()
    args.__dict__.update(copy(vars(ev.args)))
    args.minRegionSizes = np.asarray(args.minRegionSizes) * region_scale
    args.predictionPath = os.path.abspath(pred_dir)
    args.predictionWalk = None
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    args.csv = False
    args.distanceAvailable = bool(distance)
    ev.setInstanceLabels(args)
    return args


def _side_files(gt_path):
    """disparity and camera paths of a gtFine instanceIds file (root/gtFine/split/city/name_...)."""
    p = Path(os.path.abspath(gt_path))
    name = p.name[:-len(cityscapes.INSTANCE_SUFFIX)]
    if len(p.parents) < 4:                       # not in the Cityscapes layout: no side files
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


def _gt_instances(gt_files, distance):
    from cityscapesscripts.evaluation.instances2dict import instances2dict

    gt = {}
    for path in gt_files:
        with _no_exit(path):
            gt.update(instances2dict([str(path)], False))
        if distance:
            ids = cityscapes.read_instance_ids(path)
            dist = instance_distances(ids, *_side_files(path))
            for insts in gt[os.path.abspath(path)].values():
                for inst in insts:
                    inst["medDist"], inst["distConf"] = dist[inst["instID"]]
    return gt


def _match_one(job):
    """One image of the evaluator's matchGtWithPreds (its own functions), with input checks."""
    pred, gt, gt_insts, args = job
    ev = _evaluator()
    with _no_exit(pred):
        gt_image = ev.readGTImage(gt, args)
        pred_info = ev.readPredInfo(pred, args)
    shape = (gt_image.size[1], gt_image.size[0])
    for mask in pred_info:
        if not os.path.isfile(mask):
            raise EvaluationError(f"{pred}: mask {mask} does not exist")
        got = png_size(mask)
        if got != shape:
            raise EvaluationError(f"{mask}: mask must be a {shape[1]}x{shape[0]} PNG like its ground truth {gt}"
                                  f"{', got not a PNG' if got is None else f', got {got[1]}x{got[0]}'}")
        if pred_info[mask]["labelID"] not in INSTANCE_LABEL_IDS:
            raise EvaluationError(f"{pred}: label id {pred_info[mask]['labelID']} is not an instance class")
        if not np.isfinite(pred_info[mask]["conf"]):
            raise EvaluationError(f"{pred}: non-finite confidence for {mask}")
    cur = ev.filterGtInstances(gt_insts, args)
    with _no_exit(pred), _quiet_warnings():           # its np.in1d is deprecated (not removed) in numpy 2.2
        g, p = ev.assignGt2Preds(cur, gt_image, pred_info, args)
    return os.path.abspath(gt), {"groundTruth": g, "prediction": p}


def _evaluate_matches(matches, args):
    """The evaluator's evaluateMatches; a cell hit by upstream issue #89 (IndexError) is scored 0.0."""
    ev = _evaluator()
    try:
        return ev.evaluateMatches(matches, args)
    except IndexError:
        pass
    n_dist = len(args.distanceThs) if args.distanceAvailable else 1
    ap = np.zeros((n_dist, len(args.instLabels), len(args.overlaps)))
    for d in range(n_dist):
        for li, label in enumerate(args.instLabels):
            for oi, overlap in enumerate(args.overlaps):
                a = copy(args)
                a.instLabels = [label]
                a.overlaps = np.array([overlap])
                if args.distanceAvailable:
                    a.minRegionSizes = args.minRegionSizes[d:d + 1]
                    a.distanceThs = args.distanceThs[d:d + 1]
                    a.distanceConfs = args.distanceConfs[d:d + 1]
                try:
                    ap[d, li, oi] = ev.evaluateMatches(matches, a)[0, 0, 0]
                except IndexError:
                    ap[d, li, oi] = 0.0
    return ap


def evaluator_args(pred_dir, region_scale=1.0):
    """The evaluator's args for scoring the predictions under ``pred_dir`` without distances (AP and AP50%).

    Arguments:
        pred_dir: folder every predicted mask lies in (the evaluator refuses masks outside it).
        region_scale: factor on the evaluator's least ground-truth region size (100 pixels at 1024x2048), for
            ground truth subsampled to another size: its area ratio (1 at full resolution).
    Returns:
        The evaluator's ``CArgs``.
    """
    return _make_args(pred_dir, False, region_scale)


def ground_truth_instances(gt_file):
    """The evaluator's instances dict of one instanceIds PNG (its ``instances2dict``), without distances.

    Returns:
        {class name: [{"instID", "labelID", "pixelCount", "medDist", "distConf"}]}.
    """
    return _gt_instances([gt_file], False)[os.path.abspath(gt_file)]


def match_frame(pred_txt, gt_file, gt_instances, args):
    """One frame's matches by the evaluator's ``assignGt2Preds``, with the input checks of ``evaluate``.

    Arguments:
        pred_txt: the frame's ``<frame>_pred.txt`` (masks of the ground truth's size).
        gt_file: its instanceIds PNG; gt_instances: ``ground_truth_instances(gt_file)``.
    Returns:
        (absolute gt path, {"groundTruth", "prediction"}), an item of the matches ``average_precision`` takes.
    """
    return _match_one((str(pred_txt), str(gt_file), gt_instances, args))


def average_precision(matches, args):
    """AP and AP50% (fractions) of per-frame matches by the evaluator's ``evaluateMatches`` and
    ``computeAverages`` (NaN when no frame has ground truth of any class)."""
    with np.errstate(all="ignore"), _quiet_warnings():
        avg = _evaluator().computeAverages(_evaluate_matches(matches, args), args)
    return float(avg["allAp"]), float(avg["allAp50%"])


def _resample_ap(picks):
    """AP and AP50% of each resample of the frames (lists of frame indices), from the matches in _RESAMPLED."""
    keys, matches, args = _RESAMPLED["keys"], _RESAMPLED["matches"], _RESAMPLED["args"]
    out = []
    for pick in picks:
        sample = {f"{keys[i]}#{j}": matches[keys[i]] for j, i in enumerate(pick)}  # a frame drawn twice counts twice
        with np.errstate(all="ignore"), _quiet_warnings():
            avg = _evaluator().computeAverages(_evaluate_matches(sample, args), args)
        out.append((avg["allAp"], avg["allAp50%"]))
    return out


_RESAMPLED = {}  # what _resample_ap reads: set before the (forked) workers start


def bootstrap_interval(matches, args, resamples=BOOTSTRAP, level=LEVEL, seed=0, workers=1):
    """Percentile bootstrap over frames: the frames are drawn with replacement ``resamples`` times, each draw is
    scored by the evaluator's own ``evaluateMatches`` on the per-frame matches (no new matching), and the interval
    is the central ``level`` of the draws' AP and AP50% (the unlimited-distance metrics).

    Arguments:
        matches: {gt path: {"groundTruth", "prediction"}} from the evaluator's ``assignGt2Preds``, one per frame.
        args: the evaluator's args of the run.
    Returns:
        {"AP": [lo, hi], "AP50%": [lo, hi], "level": level, "resamples": resamples}, fractions.
    """
    a = copy(args)
    a.distanceAvailable = False        # only the first (infinite) distance: what AP and AP50% are computed on
    keys = sorted(matches)
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(keys), len(keys)) for _ in range(resamples)]
    _RESAMPLED.update(keys=keys, matches=matches, args=a)
    try:
        if workers > 1:
            import multiprocessing
            chunks = [picks[i::workers] for i in range(workers)]
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                draws = [d for part in pool.map(_resample_ap, chunks) for d in part]
        else:
            draws = _resample_ap(picks)
    finally:
        _RESAMPLED.clear()
    tail = 50 * (1 - level)
    lo, hi = np.nanpercentile(np.array(draws, np.float64), [tail, 100 - tail], axis=0)
    return {"AP": [float(lo[0]), float(hi[0])], "AP50%": [float(lo[1]), float(hi[1])], "level": level,
            "resamples": resamples}


def _num(x):
    x = float(x)
    return None if not np.isfinite(x) else x


def evaluate(frames, pred_dir, name="", distance="auto", workers=1, bootstrap=0):
    """Score the predictions in ``pred_dir`` (``<frame>_pred.txt`` + masks) against the frames' gtFine.

    frames: cityscapes.Frame list (the ground truth); every frame needs its prediction .txt, and every .txt in
    pred_dir needs a frame (else EvaluationError naming the file). distance: True, False or "auto" (AP100m and
    AP50m when every frame has disparity and camera files, else None). workers: processes for the per-image
    matching (identical AP). bootstrap: resamples of the frames for a LEVEL interval of AP and AP50%
    (``bootstrap_interval``), 0 for none. Returns a JSON-ready dict: name, frames, distance_available, AP, AP50%,
    AP100m, AP50m (fractions in [0, 1]; None = not available), classes {class name: same four metrics} and, with
    ``bootstrap``, interval {"AP": [lo, hi], "AP50%": [lo, hi], "level", "resamples"}.
    """
    frames = list(frames)
    if not frames:
        raise EvaluationError(f"{pred_dir}: no frames to evaluate")
    pred_dir = Path(pred_dir)
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
    sides = [_side_files(f.instance_ids) for f in frames]
    have = all(a.is_file() and b.is_file() for a, b in sides)
    if distance == "auto":
        distance = have
    elif distance and not have:
        missing = next(str(x) for s in sides for x in s if not x.is_file())
        raise EvaluationError(f"{missing}: missing, needed for AP100m/AP50m")
    args = _make_args(pred_dir, distance)
    gt = _gt_instances([f.instance_ids for f in frames], distance)
    jobs = [(str(p), str(f.instance_ids), gt[os.path.abspath(f.instance_ids)], args) for p, f in zip(preds, frames)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            matches = dict(pool.map(_match_one, jobs))
    else:
        matches = dict(map(_match_one, jobs))
    ap = _evaluate_matches(matches, args)
    with np.errstate(all="ignore"), _quiet_warnings():
        avg = _evaluator().computeAverages(ap, args)
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


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


