"""Scoring the grid of decoding thresholds at the maps' resolution, in forked worker processes
(``tuning.tune``'s search), and the best setting at full resolution.

- Scored at the maps' resolution: the masks stay at that size, the ground truth is subsampled to it like the
  training data (``cityscapes.subsample_ids``) and the evaluator's least ground-truth region (100 pixels at
  1024x2048) is scaled by the area ratio. When the maps have the ground truth's size this is ``cs_eval.evaluate``
  itself; ``confirm_full_resolution`` scores a setting as ``make evaluate`` does (``export_split`` +
  ``cs_eval.evaluate``).
- Masks are 1-bit PNGs in a temporary folder (tmpfs /dev/shm when present); a mask that several settings decode
  alike is written once.
- Each worker keeps a frame's ground truth (subsampled ids, the evaluator's instances dict) and its map across
  settings.
- Decoding's steps 1-3 run once per (DT, VT) (``decoding.find_centers``), step 4 once per ET
  (``decoding.decode_kept``).
- GoogLeNet classifies each distinct crop box of a frame once: a crop depends on its box alone (``crops.box_crops``).
- Work goes to ``workers`` processes in tasks of one frame and one (DT, VT) with every ET; the settings of a
  (DT, VT) are scored and marked done together, so a killed run resumes after the last one (util.resumable).
"""
import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

from dcme_layers.core.decoding import decode_kept, find_centers
from dcme_layers.core.encoding import vector_map
from dcme_layers.data import cityscapes
from dcme_layers.evaluation import cs_eval, cs_match
from dcme_layers.evaluation.export import PRED_SUFFIX, export_split
from dcme_layers.evaluation.labels import best_scored, classifier_labels, ground_truth_classes, majority_label_ids
from dcme_layers.evaluation.oracle import noisy_map
from dcme_layers.net.inference import read_blob
from dcme_layers.pipeline.tuning_grid import setting_key
from dcme_layers.util import files, records
from dcme_layers.util.files import png_size

__all__ = ["TMPFS", "frame_vector_map", "search_state", "search", "confirm_full_resolution"]

#: Where temporary masks go when it exists (tmpfs: no disk writes).
TMPFS = "/dev/shm"


def _noise_rng(seed, name):
    """The noise's generator of one frame: its own stream, so that its map does not depend on the other frames."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def frame_vector_map(source, frame, index, inst):
    """One frame's (2, H, W) vector map.

    Arguments:
        source: a ``tuning.Source``; frame: its cityscapes.Frame; index: its row in the HDF5 file; inst: its (H, W)
            instance map at the maps' size (the noise model's ground truth).
    """
    if source.predictions:
        with h5py.File(source.predictions, "r") as f:
            return read_blob(f, index, source.predictions)
    return noisy_map(vector_map(inst), inst, _noise_rng(source.seed, frame.name))


# What the forked workers read: set by ``search_state`` before the pool starts, cleared after.
_RUN = {}         # source, size, options, frames, tmp, args
_FRAMES = {}      # a process's per-frame state, kept across tasks
_CLASSIFIER = {}  # a process's GoogLeNet


def _frame_state(i):
    """A frame's ground truth at the maps' size (written as a PNG for the evaluator), instances dict and map."""
    if i in _FRAMES:
        return _FRAMES[i]
    frame, size, tmp = _RUN["frames"][i], _RUN["size"], Path(_RUN["tmp"])
    ids = cityscapes.subsample_ids(cityscapes.read_ground_truth(frame), size)
    gt_file = tmp / "gt" / f"{frame.name}{cityscapes.INSTANCE_SUFFIX}"
    gt_file.parent.mkdir(parents=True, exist_ok=True)
    files.write_png(gt_file, ids.astype(np.uint16))
    inst = cityscapes.instance_map(ids)
    pred_dir = tmp / "pred" / f"{os.getpid()}"
    (pred_dir / "masks").mkdir(parents=True, exist_ok=True)
    state = dict(frame=frame, gt_file=gt_file, gt=cs_match.instances_dict(gt_file), inst=inst,
                 vmap=frame_vector_map(_RUN["source"], frame, i, inst), masks={}, boxes={}, pred_dir=pred_dir)
    _FRAMES[i] = state
    return state


def _classifier():
    """This process's GoogLeNet (loaded on first use: each worker its own net)."""
    if not _CLASSIFIER:
        from dcme_layers.net.classify import Classifier
        deploy, weights, size = _RUN["options"].classifier
        _CLASSIFIER["net"] = Classifier(deploy, weights, size=size)
    return _CLASSIFIER["net"]


