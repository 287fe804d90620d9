"""Step 2 of DCME decoding (dcme_layers/decoding.py has the steps and their rules): the greedy clustering of the
votes within DT, vectorised where it can be. Numpy, with OpenCV's integral image for the bound that ends the
clustering of a noisy map early (exactly: see ``_greedy_large``).
"""
from collections import namedtuple

import cv2
import numpy as np

from dcme_layers.voting import vote_cells

_BRUTE_FORCE = 256   # up to this many occupied cells, step 2 compares each seed with every cell (no grid)
# A noisy map's background votes land alone or in pairs: before the cells of 2 and then of 1 vote, step 2 checks
# whether a cluster still to be seeded could matter (``_out_of_reach``), the exact part _HOT_CHUNK cells at a time.
_CHECK_LEVELS = (2, 1)
_HOT_CHUNK = 64

CellGrid = namedtuple("CellGrid", "grid at r window")


def cluster_votes(vx, vy, shape, dt, cells=None, min_votes=0):
    """Step 2: greedy clustering of votes (vx, vy) inside an image of ``shape`` (H, W) with distance DT.

    Arguments:
        vx, vy: (M,) float64 votes (column, row).
        shape: the image's (H, W).
        dt: distance threshold DT (pixels).
        cells: ``vote_cells(vx, vy)`` when already computed.
        min_votes: only clusters of at least this many votes matter to the caller: the clustering stops once no
            cluster still to be seeded could reach it (exact; see ``_greedy_large``). 0: every cluster.
    Returns:
        (cluster, centers, counts, spread): cluster (M,) int64 index of each vote's cluster, -1 for votes more
        than DT outside the image and for those left after a stop; centers (C, 2) float64 mean vote of each
        cluster; counts (C,) int64 votes per cluster; spread (C,) float64 mean squared distance of the cluster's
        votes (at their cells' means) to its center. Clusters are in the order they were seeded (strongest grid
        cell first); after a stop, only those seeded before it (every later one has fewer than min_votes votes).
    """
    h, w = shape
    cells, cell = vote_cells(vx, vy) if cells is None else cells
    m = int(np.ceil(dt))                         # a vote up to DT outside the image may belong to a CM inside
    near = (cells[:, 0] >= -m) & (cells[:, 0] < w + m) & (cells[:, 1] >= -m) & (cells[:, 1] < h + m)
    if not near.any():
        return np.full(len(vx), -1, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0)
    # Sums per cell over all votes (those of the other cells go to their own bins), then the cells near the image.
    n = np.bincount(cell, minlength=len(cells))
    sx = np.bincount(cell, weights=vx, minlength=len(cells))
    sy = np.bincount(cell, weights=vy, minlength=len(cells))
    if not near.all():
        keep = np.flatnonzero(near)
        cells, n, sx, sy = cells.take(keep, 0), n.take(keep), sx.take(keep), sy.take(keep)
    means = np.stack([sx / n, sy / n], axis=1)
    order = _strongest_first(n)
    if len(means) <= _BRUTE_FORCE:
        owner, seeds = _greedy_small(means, order, dt)
    else:
        owner, seeds = _greedy_large(means, n, order, _cell_grid(cells, shape, dt), dt, min_votes)
    done = np.flatnonzero(owner >= 0)            # every cell unless the clustering stopped early
    counts = np.bincount(owner[done], weights=n[done], minlength=seeds)
    centers = np.stack([np.bincount(owner[done], weights=sx[done], minlength=seeds),
                        np.bincount(owner[done], weights=sy[done], minlength=seeds)], axis=1) / counts[:, None]
    # Spread between cells (the spread of the votes inside one pixel cell, <= 1/6 px^2, is left out).
    d2 = ((means[done] - centers[owner[done]]) ** 2).sum(1)
    spread = np.bincount(owner[done], weights=n[done] * d2, minlength=seeds) / counts
    cluster = np.full(len(near), -1, np.int64)   # per cell; those far outside belong to no cluster
    cluster[near] = owner
    return cluster[cell], centers, counts.astype(np.int64), spread


def _strongest_first(n):
    """Step 2's seeding order of cells with ``n`` votes: most votes first, ties by row-major cell order. The many
    single-vote cells (a noisy map's background) come last, already in order: only the others are sorted."""
    multi = np.flatnonzero(n > 1)
    return np.concatenate([multi[np.argsort(-n[multi], kind="stable")], np.flatnonzero(n == 1)])


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


