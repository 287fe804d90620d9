"""The decoding thresholds (DT, VT, ET; paper, Section 3) and the foreground threshold: parsing, range checks and
scaling to another encoded resolution."""
import math
import numbers

from dcme_layers.core import paper
from dcme_layers.core.paper import Thresholds
from dcme_layers.util.errors import DecodingError

__all__ = ["FG_THRESHOLD", "parse_thresholds", "scale_thresholds", "check_thresholds"]

#: A pixel with |V| <= FG_THRESHOLD (pixels) is background for step 1: the ground-truth background is exactly 0.
FG_THRESHOLD = 0.5


def parse_thresholds(spec):
    """Validated decoding thresholds.

    Arguments:
        spec: a network name ("segnet", "fcn8s": the paper's values, ``paper.THRESHOLDS``), a "DT,VT,ET" string
            or a 3-sequence.
    Returns:
        A ``Thresholds(dt, vt, et)``: DT and ET as given (float unless a network name), VT an int.
    Raises:
        DecodingError: an unknown name, not three numbers, or a value out of range.
    """
    if isinstance(spec, str):
        if spec.lower() in paper.THRESHOLDS:
            return paper.THRESHOLDS[spec.lower()]
        spec = spec.split(",")
    try:
        values = [float(x) for x in spec]
    except (TypeError, ValueError):
        raise DecodingError(f"thresholds {spec!r}: expected segnet, fcn8s or DT,VT,ET") from None
    if len(values) != 3:
        raise DecodingError(f"thresholds {spec!r}: expected three values DT,VT,ET")
    dt, vt, et = values
    check_thresholds(dt, vt, et, FG_THRESHOLD)
    return Thresholds(dt, int(vt), et)


def scale_thresholds(thresholds, size, reference=paper.SIZE):
    """Thresholds given at the paper's encoded resolution carried over to another one.

    DT and ET scale with the image height, VT (a pixel count) with its square (at least 1).

    Arguments:
        thresholds: as in ``parse_thresholds``.
        size: the encoded (H, W) to scale to.
        reference: the (H, W) the thresholds are given at (default ``paper.SIZE``, 340x680).
    Returns:
        A ``Thresholds(dt, vt, et)``.
    """
    dt, vt, et = parse_thresholds(thresholds)
    s = float(size[0]) / float(reference[0])
    return parse_thresholds((dt * s, max(1, int(round(vt * s * s))), et * s))


def _finite(v):
    return isinstance(v, numbers.Real) and math.isfinite(v)


def check_thresholds(dt, vt, et, fg_threshold):
    """Raise DecodingError unless DT and ET are finite and > 0, VT an integer >= 1 and fg_threshold finite >= 0."""
    for name, v in (("DT", dt), ("ET", et)):
        if not (_finite(v) and v > 0):
            raise DecodingError(f"threshold {name} must be a finite number > 0, got {v!r}")
    if not (_finite(vt) and vt >= 1 and float(vt) == int(vt)):
        raise DecodingError(f"threshold VT must be an integer >= 1, got {vt!r}")
    if not (_finite(fg_threshold) and fg_threshold >= 0):
        raise DecodingError(f"fg_threshold must be a finite number >= 0, got {fg_threshold!r}")
