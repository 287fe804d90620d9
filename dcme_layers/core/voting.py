"""The four steps of DCME decoding as plain loops over arrays, compiled by numba (``dcme_layers/core/decoding.py`` states
the rules and calls them in order). Distances are ``np.hypot`` of (vote - center) and ties go to the lower index,
as in the tests' dense reference.

Votes are binned on the pixel grid: a vote's cell is (rint(x), rint(y)), and a cell stands for the mean of its
votes. Only cells within ceil(DT) of the image take part in step 2; step 4 reads every vote.
"""
import os
from pathlib import Path

import numba
import numpy as np

# Compiled kernels are cached beside the Caffe build (tools/setup_caffe.sh's DCME_CACHE), outside the repository;
# NUMBA_CACHE_DIR, when set, wins.
if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(Path(os.environ.get("DCME_CACHE") or Path.home() / ".cache" / "dcme-caffe") / "numba")
from numba import njit  # noqa: E402  (after the cache folder is set)

__all__ = ["cast_votes", "bin_votes", "cluster_cells", "cluster_stats", "center_pixels", "assign_votes",
           "paint_votes", "max_center_pixels"]

_HALF_DIAGONAL = 0.5 * np.sqrt(2.0) + 1e-9   # farthest a vote lies from its cell's centre (with a rounding margin)


@njit(cache=True, nogil=True)
def cast_votes(v, fg2):
    """Step 1: every foreground pixel p (|V(p)|^2 > fg2) votes for p + V(p).

    Arguments:
        v: (2, H, W) float32 vector map (dx, dy), C-contiguous.
        fg2: float32 squared foreground threshold.
    Returns:
        (mag2 (H, W) float32 |V|^2, idx (M,) int64 flat index of each voter (ascending), vx (M,), vy (M,) float64
        votes, bad: pixels whose |V|^2 is not finite).
    """
    _, h, w = v.shape
    a, b = v[0].ravel(), v[1].ravel()
    mag2 = np.empty(h * w, np.float32)
    m = 0
    bad = 0
    for i in range(h * w):                           # one vectorisable pass, then the voters
        s = a[i] * a[i] + b[i] * b[i]                # float32, as numpy computes |V|^2 on the float32 map
        mag2[i] = s
        m += s > fg2
        bad += not s < np.inf
    idx = np.empty(m, np.int64)
    vx = np.empty(m)
    vy = np.empty(m)
    m = 0
    for y in range(h if len(idx) else 0):
        for x in range(w):
            i = y * w + x
            if mag2[i] > fg2:
                idx[m] = i
                vx[m] = x + np.float64(a[i])
                vy[m] = y + np.float64(b[i])
                m += 1
    return mag2.reshape(h, w), idx, vx, vy, bad


@njit(cache=True, nogil=True)
def bin_votes(vx, vy, h, w, margin):
    """Step 2's cells: the votes binned on the pixel grid, cells numbered in row-major order.

    Arguments:
        vx, vy: (M,) float64 votes. h, w: the image size. margin: cells up to this far outside the image count.
    Returns:
        (cell (M,) int64 cell of each vote, -1 beyond the margin; n (C,) int64 votes, mean_x, mean_y (C,) float64
        mean vote, sx, sy (C,) float64 vote sums, gx, gy (C,) int64 each cell's column and row on the grid of
        h + 2 margin rows and w + 2 margin columns).
    """
    gh, gw = h + 2 * margin, w + 2 * margin
    grid = np.full(gh * gw, -1, np.int32)            # the cell at each position, in first-vote order
    cell = np.empty(len(vx), np.int64)
    fx = np.empty(len(vx), np.int64)                 # each cell's grid column and row, in first-vote order
    fy = np.empty(len(vx), np.int64)
    fn = np.zeros(len(vx), np.int64)                 # its votes and their sums, in vote order
    fsx = np.zeros(len(vx))
    fsy = np.zeros(len(vx))
    count = 0
    for i in range(len(vx)):
        cx, cy = np.rint(vx[i]), np.rint(vy[i])
        if cx < -margin or cx >= w + margin or cy < -margin or cy >= h + margin:
            cell[i] = -1
            continue
        x, y = int(cx) + margin, int(cy) + margin
        g = y * gw + x
        c = grid[g]
        if c < 0:
            c = grid[g] = count
            fx[count], fy[count] = x, y
            count += 1
        cell[i] = c
        fn[c] += 1
        fsx[c] += vx[i]
        fsy[c] += vy[i]
    first = _row_major(fx[:count], fy[:count], gw, gh)
    rank = np.empty(count, np.int64)                 # first-vote order -> row-major order
    rank[first] = np.arange(count)
    for i in range(len(vx)):
        if cell[i] >= 0:
            cell[i] = rank[cell[i]]
    n, sx, sy = fn[first], fsx[first], fsy[first]
    gx, gy = fx[first], fy[first]
    return cell, n, sx / n, sy / n, sx, sy, gx, gy