def _googlenet_classes(state, labels):
    """GoogLeNet's (class ids (K,), probabilities (K,)) of decoded instances 1..K, each distinct crop box of the
    frame classified once (the same answer as ``Classifier.classify``: a crop depends on its box alone)."""
    from dcme_layers.net.crops import box_crops, instance_boxes

    net = _classifier()
    if "image" not in state:
        state["image"] = cityscapes.resize_image(cityscapes.read_image(state["frame"].image), net.size)
    crop_labels = classifier_labels(labels, net)
    k = int(labels.max(initial=0))
    ids, boxes, _ = instance_boxes(np.where(crop_labels > 0, crop_labels, 0), net.margin)
    keys = [tuple(int(v) for v in b) for b in boxes]
    boxes_of = dict(zip(ids.tolist(), keys))
    cache = state["boxes"]
    missing = sorted({b for b in keys if b not in cache})
    if missing:
        for b, p in zip(missing, net.forward(box_crops(state["image"], np.array(missing), net.crop))):
            cache[b] = p
    if any(i not in boxes_of for i in range(1, k + 1)) and None not in cache:   # an instance lost at net.size
        cache[None] = net.forward(np.zeros((1, 3, net.crop, net.crop), np.float32))[0]
    probs = np.array([cache[boxes_of.get(i)] for i in range(1, k + 1)], np.float32).reshape(k, -1)
    return net.decide(probs, crop_labels)


def _instances(state, th):
    """Decode a frame's map with setting ``th`` and give the instances their classes and confidences, as
    ``make evaluate`` does. Returns (labels (h, w), label ids (N,), scores (N,))."""
    o = _RUN["options"]
    if state.get("kept", (None,))[0] != th[:2]:          # steps 1-3 once per (DT, VT): the tasks group its ETs
        state["kept"] = th[:2], find_centers(state["vmap"], th.dt, th.vt)
    dec = decode_kept(state["kept"][1], th.vt, th.et, o.method)
    labels, scores = best_scored(dec.labels, dec.scores, o.max_instances)
    if o.classifier is None:
        return ground_truth_classes(labels, scores, majority_label_ids(labels, state["inst"]))
    label_ids, conf = _googlenet_classes(state, labels)
    return labels, label_ids, conf * scores


def _write_prediction(state, labels, label_ids, scores, tag):
    """The frame's predictions in the results format at the maps' size, each distinct mask written once."""
    pred_dir, name = state["pred_dir"], state["frame"].name
    lines = []
    for k in range(1, len(label_ids) + 1):
        mask = labels == k
        digest = records.digest(np.packbits(mask).tobytes())
        rel = state["masks"].get(digest)
        if rel is None:
            rel = state["masks"][digest] = f"masks/{name}_{len(state['masks']):05d}.png"
            _write_mask(pred_dir / rel, mask)
        lines.append(f"{rel} {int(label_ids[k - 1])} {scores[k - 1]:.6g}")
    txt = pred_dir / f"{name}_{tag}{PRED_SUFFIX}"
    txt.write_text("\n".join(lines))
    return txt


def _write_mask(path, mask):
    from PIL import Image
    Image.fromarray(mask).save(path, format="PNG", compress_level=1)


def _score_task(task):
    """One frame under some settings: [(setting, its matches)], with the seconds spent decoding (and classifying)
    and matching."""
    i, settings = task
    state = _frame_state(i)
    out, spent = [], {"decode": 0.0, "score": 0.0}
    for n, th in settings:
        t0 = time.perf_counter()
        labels, label_ids, scores = _instances(state, th)
        t1 = time.perf_counter()
        txt = _write_prediction(state, labels, label_ids, scores, n)
        match = cs_match.match_frame(txt, state["gt_file"], state["gt"], _RUN["args"])
        spent["decode"] += t1 - t0
        spent["score"] += time.perf_counter() - t1
        out.append((n, match))
    return i, out, spent


