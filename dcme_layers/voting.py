"""The vectorised kernels of DCME decoding's steps (dcme_layers/decoding.py has the steps and their rules): votes
binned on the pixel grid, step 2's greedy clustering, step 4's nearest-center assignment, the zero-vector CM pixels,
and the watershed ablation. Pure numpy, scipy's KD-tree for noisy maps, scikit-image for the watershed.
"""
from functools import partial

import numpy as np
from scipy.spatial import cKDTree

_FAR = 1 << 20       # votes are binned into cells with coordinates clipped to +-_FAR (far votes stay far)
_BRUTE_FORCE = 256   # up to this many occupied cells, step 2 compares each seed with every cell (no KD-tree)
# Up to this many kept centers, step 4 measures every (cell, center) distance; beyond (a poorly trained net's output
# has hundreds), a KD-tree over the centers finds the two nearest ones.
_BRUTE_FORCE_CENTERS = 32
_HALF_DIAGONAL = 0.5 * np.sqrt(2.0) + 1e-9
_RING = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])   # the 8 neighbours (dy, dx)


def vote_cells(vx, vy, shape=None):
    """Bin votes on the pixel grid: (cells, cell) with cells (N, 2) int64 the occupied (x, y) cells in row-major
    order and cell (M,) the index of each vote's cell. Given the image ``shape`` (H, W), many votes (more than an
    eighth of the pixels) and all of them inside the image, a bincount over the image replaces the sort (same
    result, faster)."""
    cx = np.clip(np.rint(vx), -_FAR, _FAR).astype(np.int64)
    cy = np.clip(np.rint(vy), -_FAR, _FAR).astype(np.int64)
    if shape is not None and 8 * len(cx) > shape[0] * shape[1]:
        h, w = shape
        if cx.min() >= 0 and cy.min() >= 0 and cx.max() < w and cy.max() < h:
            key = cy * w + cx
            occupied = np.flatnonzero(np.bincount(key, minlength=h * w))
            lookup = np.empty(h * w, np.int64)
            lookup[occupied] = np.arange(len(occupied))
            oy, ox = np.divmod(occupied, w)
            return np.stack([ox, oy], axis=1), lookup[key]
    keys, cell = np.unique((cy + _FAR) * (4 * _FAR) + (cx + _FAR), return_inverse=True)
    cells = np.stack([keys % (4 * _FAR) - _FAR, keys // (4 * _FAR) - _FAR], axis=1)
    return cells, cell.ravel()


def cluster_votes(vx, vy, shape, dt, cells=None):
    """Step 2: greedy clustering of votes (vx, vy) inside an image of ``shape`` (H, W) with distance DT.

    ``cells`` is ``vote_cells(vx, vy)`` when already computed. Returns (cluster, centers, counts, spread):
    cluster (M,) int64 index of each vote's cluster, -1 for votes more than DT outside the image; centers (C, 2)
    float64 mean vote of each cluster; counts (C,) int64 votes per cluster; spread (C,) float64 mean squared
    distance of the cluster's votes (at their cells' means) to its center. Clusters are in the order they were
    seeded (strongest grid cell first).
    """
    h, w = shape
    cells, cell = vote_cells(vx, vy) if cells is None else cells
    cluster = np.full(len(vx), -1, np.int64)
    m = int(np.ceil(dt))                         # a vote up to DT outside the image may belong to a CM inside
    inside_cell = (cells[:, 0] >= -m) & (cells[:, 0] < w + m) & (cells[:, 1] >= -m) & (cells[:, 1] < h + m)
    inside = inside_cell[cell]
    if not inside.any():
        return cluster, np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0)
    if inside_cell.all():                        # the usual case: no renumbering needed
        occupied, c, x, y = cells, cell, vx, vy
    else:                                        # renumber the occupied cells near the image 0..N-1 (in order)
        occupied = cells[inside_cell]
        c = (np.cumsum(inside_cell) - 1)[cell[inside]]
        x, y = vx[inside], vy[inside]
    n = np.bincount(c, minlength=len(occupied))
    sx = np.bincount(c, weights=x, minlength=len(occupied))
    sy = np.bincount(c, weights=y, minlength=len(occupied))
    means = np.stack([sx / n, sy / n], axis=1)
    order = np.lexsort((np.arange(len(n)), -n))  # most votes first, ties by row-major cell order
    if len(means) <= _BRUTE_FORCE:
        owner, seeds = _greedy_small(means, order, dt)
    else:
        owner, seeds = _greedy_large(means, order, dt)
    counts = np.bincount(owner, weights=n, minlength=seeds)
    centers = np.stack([np.bincount(owner, weights=sx, minlength=seeds),
                        np.bincount(owner, weights=sy, minlength=seeds)], axis=1) / counts[:, None]
    # Spread between cells (the spread of the votes inside one pixel cell, <= 1/6 px^2, is left out).
    d2 = ((means - centers[owner]) ** 2).sum(1)
    spread = np.bincount(owner, weights=n * d2, minlength=seeds) / counts
    cluster[inside] = owner[c]
    return cluster, centers, counts.astype(np.int64), spread


def _greedy_small(means, order, dt):
    """Step 2's greedy absorption for a few cells (a clean map): all pairwise distances, then plain Python."""
    d = np.hypot(means[:, None, 0] - means[None, :, 0], means[:, None, 1] - means[None, :, 1])
    rows, cols = np.nonzero(d < dt)
    near = np.split(cols, np.cumsum(np.bincount(rows, minlength=len(means)))[:-1])
    owner = [-1] * len(means)
    seeds = 0
    for s in order.tolist():
        if owner[s] < 0:
            for j in near[s].tolist():           # includes s itself
                if owner[j] < 0:
                    owner[j] = seeds
            seeds += 1
    return np.array(owner, np.int64), seeds


def _greedy_large(means, order, dt):
    """Step 2's greedy absorption for many cells (a noisy map): one KD-tree ball query per seed."""
    owner = np.full(len(means), -1, np.int64)
    tree = cKDTree(means)
    seeds = 0
    for s in order.tolist():                    # one pass over the cells; absorbed cells are skipped
        if owner[s] >= 0:
            continue
        near = np.asarray(tree.query_ball_point(means[s], dt), np.int64)
        near = near[owner[near] < 0]
        d = np.hypot(means[near, 0] - means[s, 0], means[near, 1] - means[s, 1])
        owner[near[d < dt]] = seeds
        owner[s] = seeds
        seeds += 1
    return owner, seeds


def assign_votes(vx, vy, centers, et, cells=None):
    """Step 4: index of the nearest center closer than ET to each vote (x, y), -1 where none is.

    Exact and vectorized: votes are grouped by pixel cell (``cells`` = ``vote_cells(vx, vy)`` when already
    computed); a cell whose center is decisively inside one center's ET-disc and nearer to it than to any other
    (margins of half a cell diagonal) sends all its votes there, a cell decisively outside every disc none; the
    votes of the remaining (boundary) cells get exact distances.
    """
    out = np.full(len(vx), -1, np.int64)
    if len(vx) == 0 or len(centers) == 0:
        return out
    cells, cell = vote_cells(vx, vy) if cells is None else cells
    nearest = _two_nearest if len(centers) <= _BRUTE_FORCE_CENTERS else partial(_two_nearest_tree, bound=et)
    k1, d1, d2 = nearest(cells.astype(np.float64), centers)
    with np.errstate(invalid="ignore"):             # inf - inf where no center is near: not sure_in either way
        sure_in = (d1 + _HALF_DIAGONAL < et) & (d2 - d1 > 2 * _HALF_DIAGONAL)
    sure_out = d1 - _HALF_DIAGONAL >= et
    out[:] = np.where(sure_in, k1, -1)[cell]
    unsure = np.flatnonzero(~(sure_in | sure_out)[cell])
    if len(unsure):
        k, d, _ = nearest(np.stack([vx[unsure], vy[unsure]], 1), centers)
        out[unsure] = np.where(d < et, k, -1)
    return out


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
    d2 = np.full(len(points), np.inf)
    step = max(1, chunk // len(centers))
    for a in range(0, len(points), step):       # chunks bound the (points x centers) memory
        p = points[a:a + step]
        d = np.hypot(p[:, :1] - centers[:, 0], p[:, 1:] - centers[:, 1])
        j = np.argmin(d, axis=1)
        k1[a:a + step] = j
        d1[a:a + step] = d[np.arange(len(p)), j]
        if len(centers) > 1:
            d2[a:a + step] = np.partition(d, 1, axis=1)[:, 1]
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