@njit(cache=True, nogil=True)
def _counting_sort(key, order, size):
    """``order`` stably sorted by ``key[order]`` (integers in [0, size))."""
    start = np.zeros(size + 1, np.int64)
    for k in order:
        start[key[k] + 1] += 1
    for b in range(size):
        start[b + 1] += start[b]
    out = np.empty_like(order)
    for k in order:
        out[start[key[k]]] = k
        start[key[k]] += 1
    return out


@njit(cache=True, nogil=True)
def _row_major(x, y, w, h):
    """The order of the points (x, y) on a w x h grid in row-major order (two counting sorts)."""
    return _counting_sort(y, _counting_sort(x, np.arange(len(x)), w), h)


@njit(cache=True, nogil=True)
def _seed_order(n):
    """Cells by votes, most first, ties in row-major order."""
    top = n.max() if len(n) else 0
    return _counting_sort(top - n, np.arange(len(n)), top + 1)


@njit(cache=True, nogil=True)
def _gather(s, gx, gy, rows, n, mean_x, mean_y, owner, dt, r, label):
    """The unowned cells whose means lie closer than DT to cell ``s``'s (``s`` included): with ``label`` >= 0 they
    join that cluster. They lie in the (2r + 1)^2 window around ``s``; cells are in row-major order (row y holds
    cells rows[y]..rows[y + 1]), so each window row is a binary search away. Returns their votes."""
    votes = 0
    for y in range(max(gy[s] - r, 0), min(gy[s] + r + 1, len(rows) - 1)):
        j = rows[y] + np.searchsorted(gx[rows[y]:rows[y + 1]], gx[s] - r)
        while j < rows[y + 1] and gx[j] <= gx[s] + r:
            if owner[j] < 0 and np.hypot(mean_x[j] - mean_x[s], mean_y[j] - mean_y[s]) < dt:
                votes += n[j]
                if label >= 0:
                    owner[j] = label
            j += 1
    return votes


