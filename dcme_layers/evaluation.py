"""Cityscapes instance-level evaluation of decoded DCME instances (numpy + OpenCV + cityscapesscripts).

Pipeline pieces, each usable alone:

- ``export_frame``: one frame's instances (labels at the encoded resolution, a Cityscapes label id and a
  confidence per instance) in the Cityscapes results format: ``<pred_dir>/<frame>_pred.txt`` with lines
  ``masks/<frame>_<k>.png <label id> <confidence>`` and one mask PNG per instance at the ground truth's full
  resolution (upsampled nearest, or bilinear per mask and thresholded at 0.5).
- ``export_split``: the same for a list of frames with a prediction function; resumable, progress bar.
- ``evaluate``: scores a prediction folder against the gtFine instanceIds of the frames with the functions of
  cityscapesscripts' ``evalInstanceLevelSemanticLabeling`` (the official matching and AP code), see below.
- ``write_report``: ``report.md`` (the layout of the paper's Tables 1-3) and ``report.json``.
- ``oracle_predictions`` / ``subsampled_gt_predictions``: the paper's "ground truth at 340x680" ceilings, decoding
  the ground-truth vector maps (CM or bbox anchors, vote or watershed decoding) instead of network output;
  ``majority_label_ids`` + ``keep_instances`` give decoded instances their ground-truth classes.
- ``run_oracle``: all of those for a split in one report (tools/oracle.py).

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
from collections import namedtuple
from copy import copy
from pathlib import Path

import cv2
import numpy as np

from dcme_layers import cityscapes, resumable
from dcme_layers.cityscapes import INSTANCE_LABEL_IDS, INSTANCE_LABELS, DataError, atomic_write
from dcme_layers.decoding import FG_THRESHOLD, decode, parse_thresholds
from dcme_layers.encoding import vector_map

#: The four metrics of the paper's tables, in order.
METRICS = ("AP", "AP50%", "AP100m", "AP50m")
#: The 8 evaluated classes by name, in trainId order (person ... bicycle).
CLASS_NAMES = tuple(l.name for l in INSTANCE_LABELS)
#: Mask upsampling to the ground truth's resolution: "nearest" (the exact inverse of cityscapes.subsample's
#: sampling), "bilinear" (per mask, > 0.5), "naive" (cv2.resize INTER_NEAREST, about a pixel off; for comparison).
UPSAMPLING = ("nearest", "bilinear", "naive")
PRED_SUFFIX = "_pred.txt"


class EvaluationError(DataError):
    """Bad predictions or ground truth for the evaluation; the message names the file and fits on one line."""


# ---------------------------------------------------------------------------------------------------------------
# Upsampling to the ground truth's resolution


def _source_coords(n_full, n_low):
    """Low-resolution coordinate of each full-resolution pixel centre. cityscapes.subsample (OpenCV
    INTER_NEAREST) takes low pixel x from full pixel floor(x * n_full / n_low), so x sits at full x * scale."""
    return np.arange(n_full) * (n_low / n_full)


def upsample_labels(labels, size):
    """Nearest-neighbour upsampling of a label map to size (H, W), the inverse of cityscapes.subsample's sampling
    (each full-resolution pixel takes the low-resolution pixel sampled nearest to it)."""
    lab = np.asarray(labels)
    h, w = lab.shape
    rows = np.minimum(np.rint(_source_coords(size[0], h)).astype(np.int64), h - 1)
    cols = np.minimum(np.rint(_source_coords(size[1], w)).astype(np.int64), w - 1)
    return lab[rows[:, None], cols[None, :]]


def upsample_labels_naive(labels, size):
    """cv2.resize(INTER_NEAREST) of a label map to size (H, W): full pixel x takes low pixel floor(x * n_low /
    n_full), which is not where cityscapes.subsample sampled it from (low pixel x came from full pixel
    floor(x * n_full / n_low)): the masks come out shifted by up to a pixel of the low resolution. Kept to measure
    what the exact inverse (``upsample_labels``) is worth (tools/oracle.py --upsample naive)."""
    lab = np.ascontiguousarray(labels, dtype=np.int32)
    return cv2.resize(lab, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)


def _bilinear_mask(mask, size):
    """Bilinear upsampling of one binary mask to size (H, W) (same sampling convention), thresholded at 0.5.
    Returns (full mask crop, row slice, column slice): only the window the mask can reach is computed."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    sy, sx = size[0] / h, size[1] / w
    r0, r1 = max(int(np.ceil((ys.min() - 1) * sy)), 0), min(int(np.floor((ys.max() + 1) * sy)) + 1, size[0])
    c0, c1 = max(int(np.ceil((xs.min() - 1) * sx)), 0), min(int(np.floor((xs.max() + 1) * sx)) + 1, size[1])

    def weights(lo, hi, scale, n):
        s = np.clip(np.arange(lo, hi) / scale, 0, n - 1)
        i0 = np.minimum(np.floor(s).astype(np.int64), n - 2) if n > 1 else np.zeros(len(s), np.int64)
        f = (s - i0) if n > 1 else np.zeros(len(s))
        return i0, np.minimum(i0 + 1, n - 1), f

    y0, y1, fy = weights(r0, r1, sy, h)
    x0, x1, fx = weights(c0, c1, sx, w)
    m = mask.astype(np.float32)
    cols = m[:, x0] * (1 - fx) + m[:, x1] * fx                 # (h, window width)
    full = cols[y0] * (1 - fy)[:, None] + cols[y1] * fy[:, None]
    return full > 0.5, slice(r0, r1), slice(c0, c1)


