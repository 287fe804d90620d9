"""The grid of decoding thresholds (DT, VT, ET) the tuner searches, its settings' keys and the best of them."""
import numpy as np

from dcme_layers.core.thresholds import parse_thresholds, scale_thresholds

__all__ = ["DISTANCE_FACTORS", "VOTE_FACTORS", "DIGITS", "default_grid", "settings_of", "setting_key",
           "best_setting"]

#: The default grid around a centre setting: DT and ET times these, a factor sqrt(2) apart ...
DISTANCE_FACTORS = (0.5, 0.5 ** 0.5, 1.0, 2 ** 0.5, 2.0)
#: ... and VT, a pixel count, times their squares.
VOTE_FACTORS = tuple(f * f for f in DISTANCE_FACTORS)
#: Significant digits of the default grid's values.
DIGITS = 3


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


def setting_key(th):
    """The "DT,VT,ET" text of a setting (what ``--thresholds`` takes), the key of its results."""
    return f"{th.dt:g},{th.vt},{th.et:g}"


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
