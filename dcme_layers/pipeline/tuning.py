"""Searching the decoding thresholds (DT, VT, ET) on a split (tools/tune_thresholds.py): every setting of a grid
decodes every frame's vector map, and cityscapesscripts' own matching (``assignGt2Preds``) and AP
(``evaluateMatches``, ``computeAverages``) score it.

The maps are a trained net's (the HDF5 file of tools/infer.py) or the ground truth's with the network-like noise of
``oracle.noisy_map``. Classes: the majority ground-truth class of each decoded instance (instances on background
dropped, as ``make evaluate --oracle-classes``), or GoogLeNet's with a classifier.

How a 5x5x5 grid on 30 frames at 340x680 fits in minutes on 2 cores:

- Scored at the maps' resolution: the masks stay at that size, the ground truth is subsampled to it like the
  training data (``cityscapes.subsample_ids``) and the evaluator's least ground-truth region (100 pixels at
  1024x2048) is scaled by the area ratio. When the maps have the ground truth's size this is ``cs_eval.evaluate``
  itself. The best setting is then scored once more at full resolution (``export_split`` + ``cs_eval.evaluate``,
  what ``make evaluate`` reports) unless ``confirm`` is off.
- Masks are 1-bit PNGs in a temporary folder (tmpfs /dev/shm when present); a mask that several settings decode
  alike is written once.
- Each worker keeps a frame's ground truth (subsampled ids, the evaluator's instances dict) and its map across
  settings.
- Decoding's steps 1-3 run once per (DT, VT) (``decoding.find_centers``), step 4 once per ET
  (``decoding.decode_kept``).
- GoogLeNet classifies each distinct crop box of a frame once: a crop depends on its box alone (``crops.box_crops``).
- Work goes to ``workers`` processes in tasks of one frame and one (DT, VT) with every ET; the settings of a
  (DT, VT) are scored and marked done together, so a killed run resumes after the last one (dcme_layers.util.resumable).
"""
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dcme_layers.core import paper
from dcme_layers.core.decoding import decode_kept, find_centers, parse_thresholds, scale_thresholds
from dcme_layers.core.encoding import vector_map
from dcme_layers.data import cityscapes
from dcme_layers.evaluation import cs_eval, cs_match
from dcme_layers.evaluation.export import PRED_SUFFIX, export_split
from dcme_layers.evaluation.labels import best_scored, classifier_labels, ground_truth_classes, majority_label_ids
from dcme_layers.evaluation.oracle import noisy_map
from dcme_layers.net.inference import read_blob
from dcme_layers.pipeline.evaluate import MAX_INSTANCES, frames_of
from dcme_layers.util import files, resumable
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import atomic_write, png_size

__all__ = ["DISTANCE_FACTORS", "VOTE_FACTORS", "Source", "TuneOptions", "default_grid", "settings_of",
           "prediction_frames", "vector_maps", "best_setting", "format_table", "write_heatmap", "tune"]

#: The default grid around a centre setting: DT and ET times these, a factor sqrt(2) apart ...
DISTANCE_FACTORS = (0.5, 0.5 ** 0.5, 1.0, 2 ** 0.5, 2.0)
#: ... and VT, a pixel count, times their squares.
VOTE_FACTORS = tuple(f * f for f in DISTANCE_FACTORS)
#: Significant digits of the default grid's values.
DIGITS = 3
#: Where temporary masks go when it exists (tmpfs: no disk writes).
TMPFS = "/dev/shm"


@dataclass(frozen=True)
class Source:
    """Where the vector maps come from.

    Arguments:
        predictions: tools/infer.py's HDF5 file (``vectors`` (N, 2, H, W), ``frames`` (N,)); None: the ground
            truth with the noise of ``oracle.noisy_map``.
        size: (H, W) of the noisy maps (with predictions: the file's).
        seed: the noise's seed; a frame draws from ``default_rng([seed, crc32(frame name)])``, so a frame's map
            does not depend on the other frames.
    """
    predictions: object = None
    size: tuple = paper.SIZE
    seed: int = 0

    def describe(self):
        """A few words for titles: the file, or the noise model."""
        return Path(self.predictions).name if self.predictions else "ground truth + network-like noise"


@dataclass(frozen=True)
class TuneOptions:
    """How ``tune`` decodes and scores.

    Arguments:
        method: step 4 of decoding, "vote" or "watershed".
        max_instances: per frame, the best-scored decoded instances kept (as ``make evaluate``).
        classifier: (deploy prototxt, weights, (H, W) crop resolution) of GoogLeNet; None: ground-truth classes.
        workers: processes.
        confirm: score the best setting again at full resolution (export + ``cs_eval.evaluate``).
        force: redo an up-to-date output, or one of other settings.
        progress: show a progress bar.
    """
    method: str = "vote"
    max_instances: int = MAX_INSTANCES
    classifier: object = None
    workers: int = 1
    confirm: bool = True
    force: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------------------------------
