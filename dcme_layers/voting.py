"""The vectorised kernels of DCME decoding's steps (dcme_layers/decoding.py has the steps and their rules): votes
binned on the pixel grid, step 4's nearest-center assignment, the zero-vector CM pixels, and the watershed ablation
(step 2's clustering is in dcme_layers/clustering.py). Pure numpy, scipy's KD-tree for many centers, scikit-image for
the watershed.
"""
from functools import partial

import numpy as np
from scipy.spatial import cKDTree

_FAR = 1 << 20       # votes are binned into cells with coordinates clipped to +-_FAR (far votes stay far)
# Up to this many kept centers, step 4 measures every (cell, center) distance; beyond (a poorly trained net's output
# has hundreds), a KD-tree over the centers finds the two nearest ones.
_BRUTE_FORCE_CENTERS = 32
_MASK_LIMIT = 1 << 24   # step 4 marks the cells near a center on a mask of up to this many pixels
_HALF_DIAGONAL = 0.5 * np.sqrt(2.0) + 1e-9
_RING = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])   # the 8 neighbours (dy, dx)


def vote_cells(vx, vy, shape=None):
    """Bin votes on the pixel grid: (cells, cell) with cells (N, 2) int64 the occupied (x, y) cells in row-major
    order and cell (M,) int64 the index of each vote's cell. Given the image ``shape`` (H, W), many votes (more than
    an eighth of the pixels) and all of them inside the image, marking the image replaces the sort (same result,
    faster)."""
    cx = np.clip(np.rint(vx), -_FAR, _FAR).astype(np.int64)
    cy = np.clip(np.rint(vy), -_FAR, _FAR).astype(np.int64)
    if shape is not None and 8 * len(cx) > shape[0] * shape[1]:
        h, w = shape
        if cx.min() >= 0 and cy.min() >= 0 and cx.max() < w and cy.max() < h:
            key = cy * w + cx
            mark = np.zeros(h * w, bool)
            mark[key] = True
            occupied = np.flatnonzero(mark)
            lookup = np.empty(h * w, np.int32)     # (int32: half the memory to touch)
            lookup[occupied] = np.arange(len(occupied))
            oy, ox = np.divmod(occupied, w)
            return np.stack([ox, oy], axis=1), lookup[key].astype(np.int64)
    return _sorted_cells(cx, cy)


