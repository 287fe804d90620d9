"""Steps 1-2 of DCME decoding as plain loops over arrays, compiled by numba (``dcme_layers/core/decoding.py`` states
the rules and calls them in order): the votes, their cells on the pixel grid, and the greedy clustering within DT
with its exact early stop. Distances are ``np.hypot`` of the difference and ties go to the lower index, as in the
tests' dense reference.

A vote's cell is (rint(x), rint(y)), and a cell stands for the mean of its votes. Only cells within ceil(DT) of the
image take part in step 2; step 4 (``extraction``) reads every vote.
"""
import numpy as np

from dcme_layers.core.jit import kernel

__all__ = ["cast_votes", "bin_votes", "cluster_cells", "cluster_stats"]


@kernel
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


@kernel
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


@kernel
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


@kernel
def _row_major(x, y, w, h):
    """The order of the points (x, y) on a w x h grid in row-major order (two counting sorts)."""
    return _counting_sort(y, _counting_sort(x, np.arange(len(x)), w), h)


@kernel
def _seed_order(n):
    """Cells by votes, most first, ties in row-major order."""
    top = n.max() if len(n) else 0
    return _counting_sort(top - n, np.arange(len(n)), top + 1)


@kernel
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


@kernel
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


@kernel
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


@kernel
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