# The grid


def default_grid(size):
    """Five values of each threshold around the paper's SegNet setting scaled to ``size`` (``scale_thresholds``).

    Arguments:
        size: (H, W) of the maps.
    Returns:
        (DT values, VT values, ET values), each a tuple of 5, ascending; the middle ones are the paper's.
    """
    dt, vt, et = scale_thresholds("segnet", size)
    round_ = lambda x: float(f"{x:.{DIGITS}g}")  # noqa: E731
    return (tuple(round_(dt * f) for f in DISTANCE_FACTORS), tuple(max(1, round(vt * f)) for f in VOTE_FACTORS),
            tuple(round_(et * f) for f in DISTANCE_FACTORS))


def settings_of(dts, vts, ets):
    """Every (DT, VT, ET) of the grid, validated (``parse_thresholds``), DT slowest and ET fastest.

    Returns:
        A list of ``Thresholds``, len(dts) * len(vts) * len(ets) of them, without repeats.
    """
    out = [parse_thresholds((dt, vt, et)) for dt in dts for vt in vts for et in ets]
    return list(dict.fromkeys(out))


def _key(th):
    """The "DT,VT,ET" text of a setting (what ``--thresholds`` takes)."""
    return f"{th.dt:g},{th.vt},{th.et:g}"


# ---------------------------------------------------------------------------------------------------------------
# The maps


def prediction_frames(path, root, split, limit=None):
    """The frames of tools/infer.py's HDF5 file, checked against the split's ground truth.

    Arguments:
        path: the HDF5 file; root, split: the Cityscapes root and split of its frames; limit: the first N only.
    Returns:
        (frames (cityscapes.Frame list, the file's order), (H, W) of its maps).
    Raises:
        EvaluationError: one line naming the file: missing, not HDF5, no ``vectors``/``frames`` of matching
            shapes, or a frame without ground truth in the split.
    """
    try:
        with h5py.File(path, "r") as f:
            if "vectors" not in f or "frames" not in f:
                raise EvaluationError(f"{path}: no 'vectors' and 'frames' datasets; write it with tools/infer.py")
            shape = f["vectors"].shape
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["frames"][()]]
    except OSError as e:
        raise EvaluationError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]}); write it with "
                              f"tools/infer.py") from None
    if len(shape) != 4 or shape[1] != 2 or shape[0] != len(names):
        raise EvaluationError(f"{path}: vectors {shape} do not match {len(names)} frames of (2, H, W) maps")
    names = names[:limit] if limit else names
    return frames_of(root, split, names, path), (int(shape[2]), int(shape[3]))


def _noise_rng(seed, name):
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def vector_maps(source, frame, index, inst):
    """One frame's (2, H, W) vector map.

    Arguments:
        source: a ``Source``; frame: its cityscapes.Frame; index: its row in the HDF5 file; inst: its (H, W)
            instance map at the maps' size (the noise model's ground truth).
    """
    if source.predictions:
        with h5py.File(source.predictions, "r") as f:
            return read_blob(f, index, source.predictions)
    return noisy_map(vector_map(inst), inst, _noise_rng(source.seed, frame.name))


# ---------------------------------------------------------------------------------------------------------------
# Scoring in the workers: the state a fork of the parent reads (set before the pool starts)

_RUN = {}      # source, size, options, frames, tmp, args: set by ``tune`` before forking
_FRAMES = {}   # a worker's per-frame state, kept across tasks
_CLASSIFIER = {}


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
                 vmap=vector_maps(_RUN["source"], frame, i, inst), masks={}, boxes={}, pred_dir=pred_dir)
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
        digest = resumable.digest(np.packbits(mask).tobytes())
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


# ---------------------------------------------------------------------------------------------------------------
# The search