# ---------------------------------------------------------------------------------------------------------------
# Export in the Cityscapes results format


def _write_mask(path, mask):
    def w(tmp):
        ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise EvaluationError(f"{path}: cannot encode mask PNG")
        tmp.write_bytes(buf.tobytes())
    atomic_write(path, w)


def prediction_file(pred_dir, name):
    """Path of a frame's prediction .txt in a prediction folder."""
    return Path(pred_dir) / f"{name}{PRED_SUFFIX}"


def export_frame(pred_dir, name, labels, label_ids, scores, size, upsample="nearest"):
    """Write one frame's instances in the Cityscapes results format; returns the .txt path.

    labels: (h, w) int instance labels at any resolution (0 = background, 1..K); label_ids: (K,) regular
    Cityscapes label ids of the 8 instance classes (car = 26, not the trainId); scores: (K,) finite confidences;
    size: (H, W) of the ground truth (1024x2048 for Cityscapes); upsample: "nearest" (label map), "bilinear"
    (each mask bilinearly, > 0.5) or "naive" (cv2.resize INTER_NEAREST, see ``upsample_labels_naive``). An instance that vanishes at full resolution is left out; a frame without
    instances gets an empty .txt (valid). Masks are written first and the .txt last, each atomically, so a .txt
    on disk is always complete (``export_split`` resumes from it).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer) or (lab.size and lab.min() < 0):
        raise EvaluationError(f"{name}: labels must be a 2-D non-negative integer map, got {lab.dtype} {lab.shape}")
    k = int(lab.max(initial=0))
    label_ids = np.asarray(label_ids).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(label_ids) != k or len(scores) != k:
        raise EvaluationError(f"{name}: {k} instances but {len(label_ids)} label ids and {len(scores)} scores")
    bad = [int(i) for i in label_ids if int(i) not in INSTANCE_LABEL_IDS]
    if bad:
        raise EvaluationError(f"{name}: label id {bad[0]} is not one of the instance classes {INSTANCE_LABEL_IDS}")
    if not np.isfinite(scores).all():
        raise EvaluationError(f"{name}: non-finite confidence (NaN/inf)")
    if upsample not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLING}")
    size = (int(size[0]), int(size[1]))
    pred_dir = Path(pred_dir)
    (pred_dir / "masks").mkdir(parents=True, exist_ok=True)
    full = None
    if lab.shape != size and upsample != "bilinear":
        full = (upsample_labels if upsample == "nearest" else upsample_labels_naive)(lab, size)
    if lab.shape == size:
        full = lab
    lines = []
    for i in range(1, k + 1):
        if full is not None:
            mask = full == i
        else:
            crop, rs, cs = _bilinear_mask(lab == i, size) if np.any(lab == i) else (None, None, None)
            mask = np.zeros(size, bool)
            if crop is not None:
                mask[rs, cs] = crop
        if not mask.any():
            continue
        rel = f"masks/{name}_{i:03d}.png"
        _write_mask(pred_dir / rel, mask.astype(np.uint8) * 255)
        lines.append(f"{rel} {int(label_ids[i - 1])} {scores[i - 1]:.6g}")
    txt = prediction_file(pred_dir, name)
    atomic_write(txt, lambda tmp: tmp.write_text("\n".join(lines)))
    return txt


def ground_truth_instances(instance_ids):
    """Labels 1..K of the instances of the 8 classes in a raw instanceIds map (in id order) and their label ids."""
    inst = cityscapes.instance_map(instance_ids)
    ids, labels = np.unique(inst, return_inverse=True)
    labels = labels.reshape(inst.shape).astype(np.int32)
    if ids[0] != 0:                            # no background pixel at all
        labels += 1
        ids = np.concatenate([[0], ids])
    return labels, (ids[1:] // 1000).astype(np.int64)


def full_resolution_gt(frame):
    """A frame's own ground truth as a prediction (every instance of the 8 classes at full resolution,
    confidence 1): (labels, label ids, scores, size), the form ``export_split`` takes."""
    ids = cityscapes.read_ground_truth(frame, _png_size(frame.image))
    labels, label_ids = ground_truth_instances(ids)
    return labels, label_ids, np.ones(len(label_ids)), ids.shape


def export_ground_truth(pred_dir, frame):
    """Export a frame's own ground truth: the sanity check that must score AP = 1.0."""
    labels, label_ids, scores, size = full_resolution_gt(frame)
    return export_frame(pred_dir, frame.name, labels, label_ids, scores, size)


