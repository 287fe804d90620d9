"""Predictions in the Cityscapes results format: masks upsampled to the ground truth's resolution, one frame
(``export_frame``) or a split (``export_split``, resumable through dcme_layers.util.resumable).

A frame's predictions are ``<pred_dir>/<frame>_pred.txt`` with lines ``masks/<frame>_<k>.png <label id>
<confidence>`` and one mask PNG per instance at the ground truth's full resolution: upsampled as the exact inverse
of the 3x nearest sampling ("nearest"), bilinearly per mask and thresholded at 0.5 ("bilinear"), or with a plain
``cv2.resize`` ("naive", about a pixel off; for comparison).
"""
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from dcme_layers.data import cityscapes
from dcme_layers.data.cityscapes import INSTANCE_LABEL_IDS
from dcme_layers.util import resumable
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import atomic_write, png_size
from dcme_layers.util.records import digest
from dcme_layers.util.store import Store

__all__ = ["UPSAMPLING", "PRED_SUFFIX", "upsample_labels", "upsample_labels_naive", "bilinear_mask",
           "prediction_file", "export_frame", "full_resolution_masks", "write_mask", "ground_truth_instances",
           "full_resolution_gt", "export_ground_truth", "export_split"]

#: Mask upsamplings to the ground truth's resolution (see the module docstring and ``full_resolution_masks``).
UPSAMPLING = ("nearest", "bilinear", "naive")
PRED_SUFFIX = "_pred.txt"


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


def bilinear_mask(mask, size):
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


def prediction_file(pred_dir, name):
    """Path of a frame's prediction .txt in a prediction folder."""
    return Path(pred_dir) / f"{name}{PRED_SUFFIX}"


def export_frame(pred_dir, name, labels, label_ids, scores, size, upsample="nearest"):
    """Write one frame's instances in the Cityscapes results format; returns the .txt path.

    labels: (h, w) int instance labels at any resolution (0 = background, 1..K); label_ids: (K,) regular
    Cityscapes label ids of the 8 instance classes (car = 26, not the trainId); scores: (K,) finite confidences;
    size: (H, W) of the ground truth (1024x2048 for Cityscapes); upsample: "nearest" (label map), "bilinear"
    (each mask bilinearly, > 0.5) or "naive" (cv2.resize INTER_NEAREST, see ``upsample_labels_naive``). An
    instance that vanishes at full resolution is left out; a frame without instances gets an empty .txt (valid).
    Masks are written first and the .txt last, each atomically (``export_split`` records the .txt's digest).
    """
    lab, label_ids, scores = _checked_instances(name, labels, label_ids, scores, upsample)
    size = (int(size[0]), int(size[1]))
    pred_dir = Path(pred_dir)
    (pred_dir / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, mask in enumerate(full_resolution_masks(lab, size, upsample), 1):
        if not mask.any():
            continue
        rel = f"masks/{name}_{i:03d}.png"
        write_mask(pred_dir / rel, mask)
        lines.append(f"{rel} {int(label_ids[i - 1])} {scores[i - 1]:.6g}")
    txt = prediction_file(pred_dir, name)
    atomic_write(txt, lambda tmp: tmp.write_text("\n".join(lines)))
    return txt


def _checked_instances(name, labels, label_ids, scores, upsample):
    """(labels, label ids, scores) as arrays, checked: EvaluationError naming the frame otherwise."""
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
        raise EvaluationError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLING}")
    return lab, label_ids, scores


def full_resolution_masks(labels, size, upsample="nearest"):
    """Yield the (H, W) bool mask at ``size`` of each instance 1..K of ``labels`` (h, w), upsampled as
    ``export_frame`` says; a mask may be empty (the instance vanished)."""
    k = int(labels.max(initial=0))
    full = None
    if labels.shape != size and upsample != "bilinear":
        full = (upsample_labels if upsample == "nearest" else upsample_labels_naive)(labels, size)
    if labels.shape == size:
        full = labels
    boxes = ndimage.find_objects(full, max_label=k) if full is not None else None
    for i in range(1, k + 1):
        mask = np.zeros(size, bool)                 # filled in the instance's box only
        if full is not None:
            if boxes[i - 1] is not None:
                mask[boxes[i - 1]] = full[boxes[i - 1]] == i
        else:
            one = labels == i
            if one.any():
                crop, rs, cs = bilinear_mask(one, size)
                mask[rs, cs] = crop
        yield mask


def write_mask(path, mask):
    """A binary (H, W) mask as a 1-bit PNG, atomically: cityscapesscripts reads masks with PIL (``convert("L")``,
    then != 0), and one bit per pixel encodes faster and smaller than OpenCV's 8-bit grey."""
    atomic_write(path, lambda tmp: Image.fromarray(np.asarray(mask, bool)).save(tmp, format="PNG", compress_level=1))


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
    ids = cityscapes.read_ground_truth(frame, png_size(frame.image))
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
    frames = list(frames)
    settings = dict(settings or {}, upsample=upsample, frames=[f.name for f in frames])
    inputs = dict({f.name: [f.instance_ids, f.label_ids] for f in frames}, **{"": list(inputs)})
    with resumable.Job(pred_dir, settings, inputs, force, what="prediction folder", log=log) as job:
        if not job.up_to_date():
            by_name = {f.name: f for f in frames}
            job.run(list(by_name), lambda todo: ((n, predict(by_name[n])) for n in todo),
                    _PredictionFolder(upsample, log), desc=desc if progress else None)
    return [prediction_file(pred_dir, f.name) for f in frames]


class _PredictionFolder(Store):
    """A partial prediction folder: each frame's masks and .txt, marked done with the .txt's digest."""

    def __init__(self, upsample, log):
        self.upsample, self.log, self.partial = upsample, log, None

    def open(self, partial, done):
        self.partial = partial
        intact = {k: v for k, v in done.items() if _intact(partial, k, v)}
        if len(intact) < len(done):
            self.log(f"{partial}: {len(done) - len(intact)} exported frames damaged, exporting them again")
        return intact

    def write(self, batch):
        txts = [(name, export_frame(self.partial, name, *prediction, self.upsample)) for name, prediction in batch]
        return [(name, digest(txt.read_bytes())) for name, txt in txts]


def _intact(pred_dir, name, value):
    """Whether a frame's exported .txt still has its recorded digest ``value`` and every mask it names is a PNG."""
    txt = prediction_file(pred_dir, name)
    if not txt.is_file() or digest(Path(txt).read_bytes()) != value:
        return False
    masks = [Path(pred_dir) / line.split(" ")[0] for line in txt.read_text().splitlines() if line]
    return all(m.is_file() and png_size(m) for m in masks)