def _temporary_folder():
    """A new folder for masks in TMPFS (else the system's); those a killed run left (its pid gone) are removed."""
    where = Path(TMPFS if os.path.isdir(TMPFS) else tempfile.gettempdir())
    for old in where.glob("dcme-tune-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"dcme-tune-{os.getpid()}-", dir=where)


def _search(frames, settings, done, job, progress):
    """Score the settings not in ``done`` on every frame; each (DT, VT) group is marked done once scored.
    Returns ({setting key: (AP, AP50%)}, {"decode": s, "score": s} summed over the workers)."""
    from tqdm import tqdm

    groups = {}
    for n, th in enumerate(settings):
        if _key(th) not in done:
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
                results[_key(settings[n])] = ap
                job.done((_key(settings[n]), json.dumps(list(ap))))
            spent["ap"] += time.perf_counter() - t0
    finally:
        bar.close()
        if pool:
            pool.terminate()
    return results, spent


def best_setting(results):
    """The setting of the highest AP (ties: the higher AP50%, then the first given).

    Arguments:
        results: {"DT,VT,ET": (AP, AP50%)} (NaN counts as lowest).
    Returns:
        Its "DT,VT,ET" key.
    """
    def rank(item):
        ap, ap50 = (x if np.isfinite(x) else -1.0 for x in item[1])
        return ap, ap50
    return max(results.items(), key=rank)[0]


def format_table(settings, results, best, paper_key):
    """(CSV text in grid order, Markdown table best first) of every setting's AP and AP50% in %."""
    csv = ["DT,VT,ET,AP,AP50%"] + [f"{th.dt:g},{th.vt},{th.et:g},{100 * results[_key(th)][0]:.2f},"
                                   f"{100 * results[_key(th)][1]:.2f}" for th in settings]
    order = sorted(settings, key=lambda th: -np.nan_to_num(results[_key(th)][0], nan=-1.0))
    md = ["| DT | VT | ET | AP | AP50% | |", "|---|---|---|---|---|---|"]
    for th in order:
        ap, ap50 = results[_key(th)]
        mark = " ".join(m for m, k in (("best", best), ("paper", paper_key)) if k == _key(th))
        md.append(f"| {th.dt:g} | {th.vt} | {th.et:g} | {100 * ap:.1f} | {100 * ap50:.1f} | {mark} |")
    return "\n".join(csv) + "\n", "\n".join(md) + "\n"


def write_heatmap(path, settings, results, best, paper_key, title):
    """A PNG of AP (%) over DT (rows) x VT (columns) at the best setting's ET, values in the cells, the best
    setting and the paper's (when in the grid, at any ET) outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    b = parse_thresholds(best)
    dts = sorted({th.dt for th in settings})
    vts = sorted({th.vt for th in settings})
    ap = np.full((len(dts), len(vts)), np.nan)
    for th in settings:
        if th.et == b.et:
            ap[dts.index(th.dt), vts.index(th.vt)] = 100 * results[_key(th)][0]
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(vts) + 2.8), 0.8 * len(dts) + 2.0))
    im = ax.imshow(ap, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(im, ax=ax, label="AP (%)")
    for (r, c), v in np.ndenumerate(ap):
        if np.isfinite(v):  # dark text on the light (high) half of viridis
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=10,
                    color="black" if im.norm(v) > 0.5 else "white")
    ax.set_xticks(range(len(vts)), [str(v) for v in vts])
    ax.set_yticks(range(len(dts)), [f"{d:g}" for d in dts])
    ax.set(xlabel="VT (votes)", ylabel="DT (pixels)")
    marks = [(best, "best", "red", "-")]
    p = parse_thresholds(paper_key)
    if p.dt in dts and p.vt in vts:
        at = "" if p.et == b.et or paper_key not in results else f" (ET {p.et:g}: {100 * results[paper_key][0]:.1f})"
        marks.append((paper_key, f"paper{at}", "white", "--"))
    for key, label, color, style in marks:
        th = parse_thresholds(key)
        r, c = dts.index(th.dt), vts.index(th.vt)
        ax.add_patch(Rectangle((c - 0.47, r - 0.47), 0.94, 0.94, fill=False, edgecolor=color, linewidth=2.5,
                               linestyle=style))
        ax.text(c, r - 0.3, label, ha="center", va="center", fontsize=7, color="white", fontweight="bold",
                bbox=dict(facecolor=color if color != "white" else "black", alpha=0.7, linewidth=0, pad=1))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda t: fig.savefig(t, dpi=100, format="png"))
    plt.close(fig)


def _confirm(frames, th, options):
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


def tune(frames, source, grid, out, options=TuneOptions(), split=""):
    """Search the grid on ``frames``; writes ``out``/table.csv, table.md, best.json, best.txt and heatmap.png.

    A resumable.Job on ``out``: an output of the same settings and inputs is returned as is, a killed run
    resumes after the (DT, VT) groups it finished, other settings are refused unless ``options.force``.

    Arguments:
        frames: cityscapes.Frame list (the maps' frames, in the HDF5 file's order with predictions).
        source: a ``Source``; grid: (DT values, VT values, ET values); out: the output folder.
        options: a ``TuneOptions``; split: its name, for the titles.
    Returns:
        The best.json dict: thresholds "DT,VT,ET", AP, AP50% (fractions, at the maps' resolution), full_resolution
        {AP, AP50%} or None, paper {thresholds, AP, AP50%}, table [{thresholds, AP, AP50%}] in grid order,
        frames, split, size, source, classes, timing {wall, decode, score (seconds), workers, settings}.
    """
    frames, out, o = list(frames), Path(out), options
    if not frames:
        raise EvaluationError(f"{source.predictions or split}: no frames to tune on")
    size = tuple(source.size)
    settings = settings_of(*grid)
    full = png_size(frames[0].instance_ids) or cityscapes.read_ground_truth(frames[0]).shape
    paper_key = _key(scale_thresholds("segnet", size))
    job_settings = dict(predictions=str(Path(source.predictions).resolve()) if source.predictions else None,
                        size=list(size), seed=None if source.predictions else source.seed,
                        grid=[list(g) for g in grid], method=o.method, max_instances=o.max_instances,
                        classifier=[str(x) for x in o.classifier] if o.classifier else None, confirm=o.confirm,
                        frames=[f.name for f in frames])
    inputs = dict({f.name: [f.instance_ids, f.label_ids] for f in frames},
                  **{"": ([source.predictions] if source.predictions else [])
                      + (list(o.classifier[:2]) if o.classifier else [])})
    with resumable.Job(out, job_settings, inputs, o.force, what="tuning output") as job:
        if job.up_to_date():
            return json.loads((out / "best.json").read_text())
        done = job.start()
        t0 = time.perf_counter()
        tmp = _temporary_folder()
        _RUN.update(source=source, size=size, options=o, frames=frames, tmp=tmp,
                    args=cs_match.evaluator_args(Path(tmp) / "pred", region_scale=size[0] * size[1] / (full[0] * full[1])))
        try:
            results, spent = _search(frames, settings, done, job, o.progress)
            best = best_setting({_key(th): results[_key(th)] for th in settings})
            confirmed = _confirm(frames, parse_thresholds(best), o) if o.confirm else None
        finally:
            _RUN.clear()
            _FRAMES.clear()
            shutil.rmtree(tmp, ignore_errors=True)
        wall = time.perf_counter() - t0
        paper_row = results.get(paper_key)
        summary = {"thresholds": best, "AP": results[best][0], "AP50%": results[best][1],
                   "full_resolution": confirmed,
                   "paper": {"thresholds": paper_key, "AP": paper_row[0] if paper_row else None,
                             "AP50%": paper_row[1] if paper_row else None},
                   "table": [{"thresholds": _key(th), "AP": results[_key(th)][0], "AP50%": results[_key(th)][1]}
                             for th in settings],
                   "frames": len(frames), "split": split, "size": list(size), "source": source.describe(),
                   "classes": "GoogLeNet" if o.classifier else "ground truth",
                   "timing": {"wall": wall, "decode": spent["decode"], "score": spent["score"] + spent["ap"],
                              "workers": o.workers, "settings": len(settings) - len(done)}}
        _write_outputs(job.partial, settings, results, summary, paper_key)
        job.finish()
    return summary


def _write_outputs(folder, settings, results, summary, paper_key):
    """table.csv, table.md, best.json, best.txt and heatmap.png into ``folder``."""
    folder = Path(folder)
    best, (h, w) = summary["thresholds"], summary["size"]
    csv, md = format_table(settings, results, best, paper_key)
    t = summary["timing"]
    head = (f"# Decoding thresholds on {summary['split']} ({summary['frames']} frames, maps at {h}x{w})\n\n"
            f"Maps: {summary['source']}; classes: {summary['classes']}; AP by cityscapesscripts at {h}x{w} "
            f"(ground truth subsampled to it). Best: **{best}** (AP {100 * summary['AP']:.1f})"
            + (f", at full resolution AP {100 * summary['full_resolution']['AP']:.1f}"
               if summary["full_resolution"] else "")
            + f"; the paper's SegNet setting scaled to {h}x{w}: {paper_key}.\n\n"
            f"{t['settings']} settings searched in this run (and the best one scored at full resolution when "
            f"asked) in {t['wall']:.0f} s with {t['workers']} workers "
            f"(summed over them: decoding {t['decode']:.1f} s, scoring {t['score']:.1f} s).\n\n"
            f"![AP over DT x VT](heatmap.png)\n\n")
    atomic_write(folder / "table.csv", lambda p: p.write_text(csv))
    atomic_write(folder / "table.md", lambda p: p.write_text(head + md))
    atomic_write(folder / "best.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    atomic_write(folder / "best.txt", lambda p: p.write_text(best + "\n"))
    et = parse_thresholds(best).et
    write_heatmap(folder / "heatmap.png", settings, results, best, paper_key,
                  f"AP (%) over DT x VT at ET = {et:g} (the best ET)\n{summary['source']}, {summary['split']}, "
                  f"{summary['frames']} frames at {h}x{w}, {summary['classes']} classes")