def _cell_grid(cells, shape, dt):
    """A dense grid of cell indices (-1: empty) for step 2 on many cells. A cell mean lies within half a cell of its
    cell, so the cells whose means are closer than DT to a cell's lie in the (2r + 1)^2 window around it,
    r = int(DT) + 1; the grid has room for that window around every cell near the image. Returns
    ``CellGrid(grid (rows, cols) int32, at (N,) int64 flat position of each cell in it, r, window (2r + 1)^2 flat
    offsets)``."""
    r = int(dt) + 1
    pad = int(np.ceil(dt)) + r
    cols = shape[1] + 2 * pad
    grid = np.full((shape[0] + 2 * pad, cols), -1, np.int32)
    at = (cells[:, 1] + pad) * cols + cells[:, 0] + pad
    grid.ravel()[at] = np.arange(len(cells))
    window = ((np.arange(-r, r + 1) * cols)[:, None] + np.arange(-r, r + 1)).ravel()
    return CellGrid(grid, at, r, window)


def _greedy_large(means, n, order, cell_grid, dt, min_votes):
    """Step 2's greedy absorption for many cells (a noisy map): each seed looks up the cells around it in the grid.

    Exact early stop: the cells of more than c votes are all owned once those of c start to seed, so every cluster
    seeded from then on holds only cells unowned at that point (within DT of its seed's mean). Where the cells of
    ``_CHECK_LEVELS`` votes begin, the loop stops when no such cluster can reach ``min_votes`` (``_out_of_reach``);
    the cells left keep owner -1. Returns (owner (N,) int64 cluster per cell, seeds)."""
    grid, at, _, window = cell_grid
    flat = grid.ravel()
    owner = np.full(len(means), -1, np.int64)
    checks = set(np.searchsorted(-n[order], -np.array(_CHECK_LEVELS, int)).tolist()) - {len(order)}
    seeds, start = 0, 0
    for stop in sorted(checks) + [len(order)]:
        for s in order[start:stop].tolist():    # absorbed cells are skipped
            if owner[s] >= 0:
                continue
            near = flat[at[s] + window]
            near = near[near >= 0]
            near = near[owner[near] < 0]
            d = np.hypot(means[near, 0] - means[s, 0], means[near, 1] - means[s, 1])
            owner[near[d < dt]] = seeds
            owner[s] = seeds
            seeds += 1
        start = stop
        if stop < len(order) and min_votes > 0 and _out_of_reach(owner, n, means, cell_grid, dt, min_votes):
            break
    return owner, seeds


def _out_of_reach(owner, n, means, cell_grid, dt, min_votes):
    """True when no cluster seeded from the unowned cells can reach ``min_votes`` votes: for every unowned cell, the
    votes of the unowned cells whose means lie closer than DT to its mean fall short. First an upper bound, the
    unowned votes in the (2r + 1)^2 window around each cell (an integral image; unowned cells hold at most
    ``_CHECK_LEVELS[0]`` votes, so uint8 counts); then the exact sum (``_votes_near``) for the cells where that bound
    reaches min_votes, the highest first."""
    grid, at, r, _ = cell_grid
    free = np.flatnonzero(owner < 0)
    pos = at[free]
    counts = np.zeros(grid.size, np.uint8)
    counts[pos] = n[free]
    total = cv2.integral(counts.reshape(grid.shape)).ravel()   # (rows + 1, cols + 1): sums above and left
    cols, side = grid.shape[1] + 1, 2 * r + 1
    corner = pos + pos // grid.shape[1] - r * cols - r         # top-left corner of each window in total
    box = total[corner + side * cols + side] - total[corner + side] - total[corner + side * cols] + total[corner]
    hot = np.flatnonzero(box >= min_votes)
    hot = free[hot[np.argsort(-box[hot], kind="stable")]]
    for a in range(0, len(hot), _HOT_CHUNK):
        if _votes_near(hot[a:a + _HOT_CHUNK], owner, n, means, cell_grid, dt).max() >= min_votes:
            return False
    return True


def _votes_near(seeds, owner, n, means, cell_grid, dt):
    """(S,) float64 votes of the unowned cells whose means lie closer than DT to each seed cell's mean."""
    grid, at, _, window = cell_grid
    j = grid.ravel()[at[seeds, None] + window]   # (S, (2r + 1)^2) cell indices, -1: empty
    occupied = j >= 0
    j, row = j[occupied], np.repeat(np.arange(len(seeds)), occupied.sum(1))
    free = owner[j] < 0
    j, row = j[free], row[free]
    s = seeds[row]
    near = np.hypot(means[j, 0] - means[s, 0], means[j, 1] - means[s, 1]) < dt
    return np.bincount(row[near], weights=n[j[near]], minlength=len(seeds))