def export_split(frames, pred_dir, predict, upsample="nearest", progress=True, desc="export", settings=None,
                 inputs=(), force=False, log=print):
    """Export every frame of a split: ``predict(frame) -> (labels, label_ids, scores, full size (H, W))``.

    A resumable.Job on ``pred_dir``: ``settings`` (JSON-ready, plus ``upsample`` and the frame names) and the files
    ``inputs`` (besides each frame's ground truth) say what the predictions are made from. Unchanged: skipped;
    changed inputs: redone; other settings: DataError unless ``force``; a killed run resumes from the frames
    whose .txt and masks are intact. Returns the list of .txt paths in frame order.
    """
    from tqdm import tqdm

    frames = list(frames)
    settings = dict(settings or {}, upsample=upsample, frames=[f.name for f in frames])
    inputs = dict({f.name: [f.instance_ids, f.label_ids] for f in frames}, **{"": list(inputs)})
    with resumable.Job(pred_dir, settings, inputs, force, what="prediction folder", log=log) as job:
        if not job.up_to_date():
            done = job.start()
            intact = {k: v for k, v in done.items() if _intact(job.partial, k, v)}
            if len(intact) < len(done):
                log(f"{job.partial}: {len(done) - len(intact)} exported frames damaged, exporting them again")
                job.keep(intact)
            for f in tqdm(frames, desc=desc, unit="frame", disable=not progress):
                if f.name in intact:
                    continue
                labels, label_ids, scores, size = predict(f)
                with job.writing(job.partial):
                    txt = export_frame(job.partial, f.name, labels, label_ids, scores, size, upsample)
                job.done((f.name, _digest(txt)))
            job.finish()
    return [prediction_file(pred_dir, f.name) for f in frames]