def _sorted_cells(cx, cy):
    """``vote_cells`` by sorting the votes' (clipped) cells (cx, cy) in row-major order."""
    if len(cx) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    x0, y0 = cx.min(), cy.min()
    span = cx.max() - x0 + 1
    perm, key = _stable_sort((cy - y0) * span + (cx - x0))
    first = np.empty(len(key), bool)              # the first vote of each cell in sorted order
    first[0] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    cell = np.empty(len(key), np.int64)
    cell[perm] = np.cumsum(first) - 1
    key = key[first]
    return np.stack([key % span + x0, key // span + y0], axis=1), cell


def _stable_sort(key):
    """(perm, key[perm]) for non-negative int64 keys, ties in index order. Where the keys leave room, each index rides
    in the low bits of its key through one plain sort (a few times faster than an argsort)."""
    bits = max(1, (len(key) - 1).bit_length())
    if key.max() >= 1 << (62 - bits):
        perm = np.argsort(key, kind="stable")
        return perm, key[perm]
    packed = np.sort(key << bits | np.arange(len(key)))
    return packed & ((1 << bits) - 1), packed >> bits


def assign_votes(vx, vy, centers, et, cells=None):
    """Step 4: index of the nearest center closer than ET to each vote (x, y), -1 where none is.

    Exact and vectorized: votes are grouped by pixel cell (``cells`` = ``vote_cells(vx, vy)`` when already
    computed); a cell whose center is decisively inside one center's ET-disc and nearer to it than to any other
    (margins of half a cell diagonal) sends all its votes there, a cell decisively outside every disc none (no
    distance measured for the cells outside every center's box, ``_near_centers``: a noisy map's background); the
    votes of the remaining (boundary) cells get exact distances.
    """
    out = np.full(len(vx), -1, np.int64)
    if len(vx) == 0 or len(centers) == 0:
        return out
    cells, cell = vote_cells(vx, vy) if cells is None else cells
    nearest = _two_nearest if len(centers) <= _BRUTE_FORCE_CENTERS else partial(_two_nearest_tree, bound=et)
    near = _near_centers(cells, centers, et + _HALF_DIAGONAL + 1.0)   # the others: sure_out, with 1 px to spare
    k1, d1, d2 = nearest(cells[near].astype(np.float64), centers)
    with np.errstate(invalid="ignore"):             # inf - inf where no center is near: not sure_in either way
        sure_in = (d1 + _HALF_DIAGONAL < et) & (d2 - d1 > 2 * _HALF_DIAGONAL)
    sure_out = d1 - _HALF_DIAGONAL >= et
    k = np.full(len(cells), -1, np.int64)           # per cell: its center, -1 for none or not sure
    k[near] = np.where(sure_in, k1, -1)
    unsure = np.zeros(len(cells), bool)
    unsure[near] = ~(sure_in | sure_out)
    out[:] = k[cell]
    unsure = np.flatnonzero(unsure[cell])
    if len(unsure):
        k, d, _ = nearest(np.stack([vx[unsure], vy[unsure]], 1), centers)
        out[unsure] = np.where(d < et, k, -1)
    return out


def _near_centers(cells, centers, reach):
    """Which (x, y) ``cells`` lie within ``reach`` of some center per axis (a box around each center), marked on a
    mask around the centers; every cell where the mask would exceed ``_MASK_LIMIT`` pixels. A cell outside every
    box is farther than ``reach`` from every center."""
    lo = np.floor(centers.min(0) - reach).astype(np.int64)
    hi = np.ceil(centers.max(0) + reach).astype(np.int64)
    size = hi - lo + 1                               # (columns, rows)
    if size[0] * size[1] > _MASK_LIMIT:
        return np.ones(len(cells), bool)
    mask = np.zeros((size[1], size[0]), bool)
    a = np.ceil(centers - reach).astype(np.int64) - lo
    b = np.floor(centers + reach).astype(np.int64) - lo + 1
    for (x0, y0), (x1, y1) in zip(a.tolist(), b.tolist()):
        mask[y0:y1, x0:x1] = True
    x, y = cells[:, 0] - lo[0], cells[:, 1] - lo[1]
    near = (x >= 0) & (x < size[0]) & (y >= 0) & (y < size[1])
    near[near] = mask[y[near], x[near]]
    return near


def _two_nearest_tree(points, centers, bound):
    """``_two_nearest`` through a KD-tree (three nearest centers within ``bound`` + 1 px, distances then measured
    with np.hypot as there, ties to the lower index). Exact where it matters to step 4 (``bound`` = ET): a
    distance beyond ``bound`` + 1 px comes back as inf, and beyond ET + half a cell diagonal both are "outside"."""
    limit = bound + 1.0
    _, j = cKDTree(centers).query(points, k=3, distance_upper_bound=limit)
    found = j < len(centers)
    j = np.where(found, j, len(centers))              # the tree's "none": sorts after every real index
    c = np.concatenate([centers, [[np.inf, np.inf]]])
    d = np.hypot(points[:, None, 0] - c[j, 0], points[:, None, 1] - c[j, 1])
    d[~found | (d > limit)] = np.inf
    order = np.lexsort((j, d), axis=1)                # by distance, then index
    rows = np.arange(len(points))
    k1, d1, d2 = j[rows, order[:, 0]], d[rows, order[:, 0]], d[rows, order[:, 1]]
    return np.where(np.isfinite(d1), k1, 0), d1, d2


def _two_nearest(points, centers, chunk=1 << 20):
    """Index of the nearest center, its distance and the distance of the second nearest (inf if K = 1)."""
    k1 = np.empty(len(points), np.int64)
    d1 = np.empty(len(points))
    d2 = np.empty(len(points))
    step = max(1, chunk // len(centers))
    for a in range(0, len(points), step):       # chunks bound the (points x centers) memory
        p = points[a:a + step]
        d = np.hypot(p[:, :1] - centers[:, 0], p[:, 1:] - centers[:, 1])
        j = np.argmin(d, axis=1)
        rows = np.arange(len(p))
        k1[a:a + step] = j
        d1[a:a + step] = d[rows, j]
        d[rows, j] = np.inf                     # then the least is the second nearest (faster than np.partition)
        d2[a:a + step] = d.min(1)
    return k1, d1, d2


def _lookup(idx, values, w):
    """label_at(rows, cols) for _center_pixels: ``values[i]`` at the pixel with flat index ``idx[i]`` (idx sorted),
    0 at every other pixel."""
    def label_at(rows, cols):
        flat = rows * w + cols
        if len(idx) == 0:
            return np.zeros(len(flat), np.int64)
        pos = np.minimum(np.searchsorted(idx, flat), len(idx) - 1)
        return np.where(idx[pos] == flat, values[pos], 0)
    return label_at


def _max_center_pixels(fg_threshold):
    """Most pixels that can lie within fg_threshold of a point."""
    r = int(np.ceil(fg_threshold))
    return (2 * r + 1) ** 2


def _center_pixels(label_at, mag2, centers, ids, fg_threshold):
    """The |V| <= fg_threshold pixels that join instance ``ids[i]`` with CM ``centers[i]`` (step 4): within
    fg_threshold of the CM, unlabelled (``label_at(rows, cols) == 0``) and with one of their 8 neighbours
    labelled ``ids[i]``. A pixel claimed by two CMs (closer than 2 fg_threshold) goes to the first.
    Returns (rows, cols, ids)."""
    h, w = mag2.shape
    r = int(np.ceil(fg_threshold))
    oy, ox = np.divmod(np.arange((2 * r + 1) ** 2), 2 * r + 1)
    cy = (np.rint(centers[:, 1]).astype(np.int64)[:, None] + (oy - r)).ravel()
    cx = (np.rint(centers[:, 0]).astype(np.int64)[:, None] + (ox - r)).ravel()
    which = np.repeat(np.arange(len(centers)), len(oy))
    ok = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    ok[ok] = (np.hypot(cx[ok] - centers[which[ok], 0], cy[ok] - centers[which[ok], 1]) <= fg_threshold) & (
        mag2[cy[ok], cx[ok]] <= fg_threshold * fg_threshold)
    if not ok.any():                                # the usual case on a network's output
        return cy[:0], cx[:0], np.asarray(ids)[:0]
    cy, cx, lab = cy[ok], cx[ok], np.asarray(ids)[which[ok]]
    ok = label_at(cy, cx) == 0
    cy, cx, lab = cy[ok], cx[ok], lab[ok]
    ny = cy[:, None] + _RING[:, 0]                  # the 8 neighbours, (n, 8)
    nx = cx[:, None] + _RING[:, 1]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    support = (label_at(np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)) == lab[:, None]) & inside
    support = support.any(1)
    cy, cx, lab = cy[support], cx[support], lab[support]
    _, first = np.unique(cy * w + cx, return_index=True)
    return cy[first], cx[first], lab[first]


def _watershed(mag, fg, centers, shape):
    """Ablation of step 4: watershed on |V| from one marker per kept CM (its nearest pixel), restricted to the
    foreground. Returns (H, W) int64 labels 1..K in kept-cluster order, 0 = background."""
    from skimage.segmentation import watershed

    h, w = shape
    markers = np.zeros((h, w), np.int32)
    my = np.clip(np.rint(centers[:, 1]).astype(np.int64), 0, h - 1)
    mx = np.clip(np.rint(centers[:, 0]).astype(np.int64), 0, w - 1)
    markers[my[::-1], mx[::-1]] = np.arange(len(centers), 0, -1)   # on a shared pixel the stronger CM wins
    mask = fg.copy()
    mask[my, mx] = True
    return watershed(mag, markers, mask=mask).astype(np.int64)
