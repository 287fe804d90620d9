"""The paper's ground-truth ceilings (tools/oracle.py): decode the ground-truth vector maps instead of network
output, export and score them beside the full-resolution and the subsampled ground truth, in one report.

``oracle_predictions`` / ``subsampled_gt_predictions`` give one frame's instances at the encoded resolution (CM or
bbox anchors, vote or watershed decoding); ``labels.majority_label_ids`` + ``ground_truth_classes`` give decoded instances
their ground-truth classes; ``noisy_map`` makes a ground-truth map look like network output; ``run_oracle`` makes the
table for a split.
"""
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcme_layers.core import paper
from dcme_layers.core.decoding import decode
from dcme_layers.core.encoding import vector_map
from dcme_layers.core.thresholds import FG_THRESHOLD, parse_thresholds
from dcme_layers.data import cityscapes
from dcme_layers.evaluation.cs_eval import evaluate
from dcme_layers.evaluation.export import export_split, full_resolution_gt, ground_truth_instances
from dcme_layers.evaluation.labels import ground_truth_classes, majority_label_ids
from dcme_layers.evaluation.report import write_report

__all__ = ["Oracle", "OracleOptions", "oracle_predictions", "noisy_map", "subsampled_gt_predictions",
           "oracle_config_name", "run_oracle"]

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