def _ap_task(item):
    """AP and AP50% of one setting from its per-frame matches."""
    n, matches = item
    return n, cs_match.average_precision(matches, _RUN["args"])


def _temporary_folder():
    """A new folder for masks in TMPFS (else the system's); those a killed run left (its pid gone) are removed."""
    where = Path(TMPFS if os.path.isdir(TMPFS) else tempfile.gettempdir())
    for old in where.glob("dcme-tune-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"dcme-tune-{os.getpid()}-", dir=where)


@contextlib.contextmanager
def search_state(frames, source, size, options, full):
    """What ``search`` and ``confirm_full_resolution`` read, for the duration of the block, then cleared.

    Arguments:
        frames: cityscapes.Frame list; source: a ``tuning.Source``; size: (H, W) of the maps; options: a
            ``tuning.TuneOptions``; full: (H, W) of the ground truth (the evaluator's region sizes scale by the
            area ratio).
    """
    tmp = _temporary_folder()
    scale = size[0] * size[1] / (full[0] * full[1])
    _RUN.update(source=source, size=size, options=options, frames=frames, tmp=tmp,
                args=cs_match.evaluator_args(Path(tmp) / "pred", region_scale=scale))
    try:
        yield
    finally:
        _RUN.clear()
        _FRAMES.clear()
        _CLASSIFIER.clear()
        shutil.rmtree(tmp, ignore_errors=True)


def search(frames, settings, done, job, progress):
    """Score the settings not in ``done`` on every frame; each (DT, VT) group is marked done once scored.
    Returns ({setting key: (AP, AP50%)}, {"decode": s, "score": s} summed over the workers)."""
    from tqdm import tqdm

    groups = {}
    for n, th in enumerate(settings):
        if setting_key(th) not in done:
            groups.setdefault((th.dt, th.vt), []).append((n, th))
    results = {k: tuple(json.loads(v)) for k, v in done.items()}
    spent = {"decode": 0.0, "score": 0.0, "ap": 0.0}
    workers = _RUN["options"].workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    run = pool.imap_unordered if pool else map
    bar = tqdm(total=len(frames) * len(settings), initial=len(frames) * len(done), desc="tune", unit="decode",
               disable=not progress)
    try:
        for group in groups.values():
            matches = {n: {} for n, _ in group}
            for i, got, took in run(_score_task, [(i, group) for i in range(len(frames))]):
                for n, (gt, m) in got:
                    matches[n][gt] = m
                for k in took:
                    spent[k] += took[k]
                bar.update(len(group))
            t0 = time.perf_counter()
            for n, ap in (pool.map if pool else map)(_ap_task, list(matches.items())):
                results[setting_key(settings[n])] = ap
                job.done((setting_key(settings[n]), json.dumps(list(ap))))
            spent["ap"] += time.perf_counter() - t0
    finally:
        bar.close()
        if pool:
            pool.terminate()
    return results, spent


def confirm_full_resolution(frames, th, options):
    """The setting scored at full resolution as ``make evaluate`` scores it (masks upsampled, ``export_split`` +
    ``cs_eval.evaluate``): {"AP", "AP50%"}."""
    tmp = _temporary_folder()
    try:
        index = {f.name: i for i, f in enumerate(frames)}

        def predict(frame):
            state = _frame_state(index[frame.name])
            labels, label_ids, scores = _instances(state, th)
            return labels, label_ids, scores, png_size(frame.instance_ids)

        pred = Path(tmp) / "full"
        export_split(frames, pred, predict, progress=options.progress, desc="full resolution",
                     log=lambda *a: None)
        r = cs_eval.evaluate(frames, pred, distance=False, workers=options.workers)
        return {"AP": r["AP"], "AP50%": r["AP50%"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
