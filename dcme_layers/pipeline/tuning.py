"""Searching the decoding thresholds (DT, VT, ET) on a split (tools/tune_thresholds.py): every setting of a grid
(``tuning_grid``) decodes every frame's vector map, and cityscapesscripts' own matching (``assignGt2Preds``) and AP
(``evaluateMatches``, ``computeAverages``) score it at the maps' resolution (``tuning_search``); the outputs are a
table, the best setting and a heat map (``tuning_outputs``).

The maps are a trained net's (the HDF5 file of tools/infer.py) or the ground truth's with the network-like noise of
``oracle.noisy_map``. Classes: the majority ground-truth class of each decoded instance (instances on background
dropped, as ``make evaluate --oracle-classes``), or GoogLeNet's with a classifier.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py

from dcme_layers.core import paper
from dcme_layers.core.thresholds import parse_thresholds, scale_thresholds
from dcme_layers.pipeline.evaluate import MAX_INSTANCES, frames_of, ground_truth_size
from dcme_layers.pipeline.tuning_grid import best_setting, setting_key, settings_of
from dcme_layers.pipeline.tuning_outputs import write_outputs
from dcme_layers.pipeline.tuning_search import confirm_full_resolution, search, search_state
from dcme_layers.util import resumable
from dcme_layers.util.errors import EvaluationError

__all__ = ["Source", "TuneOptions", "prediction_frames", "job_record", "scores", "tune"]


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


def job_record(frames, source, grid, options):
    """(settings, inputs) that the tuning output's resumable.Job records: what the output is made from."""
    o = options
    settings = dict(predictions=str(Path(source.predictions).resolve()) if source.predictions else None,
                    size=list(source.size), seed=None if source.predictions else source.seed,
                    grid=[list(g) for g in grid], method=o.method, max_instances=o.max_instances,
                    classifier=[str(x) for x in o.classifier] if o.classifier else None, confirm=o.confirm,
                    frames=[f.name for f in frames])
    inputs = dict({f.name: [f.instance_ids, f.label_ids] for f in frames},
                  **{"": ([source.predictions] if source.predictions else [])
                      + (list(o.classifier[:2]) if o.classifier else [])})
    return settings, inputs


def scores(results, settings, best, confirmed, paper_key):
    """best.json's scores: the best setting's, at full resolution (``confirmed``), the paper's and the table."""
    paper_row = results.get(paper_key)
    return {"thresholds": best, "AP": results[best][0], "AP50%": results[best][1], "full_resolution": confirmed,
            "paper": {"thresholds": paper_key, "AP": paper_row[0] if paper_row else None,
                      "AP50%": paper_row[1] if paper_row else None},
            "table": [{"thresholds": setting_key(th), "AP": results[setting_key(th)][0],
                       "AP50%": results[setting_key(th)][1]} for th in settings]}


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
    full = ground_truth_size(frames[0])
    paper_key = setting_key(scale_thresholds("segnet", size))
    with resumable.Job(out, *job_record(frames, source, grid, o), o.force, what="tuning output") as job:
        if job.up_to_date():
            return json.loads((out / "best.json").read_text())
        done = job.start()
        t0 = time.perf_counter()
        with search_state(frames, source, size, o, full):
            results, spent = search(frames, settings, done, job, o.progress)
            best = best_setting({setting_key(th): results[setting_key(th)] for th in settings})
            confirmed = confirm_full_resolution(frames, parse_thresholds(best), o) if o.confirm else None
        timing = {"wall": time.perf_counter() - t0, "decode": spent["decode"], "score": spent["score"] + spent["ap"],
                  "workers": o.workers, "settings": len(settings) - len(done)}
        summary = dict(scores(results, settings, best, confirmed, paper_key), frames=len(frames), split=split,
                       size=list(size), source=source.describe(),
                       classes="GoogLeNet" if o.classifier else "ground truth", timing=timing)
        write_outputs(job.partial, settings, results, summary, paper_key)
        job.finish()
    return summary