def oracle_predictions(frame, size=paper.SIZE, anchor="cm", method="vote", thresholds="segnet",
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
    truth = majority_label_ids(dec.labels, inst)                                     # (K,) 0 = on background
    labels, label_ids, scores = ground_truth_classes(dec.labels, dec.scores, truth)
    return Oracle(labels, label_ids, scores, full, image, vmap, dec.centers[truth > 0])


def noisy_map(vmap, inst, rng, sigma=1.5, background=0.05, reach=30.0):
    """A network-like vector map: the ground truth plus Gaussian noise on the instances and random background votes.

    Arguments:
        vmap: (2, H, W) float32 ground-truth vector map (``encoding.vector_map``).
        inst: (H, W) instance map of the same frame (0 = background).
        rng: a ``numpy.random.Generator``.
        sigma: standard deviation (pixels) of the N(0, sigma) added to both channels of every instance pixel.
        background: share of the background pixels that get a random vector.
        reach: the random vectors' largest length (pixels); direction and length uniform.
    Returns:
        (2, H, W) float32, a new map.
    """
    out = vmap + (rng.normal(0, sigma, vmap.shape) * (inst > 0)).astype(np.float32)
    ys, xs = np.nonzero(inst == 0)
    pick = rng.random(len(ys)) < background
    angle = rng.uniform(0, 2 * np.pi, pick.sum())
    length = rng.uniform(0, reach, pick.sum())
    out[0, ys[pick], xs[pick]] = length * np.cos(angle)
    out[1, ys[pick], xs[pick]] = length * np.sin(angle)
    return out


def subsampled_gt_predictions(frame, size=paper.SIZE, anchor="cm"):
    """The ground-truth instances subsampled to ``size`` without decoding (the resolution ceiling alone).
    Score = n / (n + 50) for an instance of n pixels (larger first, like decode's vote saturation)."""
    image, inst, full = _load_small(frame, size)
    labels, label_ids = ground_truth_instances(inst)
    n = np.bincount(labels.ravel(), minlength=len(label_ids) + 1)[1:]
    return Oracle(labels, label_ids, n / (n + 50.0), full, image, vector_map(inst, anchor), None)


# ---------------------------------------------------------------------------------------------------------------
# The oracle / ablation table (tools/oracle.py)


def oracle_config_name(anchor, method, thresholds, size, upsample):
    """Folder-safe name of one oracle configuration, e.g. cm-vote-dt10-vt50-et15-340x680-nearest."""
    dt, vt, et = parse_thresholds(thresholds)
    return f"{anchor}-{method}-dt{dt:g}-vt{vt}-et{et:g}-{size[0]}x{size[1]}-{upsample}"


@dataclass(frozen=True)
class OracleOptions:
    """The rows and settings of one oracle table.

    Arguments:
        size: (H, W) the ground truth is subsampled to (the encoded resolution).
        anchors: "cm" and/or "bbox" (CM or bounding-box centroid).
        methods: "vote" and/or "watershed" (step 4 of decoding).
        thresholds: (DT, VT, ET), "segnet" or "fcn8s", in pixels of ``size``.
        upsample: masks to the ground truth's resolution (export.UPSAMPLING).
        full_res: add the full-resolution ground truth row (AP = 1 by construction).
        gt_subsampled: add the ground truth subsampled to ``size`` without decoding.
        figures: frames drawn (input | magnitude | instances) per decoded configuration.
        bootstrap: resamples of the frames for each row's AP interval (bootstrap.bootstrap_interval); 0: none.
    """
    size: tuple = paper.SIZE
    anchors: tuple = ("cm", "bbox")
    methods: tuple = ("vote", "watershed")
    thresholds: object = "segnet"
    upsample: str = "nearest"
    full_res: bool = True
    gt_subsampled: bool = True
    figures: int = 3
    bootstrap: int = 0


def run_oracle(frames, out, options=OracleOptions(), workers=1, progress=True, title=None, force=False):
    """The paper's ground-truth ceilings on one split, one report (rows as ``options``, an OracleOptions, says).

    Writes predictions under ``out/<config>/`` (export_split: resumable, redone when the ground truth changed,
    ``force`` redoes them), figures for the first ``options.figures`` frames under ``out/figures/`` (from the
    same decoding as the export when it runs), and ``out/report.md`` + ``out/report.json``. workers: processes
    for the evaluator's matching. Returns the list of evaluate() results.
    """
    from dcme_layers.evaluation.visualize import side_by_side, write_png

    o, out, frames = options, Path(out), list(frames)
    dt, vt, et = th = parse_thresholds(o.thresholds)
    h, w = int(o.size[0]), int(o.size[1])
    results, figures = [], {f.name for f in frames[:o.figures]}
    if o.full_res:
        pred = out / "gt-full-res"
        export_split(frames, pred, full_resolution_gt, progress=progress, desc="gt full res", force=force)
        results.append(evaluate(frames, pred, name="GT, full resolution", workers=workers))  # AP 1: no interval
    if o.gt_subsampled:
        pred = out / f"gt-{h}x{w}-{o.upsample}"
        export_split(frames, pred, lambda f: _as_pred(subsampled_gt_predictions(f, o.size)), o.upsample, progress,
                     desc=f"gt {h}x{w}", settings={"size": [h, w]}, force=force)
        results.append(evaluate(frames, pred, name=f"GT at {h}x{w}, no decoding ({o.upsample})", workers=workers,
                                bootstrap=o.bootstrap))
    for anchor in o.anchors:
        for method in o.methods:
            cfg = oracle_config_name(anchor, method, th, o.size, o.upsample)
            drawn = {}

            def predict(f, anchor=anchor, method=method, drawn=drawn):
                pred = oracle_predictions(f, o.size, anchor, method, th)
                if f.name in figures:
                    drawn[f.name] = pred
                return _as_pred(pred)

            export_split(frames, out / cfg, predict, o.upsample, progress, desc=cfg, force=force,
                         settings={"anchor": anchor, "method": method, "thresholds": list(th), "size": [h, w]})
            results.append(evaluate(frames, out / cfg, workers=workers, bootstrap=o.bootstrap,
                                    name=f"GT at {h}x{w}, {anchor.upper()} anchor, {method} decoding"))
            for f in frames[:o.figures]:
                p = drawn.get(f.name) or oracle_predictions(f, o.size, anchor, method, th)  # export up to date
                write_png(out / "figures" / f"{f.name}_{cfg}.png", side_by_side(p.image, p.vmap, p.labels, p.centers))
    notes = [f"Oracle: decoding the ground-truth vector maps at {h}x{w} (thresholds DT={dt:g}, VT={vt}, ET={et:g}) "
             f"instead of network output; each decoded instance takes the majority ground-truth class under it "
             f"and its decoding score; masks upsampled to full resolution ({o.upsample}).",
             "The paper reports 39.8% AP for the ground truth at 340x680 on the full Cityscapes val set."]
    write_report(results, out, title=title or f"DCME oracle on {len(frames)} frames", notes=notes)
    return results


def _as_pred(o):
    return o.labels, o.label_ids, o.scores, o.size
