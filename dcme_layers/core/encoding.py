"""Distance to Center of Mass Encoding (DCME), arXiv 1711.09060, Section 3. Pure numpy.

Each instance is a body of uniform unit mass, one unit per pixel. Its center of mass (Eq. 1) is

    CM_k = (1 / |P_k|) * sum_{p in P_k} p,          p = (x, y) = (column, row),

the mean column and the mean row of its pixels P_k; an instance split into disjoint parts (occlusion) is still
one body with one CM, which may lie outside all of its pixels. The 2-D vector map (Eq. 2) stores at every
instance pixel the vector from the pixel to its instance's CM and zero on the background:

    V(p) = CM_k - p   for p in P_k,      V(p) = (0, 0)   for background p,

as an array of shape (2, H, W): channel 0 = dx (columns), channel 1 = dy (rows), float32, in pixels of the
resolution the map is computed at (origin at the top-left pixel centre, y down). The paper's ablation replaces
the CM by the centroid of the instance's bounding box, ((xmin + xmax) / 2, (ymin + ymax) / 2).

All instances are handled at once: one pass over the foreground pixels (np.unique + np.bincount), no loop over
pixels or instances.
"""
import numpy as np

from dcme_layers.util.errors import EncodingError

__all__ = ["ANCHORS", "instance_anchors", "vector_map", "magnitude"]

#: The point each vector points to: the center of mass (the paper's) or the bounding-box centroid (its ablation).
ANCHORS = ("cm", "bbox")


def _foreground(instance_map):
    """Flat indices, columns, rows and instance index (into the sorted ids) of every non-zero pixel."""
    m = np.asarray(instance_map)
    if m.ndim != 2:
        raise EncodingError(f"instance_map must be 2-D (H, W), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.integer):
        raise EncodingError(f"instance_map must be an integer array, got {m.dtype}")
    flat = m.ravel()
    idx = np.flatnonzero(flat)
    vals = flat[idx]
    if vals.size and 0 <= vals.min() and vals.max() < 1 << 22:
        # small non-negative ids (Cityscapes: < 34000): a lookup table instead of sorting, O(pixels + max id)
        present = np.flatnonzero(np.bincount(vals))
        lut = np.zeros(int(present[-1]) + 1, np.intp)
        lut[present] = np.arange(len(present))
        ids, inverse = present, lut[vals]
    else:
        ids, inverse = np.unique(vals, return_inverse=True)
    rows, cols = np.divmod(idx, m.shape[1])
    return idx, cols, rows, ids.astype(np.int64), inverse


def _anchors(cols, rows, inverse, k, anchor):
    if anchor == "cm":
        # Eq. 1: unit mass per pixel, CM = mean column, mean row (float64 sums are exact here).
        n = np.bincount(inverse, minlength=k).astype(np.float64)
        x = np.bincount(inverse, weights=cols, minlength=k) / n
        y = np.bincount(inverse, weights=rows, minlength=k) / n
    elif anchor == "bbox":
        # Ablation: centroid of the tight bounding box, in pixel-centre coordinates.
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(k))
        c, r = cols[order], rows[order]
        x = (np.minimum.reduceat(c, starts) + np.maximum.reduceat(c, starts)) / 2.0
        y = (np.minimum.reduceat(r, starts) + np.maximum.reduceat(r, starts)) / 2.0
    else:
        raise EncodingError(f"unknown anchor {anchor!r}; expected one of {ANCHORS}")
    return np.stack([x, y], axis=1).astype(np.float64).reshape(k, 2)


def instance_anchors(instance_map, anchor="cm"):
    """Anchor point of every instance.

    instance_map: (H, W) integer array, 0 = background, any other value = one instance (its pixels may be
    disjoint). anchor: "cm" = center of mass (Eq. 1), "bbox" = bounding-box centroid (the paper's ablation).
    Returns (ids, anchors): ids (K,) int64 sorted ascending, anchors (K, 2) float64 as (x, y) = (column, row).
    """
    _, cols, rows, ids, inverse = _foreground(instance_map)
    return ids, _anchors(cols, rows, inverse, len(ids), anchor)


def vector_map(instance_map, anchor="cm"):
    """The DCME 2-D vector map (Eq. 2) of an instance map: (2, H, W) float32.

    Channel 0 = dx = anchor_x - column, channel 1 = dy = anchor_y - row at every instance pixel, 0 on the
    background (instance_map == 0). With anchor="cm" the vectors of each instance sum to zero and
    pixel + vector = CM for every instance pixel.
    """
    idx, cols, rows, ids, inverse = _foreground(instance_map)
    h, w = np.shape(instance_map)
    out = np.zeros((2, h * w), np.float32)
    if len(ids):
        a = _anchors(cols, rows, inverse, len(ids), anchor)
        out[0, idx] = a[inverse, 0] - cols
        out[1, idx] = a[inverse, 1] - rows
    return out.reshape(2, h, w)


def magnitude(vmap):
    """Euclidean norm of a (2, H, W) vector map: the distance of each pixel to its anchor, (H, W) float32."""
    v = np.asarray(vmap, np.float32)
    if v.ndim != 3 or v.shape[0] != 2:
        raise EncodingError(f"vector map must have shape (2, H, W), got {v.shape}")
    return np.hypot(v[0], v[1])
