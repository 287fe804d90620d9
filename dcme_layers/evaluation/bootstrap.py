"""A percentile bootstrap interval of AP and AP50% over a split's frames, from the evaluator's per-frame matches."""
import multiprocessing
from copy import copy

import numpy as np

from dcme_layers.evaluation.cs_match import average_precision

__all__ = ["BOOTSTRAP", "LEVEL", "bootstrap_interval"]

#: Frame resamples of the bootstrap interval of AP and AP50% (``cs_eval.evaluate(bootstrap=...)``), and its level.
BOOTSTRAP = 200
LEVEL = 0.9

_RESAMPLED = {}  # keys, matches, args: what _resample_ap reads, set before the (forked) workers start


def _resample_ap(picks):
    """AP and AP50% of each resample of the frames (lists of frame indices), from the matches in _RESAMPLED."""
    keys, matches, args = _RESAMPLED["keys"], _RESAMPLED["matches"], _RESAMPLED["args"]
    out = []
    for pick in picks:
        sample = {f"{keys[i]}#{j}": matches[keys[i]] for j, i in enumerate(pick)}  # a frame drawn twice counts twice
        out.append(average_precision(sample, args))
    return out


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
