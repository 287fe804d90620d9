"""Steps 3-4 of DCME decoding as plain loops over arrays, compiled by numba (``dcme_layers/core/decoding.py`` states
the rules and calls them in order): the zero-vector CM pixels that join a CM (steps 3 and 4) and the assignment of
every vote to the nearest CM within ET (step 4). Distances are ``np.hypot`` of the difference and ties go to the
lower index, as in the tests' dense reference.
"""
import numpy as np

from dcme_layers.core.jit import kernel

__all__ = ["max_center_pixels", "center_pixels", "assign_votes", "paint_votes"]

_HALF_DIAGONAL = 0.5 * np.sqrt(2.0) + 1e-9   # farthest a vote lies from its cell's centre (with a rounding margin)


def max_center_pixels(fg_threshold):
    """Most pixels that can lie within fg_threshold of a point (the zero-vector CM pixels of step 3)."""
    r = int(np.ceil(fg_threshold))
    return (2 * r + 1) ** 2


@kernel
def _label_at(idx, owner, flat):
    """owner[i] + 1 of the voter at flat index ``flat`` (idx[i] == flat; idx ascending), 0 for a non-voter."""
    i = np.searchsorted(idx, flat)
    return owner[i] + 1 if i < len(idx) and idx[i] == flat else 0


@kernel
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


@kernel
def _bucket_span(cx, cy, x0, y0, side, bw, bh):
    """The 3x3 buckets around the center at (cx, cy), clipped to the grid: (bx0, bx1, by0, by1)."""
    bx, by = int((cx - x0) / side), int((cy - y0) / side)
    return max(bx - 1, 0), min(bx + 2, bw), max(by - 1, 0), min(by + 2, bh)


@kernel
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


@kernel
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


@kernel
def assign_votes(vx, vy, cell, n, gx, gy, shape, margin, centers, et):
    """Step 4: index of the nearest center closer than ET to each vote, -1 where none is (ties: the lower index).

    A cell whose centre lies farther than ET + 2 px from every center on some axis (not marked on the grid) holds
    no vote within ET. Elsewhere the centers are bucketed by ET + 2 px, so a vote looks at its bucket's list (the
    centers in the 3x3 buckets around it). A cell of several votes whose centre lies decisively inside one center's
    ET-disc and nearer to it than to any other (margins of half a cell diagonal) sends all its votes there, one
    decisively outside every disc none; the other votes are measured one by one.

    Arguments:
        vx, vy: (M,) float64 votes. cell, n, gx, gy, margin: ``voting.bin_votes``' cell per vote, votes per cell, cell
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


@kernel
def paint_votes(labels, idx, k, relabel):
    """labels.flat[idx[i]] = relabel[k[i] + 1]: the voters' labels on the (H, W) int32 image (k = -1: none)."""
    flat = labels.reshape(-1)
    for i in range(len(idx)):
        flat[idx[i]] = relabel[k[i] + 1]