@njit(cache=True, nogil=True)
def _out_of_reach(gx, gy, rows, gw, n, mean_x, mean_y, owner, dt, r, min_votes):
    """Whether no cluster seeded from the unowned cells can reach ``min_votes`` votes. First a bound: the unowned
    votes in the 2x2 blocks that cover a cell's (2r + 1)^2 window (an integral image); then, where it reaches
    min_votes, the exact count within DT."""
    gh = len(rows) - 1
    total = np.zeros((gh // 2 + 2, gw // 2 + 2), np.int32)
    for c in range(len(n)):
        if owner[c] < 0:
            total[(gy[c] >> 1) + 1, (gx[c] >> 1) + 1] += n[c]
    th, tw = total.shape
    for y in range(1, th):
        for x in range(1, tw):
            total[y, x] += total[y, x - 1] + total[y - 1, x] - total[y - 1, x - 1]
    for c in range(len(n)):
        if owner[c] >= 0:
            continue
        b0, b1 = max(gy[c] - r, 0) >> 1, (min(gy[c] + r, gh - 1) >> 1) + 1
        a0, a1 = max(gx[c] - r, 0) >> 1, (min(gx[c] + r, gw - 1) >> 1) + 1
        if total[b1, a1] - total[b0, a1] - total[b1, a0] + total[b0, a0] < min_votes:
            continue
        if _gather(c, gx, gy, rows, n, mean_x, mean_y, owner, dt, r, -1) >= min_votes:
            return False
    return True


@njit(cache=True, nogil=True)
def cluster_cells(gx, gy, gh, gw, n, mean_x, mean_y, dt, min_votes):
    """Step 2: greedy clustering of the cells within DT. The strongest unowned cell (most votes, ties in row-major
    order) seeds a cluster that absorbs every unowned cell whose mean lies closer than DT to the seed's; repeat.

    Exact early stop: before the seeds of 2 and then of 1 vote, when no cluster left to seed can reach
    ``min_votes`` (``_out_of_reach``), the rest stays unowned (0: never stop).

    Arguments:
        gx, gy, n, mean_x, mean_y: ``bin_votes``' cells (row-major). gh, gw: its grid's size. dt: DT in pixels.
        min_votes: see above.
    Returns:
        (owner (C,) int64 cluster of each cell in seeding order, -1 after a stop; the number of clusters).
    """
    r = int(dt) + 1                                   # a mean lies within half a cell of its cell
    rows = np.zeros(gh + 1, np.int64)                 # row y's cells: rows[y]..rows[y + 1]
    for c in range(len(gy)):
        rows[gy[c] + 1] += 1
    rows = np.cumsum(rows)
    owner = np.full(len(n), -1, np.int64)
    seeds = 0
    level = 3                                         # the next check comes before the seeds of fewer votes
    for s in _seed_order(n):
        if owner[s] >= 0:
            continue
        if min_votes > 0 and n[s] < level:
            level = n[s]
            if _out_of_reach(gx, gy, rows, gw, n, mean_x, mean_y, owner, dt, r, min_votes):
                break
        _gather(s, gx, gy, rows, n, mean_x, mean_y, owner, dt, r, seeds)
        seeds += 1
    return owner, seeds


@njit(cache=True, nogil=True)
def cluster_stats(owner, seeds, n, sx, sy, mean_x, mean_y):
    """Each cluster's votes, CM (the mean of its votes) and spread (the mean squared distance of its cells' means
    to the CM, weighted by votes; cells summed in row-major order).

    Returns:
        (counts (K,) int64, centers (K, 2) float64 (x, y), spread (K,) float64).
    """
    total = np.zeros(seeds)
    csx = np.zeros(seeds)
    csy = np.zeros(seeds)
    for c in range(len(n)):
        k = owner[c]
        if k >= 0:
            total[k] += n[c]
            csx[k] += sx[c]
            csy[k] += sy[c]
    centers = np.empty((seeds, 2))
    for k in range(seeds):
        centers[k, 0] = csx[k] / total[k]
        centers[k, 1] = csy[k] / total[k]
    spread = np.zeros(seeds)
    for c in range(len(n)):
        k = owner[c]
        if k >= 0:
            dx, dy = mean_x[c] - centers[k, 0], mean_y[c] - centers[k, 1]
            spread[k] += n[c] * (dx * dx + dy * dy)
    return total.astype(np.int64), centers, spread / total


def max_center_pixels(fg_threshold):
    """Most pixels that can lie within fg_threshold of a point (the zero-vector CM pixels of step 3)."""
    r = int(np.ceil(fg_threshold))
    return (2 * r + 1) ** 2


@njit(cache=True, nogil=True)
def _label_at(idx, owner, flat):
    """owner[i] + 1 of the voter at flat index ``flat`` (idx[i] == flat; idx ascending), 0 for a non-voter."""
    i = np.searchsorted(idx, flat)
    return owner[i] + 1 if i < len(idx) and idx[i] == flat else 0


@njit(cache=True, nogil=True)
def center_pixels(idx, owner, mag2, fg, fg2, centers, ids):
    """The zero-vector pixels (|V|^2 <= fg2) that join instance ``ids[i]`` with CM ``centers[i]``: within ``fg`` of
    the CM, unlabelled and with one of their 8 neighbours labelled ``ids[i]``. A pixel claimed by two CMs goes to
    the first.

    Arguments:
        idx, owner: (M,) int64 the labelled pixels' flat indices (ascending) and their 0-based labels (-1: none).
        mag2: (H, W) float32 |V|^2. fg, fg2: fg_threshold and its float32 square.
        centers: (K, 2) float64 (x, y). ids: (K,) int64 1-based labels.
    Returns:
        (rows, cols, ids) of the joining pixels, (P,) int64 each.
    """
    h, w = mag2.shape
    r = int(np.ceil(fg))
    side = 2 * r + 1
    rows = np.empty(len(centers) * side * side, np.int64)
    cols = np.empty_like(rows)
    lab = np.empty_like(rows)
    p = 0
    for i in range(len(centers)):
        x0, y0 = int(np.rint(centers[i, 0])), int(np.rint(centers[i, 1]))
        for y in range(y0 - r, y0 + r + 1):
            for x in range(x0 - r, x0 + r + 1):
                if y < 0 or y >= h or x < 0 or x >= w or not mag2[y, x] <= fg2:
                    continue
                if not np.hypot(x - centers[i, 0], y - centers[i, 1]) <= fg or _label_at(idx, owner, y * w + x):
                    continue
                near = False
                for ny in range(max(y - 1, 0), min(y + 2, h)):
                    for nx in range(max(x - 1, 0), min(x + 2, w)):
                        near = near or _label_at(idx, owner, ny * w + nx) == ids[i]
                if near:
                    rows[p], cols[p], lab[p] = y, x, ids[i]
                    p += 1
    first = np.ones(p, np.bool_)                     # a pixel claimed twice: the first claim stands
    for a in range(p):
        for b in range(a):
            if first[b] and rows[a] == rows[b] and cols[a] == cols[b]:
                first[a] = False
                break
    return rows[:p][first], cols[:p][first], lab[:p][first]


@njit(cache=True, nogil=True)
def _bucket_span(cx, cy, x0, y0, side, bw, bh):
    """The 3x3 buckets around the center at (cx, cy), clipped to the grid: (bx0, bx1, by0, by1)."""
    bx, by = int((cx - x0) / side), int((cy - y0) / side)
    return max(bx - 1, 0), min(bx + 2, bw), max(by - 1, 0), min(by + 2, bh)


@njit(cache=True, nogil=True)
def _center_buckets(centers, side):
    """Buckets of ``side`` px over the centers, each listing the centers in it and its 8 neighbours. Returns
    (x0, y0 the grid's corner, bw, bh its size in buckets, start (bw * bh + 1,) int64 offsets into members,
    members (9 K,) int64 center indices)."""
    cx, cy = centers[:, 0], centers[:, 1]
    x0, y0 = cx.min() - side, cy.min() - side
    bw = int((cx.max() - x0) / side) + 2
    bh = int((cy.max() - y0) / side) + 2
    start = np.zeros(bw * bh + 1, np.int64)
    for k in range(len(centers)):
        bx0, bx1, by0, by1 = _bucket_span(cx[k], cy[k], x0, y0, side, bw, bh)
        for b_y in range(by0, by1):
            for b_x in range(bx0, bx1):
                start[b_y * bw + b_x + 1] += 1
    start = np.cumsum(start)
    at = start[:-1].copy()
    members = np.empty(start[-1], np.int64)
    for k in range(len(centers)):
        bx0, bx1, by0, by1 = _bucket_span(cx[k], cy[k], x0, y0, side, bw, bh)
        for b_y in range(by0, by1):
            for b_x in range(bx0, bx1):
                members[at[b_y * bw + b_x]] = k
                at[b_y * bw + b_x] += 1
    return x0, y0, bw, bh, start, members


@njit(cache=True, nogil=True)
def _nearest(x, y, centers, buckets, reach2):
    """The two nearest centers to (x, y) among those of its bucket (index, distance, second distance); centers
    farther than sqrt(reach2) count as absent (inf). Ties go to the lower index."""
    x0, y0, bw, bh, start, members, side = buckets
    k1, d1, d2 = -1, np.inf, np.inf
    bx, by = np.floor((x - x0) / side), np.floor((y - y0) / side)
    if not (0 <= bx < bw and 0 <= by < bh):
        return k1, d1, d2
    b = int(by) * bw + int(bx)
    for t in range(start[b], start[b + 1]):
        k = members[t]
        dx, dy = x - centers[k, 0], y - centers[k, 1]
        if dx * dx + dy * dy > reach2:
            continue
        d = np.hypot(dx, dy)
        if d < d1 or (d == d1 and k < k1):
            k1, d1, d2 = k, d, d1
        elif d < d2:
            d2 = d
    return k1, d1, d2


@njit(cache=True, nogil=True)
def assign_votes(vx, vy, cell, n, gx, gy, shape, margin, centers, et):
    """Step 4: index of the nearest center closer than ET to each vote, -1 where none is (ties: the lower index).

    A cell whose centre lies farther than ET + 2 px from every center on some axis (not marked on the grid) holds
    no vote within ET. Elsewhere the centers are bucketed by ET + 2 px, so a vote looks at its bucket's list (the
    centers in the 3x3 buckets around it). A cell of several votes whose centre lies decisively inside one center's
    ET-disc and nearer to it than to any other (margins of half a cell diagonal) sends all its votes there, one
    decisively outside every disc none; the other votes are measured one by one.

    Arguments:
        vx, vy: (M,) float64 votes. cell, n, gx, gy, margin: ``bin_votes``' cell per vote, votes per cell, cell
            columns and rows, and margin. shape: the image's (H, W). centers: (K, 2) float64 (x, y). et: ET in
            pixels.
    Returns:
        (k (M,) int64 center per vote, -1 for none; votes (K,) int64 per center).
    """
    k_of = np.full(len(vx), -1, np.int64)
    votes = np.zeros(len(centers), np.int64)
    if len(centers) == 0:
        return k_of, votes
    side = et + 2.0
    gh, gw = shape[0] + 2 * margin, shape[1] + 2 * margin
    near = np.zeros((gh, gw), np.bool_)              # cells within ET + 2 px of a center on both axes
    for k in range(len(centers)):
        x0, x1 = np.floor(centers[k, 0] - side) + margin, np.ceil(centers[k, 0] + side) + margin + 1
        y0, y1 = np.floor(centers[k, 1] - side) + margin, np.ceil(centers[k, 1] + side) + margin + 1
        near[int(max(y0, 0)):int(min(max(y1, 0), gh)), int(max(x0, 0)):int(min(max(x1, 0), gw))] = True
    buckets = _center_buckets(centers, side) + (side,)
    reach2 = (et + 1.0) * (et + 1.0)                 # farther centers can neither win nor matter to a margin
    state = np.full(len(n), -3, np.int64)            # per cell: its center, -1 none, -3 measure each vote
    for c in range(len(n)):
        if not near[gy[c], gx[c]]:
            state[c] = -1
        elif n[c] > 1:
            k1, d1, d2 = _nearest(np.float64(gx[c] - margin), np.float64(gy[c] - margin), centers, buckets, reach2)
            if d1 + _HALF_DIAGONAL < et and d2 - d1 > 2 * _HALF_DIAGONAL:
                state[c] = k1
            elif d1 - _HALF_DIAGONAL >= et:
                state[c] = -1
    for i in range(len(vx)):
        k = state[cell[i]] if cell[i] >= 0 else -3
        if k == -3:
            k1, d1, _ = _nearest(vx[i], vy[i], centers, buckets, reach2)
            k = k1 if d1 < et else -1
        if k >= 0:
            k_of[i] = k
            votes[k] += 1
    return k_of, votes


@njit(cache=True, nogil=True)
def paint_votes(labels, idx, k, relabel):
    """labels.flat[idx[i]] = relabel[k[i] + 1]: the voters' labels on the (H, W) int32 image (k = -1: none)."""
    flat = labels.reshape(-1)
    for i in range(len(idx)):
        flat[idx[i]] = relabel[k[i] + 1]