def _digest(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _intact(pred_dir, name, digest):
    """Whether a frame's exported .txt still has its recorded digest and every mask it names is a PNG."""
    txt = prediction_file(pred_dir, name)
    if not txt.is_file() or _digest(txt) != digest:
        return False
    masks = [Path(pred_dir) / line.split(" ")[0] for line in txt.read_text().splitlines() if line]
    return all(m.is_file() and _png_size(m) for m in masks)


# ---------------------------------------------------------------------------------------------------------------
# Oracle predictions (decoded ground truth)

Oracle = namedtuple("Oracle", "labels label_ids scores size image vmap centers")
Oracle.__doc__ = """Oracle instances of one frame at the encoded resolution: labels (h, w) int32 1..K, label_ids
(K,) majority ground-truth class, scores (K,), size (H, W) of the full-resolution ground truth, image (h, w, 3)
BGR, vmap (2, h, w) ground-truth vector map, centers (K, 2) decoded CMs (None for the undecoded baseline)."""


def _load_small(frame, size):
    image = cityscapes.read_image(frame.image)
    ids = cityscapes.read_ground_truth(frame, image.shape)
    small_image, small_ids = cityscapes.subsample(image, ids, size)
    return small_image, cityscapes.instance_map(small_ids), ids.shape


def majority_label_ids(labels, instance_map):
    """Regular label id of each decoded instance 1..K: the most frequent ground-truth class among its pixels that
    belong to a ground-truth instance (ties: the lower label id; 0 where it covers none)."""
    lab = np.asarray(labels).ravel()
    cls = np.asarray(instance_map).ravel() // 1000
    k = int(lab.max(initial=0))
    hit = (lab > 0) & (cls > 0)
    votes = np.zeros((k + 1, 256), np.int64)
    np.add.at(votes, (lab[hit], cls[hit]), 1)
    out = votes.argmax(1)
    out[votes.max(1) == 0] = 0
    return out[1:]


def keep_instances(labels, keep):
    """Label map 1..K renumbered to the kept instances (boolean (K,)), in order; the others become 0."""
    keep = np.asarray(keep, bool)
    relabel = np.zeros(len(keep) + 1, np.int32)
    relabel[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return relabel[labels]




def oracle_predictions(frame, size=cityscapes.SIZE, anchor="cm", method="vote", thresholds="segnet",
                       fg_threshold=FG_THRESHOLD):
    """Decode a frame's ground-truth vector map at ``size`` instead of network output (the paper's oracle).

    The instanceIds are subsampled to size (H, W) like the training data (cityscapes.subsample), encoded with
    ``anchor`` ("cm" or "bbox"), decoded with ``method`` ("vote" or "watershed") and ``thresholds`` ("segnet",
    "fcn8s" or (DT, VT, ET)); each decoded instance gets the majority ground-truth class under it and its
    decoding score. Returns an ``Oracle``.
    """
    image, inst, full = _load_small(frame, size)
    vmap = vector_map(inst, anchor)
    dec = decode(vmap, *parse_thresholds(thresholds), method=method, fg_threshold=fg_threshold)
    label_ids = majority_label_ids(dec.labels, inst)
    keep = label_ids > 0
    return Oracle(keep_instances(dec.labels, keep), label_ids[keep], dec.scores[keep], full, image, vmap,
                  dec.centers[keep])


def subsampled_gt_predictions(frame, size=cityscapes.SIZE, anchor="cm"):
    """The ground-truth instances subsampled to ``size`` without decoding (the resolution ceiling alone).
    Score = n / (n + 50) for an instance of n pixels (larger first, like decode's vote saturation)."""
    image, inst, full = _load_small(frame, size)
    labels, label_ids = ground_truth_instances(inst)
    n = np.bincount(labels.ravel(), minlength=len(label_ids) + 1)[1:]
    return Oracle(labels, label_ids, n / (n + 50.0), full, image, vector_map(inst, anchor), None)


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


def _make_args(pred_dir, distance):
    ev = _evaluator()
    args = ev.CArgs()
    args.__dict__.update(copy(vars(ev.args)))
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


def _png_size(path):
    """(H, W) from a PNG's header, None if it is not a PNG (reads 24 bytes)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


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
        got = _png_size(mask)
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


def _num(x):
    x = float(x)
    return None if not np.isfinite(x) else x


def evaluate(frames, pred_dir, name="", distance="auto", workers=1):
    """Score the predictions in ``pred_dir`` (``<frame>_pred.txt`` + masks) against the frames' gtFine.

    frames: cityscapes.Frame list (the ground truth); every frame needs its prediction .txt, and every .txt in
    pred_dir needs a frame (else EvaluationError naming the file). distance: True, False or "auto" (AP100m and
    AP50m when every frame has disparity and camera files, else None). workers: processes for the per-image
    matching (identical AP). Returns a JSON-ready dict: name, frames, distance_available, AP, AP50%, AP100m,
    AP50m (fractions in [0, 1]; None = not available) and classes {class name: same four metrics}.
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
        cityscapes.read_ground_truth(f, _png_size(f.image))  # one line for bad ground truth, not the evaluator's
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
    return res


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ---------------------------------------------------------------------------------------------------------------
# Reports


def _pct(x):
    return "N/A" if x is None else f"{100 * x:.1f}"


def format_tables(results):
    """Markdown of a list of evaluate() results: the overall table (rows = configurations, columns = AP, AP50%,
    AP100m, AP50m, like the paper's Tables 1-3) and the per-class AP table, values in percent."""
    head = "| Method | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_pct(r[m]) for m in METRICS) + " |")
    lines += ["", "| Method (AP per class) | " + " | ".join(CLASS_NAMES) + " |",
              "|" + "---|" * (len(CLASS_NAMES) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_pct(r["classes"][c]["AP"]) for c in CLASS_NAMES) + " |")
    return "\n".join(lines)


def write_report(results, out_dir, title="DCME instance segmentation on Cityscapes", notes=()):
    """Write ``report.md`` and ``report.json`` (atomically) for one evaluate() result or a list of them.

    Markdown: title, the overall table and the per-class table (percent; N/A where no disparity/camera data or
    no ground truth of a class), then ``notes`` lines. JSON: {"title", "results": [...], "notes"} with fractions.
    Returns (markdown path, json path).
    """
    if isinstance(results, dict):
        results = [results]
    results = list(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", format_tables(results), ""]
    frames = sorted({r["frames"] for r in results})
    md.append(f"Frames evaluated: {', '.join(map(str, frames))}. Metrics from cityscapesscripts' instance "
              f"evaluator, in percent. AP100m/AP50m: N/A where the split has no disparity/camera files.")
    md += [""] + [f"- {n}" for n in notes]
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    atomic_write(md_path, lambda t: t.write_text("\n".join(md).rstrip() + "\n"))
    doc = {"title": title, "results": results, "notes": list(notes)}
    atomic_write(json_path, lambda t: t.write_text(json.dumps(doc, indent=2) + "\n"))
    return md_path, json_path


# ---------------------------------------------------------------------------------------------------------------
# The oracle / ablation table (tools/oracle.py)


def oracle_config_name(anchor, method, thresholds, size, upsample):
    """Folder-safe name of one oracle configuration, e.g. cm-vote-dt10-vt50-et15-340x680-nearest."""
    dt, vt, et = parse_thresholds(thresholds)
    return f"{anchor}-{method}-dt{dt:g}-vt{vt}-et{et:g}-{size[0]}x{size[1]}-{upsample}"


def run_oracle(frames, out, size=cityscapes.SIZE, anchors=("cm", "bbox"), methods=("vote", "watershed"),
               thresholds="segnet", upsample="nearest", full_res=True, gt_subsampled=True, figures=3, workers=1,
               progress=True, title=None, force=False):
    """The paper's ground-truth ceilings on one split, one report: the full-resolution ground truth (AP = 1 by
    construction), the ground truth subsampled to ``size`` without decoding, and the decoded ground-truth vector
    maps for every anchor x method (CM or bbox centroid; vote or watershed decoding).

    Writes predictions under ``out/<config>/`` (export_split: resumable, redone when the ground truth changed,
    ``force`` redoes them), figures (input | magnitude | instances) for the first ``figures`` frames under
    ``out/figures/``, and ``out/report.md`` + ``out/report.json``.
    Returns the list of evaluate() results.
    """
    from dcme_layers.visualize import side_by_side, write_png

    out = Path(out)
    frames = list(frames)
    dt, vt, et = parse_thresholds(thresholds)
    h, w = int(size[0]), int(size[1])
    results = []
    if full_res:
        pred = out / "gt-full-res"
        export_split(frames, pred, full_resolution_gt, progress=progress, desc="gt full res", force=force)
        results.append(evaluate(frames, pred, name="GT, full resolution", workers=workers))
    if gt_subsampled:
        pred = out / f"gt-{h}x{w}-{upsample}"
        export_split(frames, pred, lambda f: _as_pred(subsampled_gt_predictions(f, size)), upsample, progress,
                     desc=f"gt {h}x{w}", settings={"size": [h, w]}, force=force)
        results.append(evaluate(frames, pred, name=f"GT at {h}x{w}, no decoding ({upsample})", workers=workers))
    for anchor in anchors:
        for method in methods:
            cfg = oracle_config_name(anchor, method, (dt, vt, et), size, upsample)

            def predict(f, anchor=anchor, method=method):
                return _as_pred(oracle_predictions(f, size, anchor, method, (dt, vt, et)))

            export_split(frames, out / cfg, predict, upsample, progress, desc=cfg, force=force,
                         settings={"anchor": anchor, "method": method, "thresholds": [dt, vt, et], "size": [h, w]})
            results.append(evaluate(frames, out / cfg, workers=workers,
                                    name=f"GT at {h}x{w}, {anchor.upper()} anchor, {method} decoding"))
            for f in frames[:figures]:
                o = oracle_predictions(f, size, anchor, method, (dt, vt, et))  # drawn anew: never a stale figure
                write_png(out / "figures" / f"{f.name}_{cfg}.png", side_by_side(o.image, o.vmap, o.labels, o.centers))
    notes = [f"Oracle: decoding the ground-truth vector maps at {h}x{w} (thresholds DT={dt:g}, VT={vt}, ET={et:g}) "
             f"instead of network output; each decoded instance takes the majority ground-truth class under it "
             f"and its decoding score; masks upsampled to full resolution ({upsample}).",
             "The paper reports 39.8% AP for the ground truth at 340x680 on the full Cityscapes val set."]
    write_report(results, out, title=title or f"DCME oracle on {len(frames)} frames", notes=notes)
    return results


def _as_pred(o):
    return o.labels, o.label_ids, o.scores, o.size
