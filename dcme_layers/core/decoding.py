"""DCME decoding (arXiv 1711.09060, Section 3): turn a 2-D vector map into instances. The steps run as loops
compiled by numba (``voting``: steps 1-2, ``extraction``: steps 3-4); scikit-image draws the watershed ablation.

A vector map ``V`` has shape (2, H, W): channel 0 = dx (columns), channel 1 = dy (rows), in pixels of the encoded
resolution (``encoding.vector_map``, Eq. 2). Every instance pixel p stores V(p) = CM - p, so p + V(p) is that
pixel's vote for its instance's center of mass (CM, Eq. 1). Decoding follows the paper's four steps; thresholds
are in pixels (DT, ET) and votes (VT) of the encoded resolution (``Thresholds``; the paper's in ``paper.THRESHOLDS``,
``thresholds.scale_thresholds`` for other sizes). Steps 1-3 are ``find_centers``, step 4 ``assign_pixels`` (its
watershed ablation ``watershed_pixels``), and ``decode`` calls them:

1. **CM proposals.** A pixel is *foreground* when |V| > ``fg_threshold`` (default 0.5 px): the ground-truth
   background is exactly 0, and a ground-truth instance pixel with |V| <= 0.5 lies within half a pixel of its CM.
   Every foreground pixel votes for p + V(p). Votes landing more than DT outside the image take no part in
   step 2 (every CM lies inside the image) but may still join an instance in step 4.
2. **Clustering (DT).** Votes are binned on the pixel grid; each occupied cell stands for the mean of its votes.
   Greedy and deterministic: the cell with the most votes (ties: first in row-major order) seeds a cluster that
   absorbs every unassigned cell whose mean lies closer than DT to the seed's; repeat with the strongest
   unassigned cell. A cluster's CM is the mean of all its votes. So two instances whose CMs are closer than DT
   merge into one (as the paper says), and a CM farther than DT from every other CM makes a cluster of its own.
3. **Vote threshold (VT).** Clusters with fewer than VT votes are dropped. The zero-vector pixel(s) at a
   cluster's CM (see step 4) count as votes too, so a ground-truth instance casts one vote per pixel.
4. **Assignment (ET).** Every foreground pixel whose vote lands closer than ET to a kept CM joins the nearest
   kept CM (the fringe votes of a noisy instance, split off by step 2 into small dropped clusters, come back).
   A pixel with |V| <= fg_threshold -- the pixel at an instance's CM, indistinguishable from the background --
   joins a kept CM when it lies within fg_threshold of it and one of its 8 neighbours belongs to that instance.
   All other pixels are background. An instance left without pixels is dropped.

Ablation (``method="watershed"``): steps 1-3 as above; step 4 is a watershed (scikit-image) on the magnitude map
|V| from one marker per kept CM (its nearest pixel), within the foreground, plus the CM pixels as above.

Exactness on a ground-truth map (every instance pixel votes exactly for its CM): each instance with at least VT
pixels whose CM is farther than DT from every other CM is recovered exactly (IoU 1; at most a background pixel
lying within fg_threshold of its CM may join), unless the votes of a *dropped* (< VT pixels) or *merged* instance
land within ET of its CM: the paper's step 4 then hands those pixels to it (tests/test_decoding.py checks this
rule on generated and real Cityscapes maps).

Scores (the Cityscapes AP needs a ranking): ``votes / (votes + VT) * exp(-spread / ET^2)`` with spread the mean
squared distance of the cluster's votes to its CM; in (0, 1). More and tighter votes rank higher; on a
ground-truth map the spread is ~0 (> 0 only for merged instances) and larger instances rank first.
"""
from collections import namedtuple

import numpy as np

from dcme_layers.core import extraction, voting
from dcme_layers.core.thresholds import FG_THRESHOLD, check_thresholds
from dcme_layers.util.errors import DecodingError

__all__ = ["METHODS", "Decoded", "Votes", "Centers", "Assignment", "decode", "decode_kept", "find_centers",
           "assign_pixels", "watershed_pixels"]

#: Step 4's methods: the paper's vote assignment and its watershed ablation.
METHODS = ("vote", "watershed")


Decoded = namedtuple("Decoded", "labels centers votes scores")
Decoded.__doc__ = """Decoded instances of one vector map.

labels: (H, W) int32, 0 = background, 1..K = instances (ordered by votes, most first);
centers: (K, 2) float64 CM of each instance as (x, y) = (column, row);
votes: (K,) int64 votes of the instance's cluster (steps 2-3), plus its zero-vector CM pixels (step 4);
scores: (K,) float32 confidence in (0, 1] for ranking (see the module docstring)."""

Votes = namedtuple("Votes", "idx x y mag2 cell n gx gy margin")
Votes.__doc__ = """Step 1's votes of one vector map of shape (2, H, W), M foreground pixels, binned for step 2.

idx: (M,) int64 flat (row-major) index of each foreground pixel, ascending;
x, y: (M,) float64 where each one votes, p + V(p) as (column, row);
mag2: (H, W) float32 squared magnitude |V|^2 of every pixel;
cell: (M,) int64 the vote's cell (``voting.bin_votes``), -1 more than ``margin`` outside the image;
n: (C,) int64 votes per cell; gx, gy: (C,) int64 each cell's column and row, counted from ``margin`` outside the
image: ceil(DT), how far outside it a cell takes part in step 2."""

Centers = namedtuple("Centers", "centers votes spread voters")
Centers.__doc__ = """The kept CMs of steps 1-3, K of them, in the order their clusters were seeded.

centers: (K, 2) float64 CM as (x, y) = (column, row), the mean of the cluster's votes;
votes: (K,) int64 votes of the cluster (its zero-vector CM pixels not counted yet);
spread: (K,) float64 mean squared distance of the cluster's votes to its CM;
voters: the ``Votes`` of step 1 (step 4 reuses them)."""

Assignment = namedtuple("Assignment", "labels order votes")
Assignment.__doc__ = """Step 4's instances: the kept CMs (``Centers``) that got pixels, numbered by votes (most first).

labels: (H, W) int32, 0 = background, 1..N = instances;
order: (N,) int64 index of instance 1..N into the K kept CMs (a kept CM left without pixels is dropped);
votes: (K,) int64 votes of each kept CM: those of steps 2-3 plus the zero-vector CM pixels that joined it."""


def _check_vmap(vmap):
    """The map as C-contiguous float32; DecodingError unless its shape is (2, H, W)."""
    v = np.asarray(vmap)
    if v.ndim != 3 or v.shape[0] != 2 or v.shape[1] < 1 or v.shape[2] < 1:
        raise DecodingError(f"vector map must have shape (2, H, W), got {v.shape}")
    return np.ascontiguousarray(v, np.float32)


def _fg2(fg_threshold):
    """The squared foreground threshold in float32, the precision |V|^2 is compared in."""
    return np.float32(fg_threshold * fg_threshold)


def decode(vmap, dt, vt, et, method="vote", fg_threshold=FG_THRESHOLD):
    """Decode a DCME vector map into instances: the paper's four steps (see the module docstring).

    Arguments:
        vmap: (2, H, W) vector map (dx, dy) in pixels.
        dt, vt, et: the distance, vote and extraction thresholds (``paper.THRESHOLDS``,
            ``thresholds.parse_thresholds``).
        method: "vote" (the paper's step 4, ``assign_pixels``) or "watershed" (its ablation, ``watershed_pixels``).
        fg_threshold: pixels with |V| <= fg_threshold are background for step 1.
    Returns:
        ``Decoded(labels, centers, votes, scores)``, instances numbered by votes (most first); an instance that
        ends with no pixel is dropped, so every label 1..K has at least one pixel. Deterministic.
    Raises:
        DecodingError: a malformed map (shape, NaN/inf), thresholds out of range or an unknown method.
    """
    v = _check_vmap(vmap)
    check_thresholds(dt, vt, et, fg_threshold)
    return decode_kept(_find_centers(v, dt, vt, fg_threshold), vt, et, method, fg_threshold)       # steps 1-3


def decode_kept(kept, vt, et, method="vote", fg_threshold=FG_THRESHOLD):
    """Step 4 and the scores on ``find_centers``' kept CMs: ``decode`` without steps 1-3, so that one
    ``find_centers`` per (DT, VT) serves every ET (the same result as ``decode`` with each).

    Arguments:
        kept: ``find_centers(vmap, dt, vt, fg_threshold)``; vt: its VT (for the scores); et, method: as ``decode``.
    Returns:
        ``Decoded(labels, centers, votes, scores)``, as ``decode``.
    Raises:
        DecodingError: ET out of range or an unknown method.
    """
    check_thresholds(1.0, vt, et, fg_threshold)
    if method not in METHODS:
        raise DecodingError(f"unknown decoding method {method!r}; expected one of {METHODS}")
    if method == "vote":
        assigned = assign_pixels(kept, et, fg_threshold)                                # step 4
    else:
        assigned = watershed_pixels(kept, fg_threshold)                                 # step 4, ablation
    return _scored(kept, assigned, vt, et)


def find_centers(vmap, dt, vt, fg_threshold=FG_THRESHOLD):
    """Steps 1-3 of the paper's decoding: the centers of mass that the votes agree on.

    1. Every foreground pixel p (|V(p)| > fg_threshold) votes for p + V(p).
    2. The votes are clustered greedily within DT (``voting.cluster_cells``); a cluster's CM is the mean of its votes.
    3. Clusters with fewer than VT votes are dropped; a cluster's zero-vector CM pixels (8-connected to its voters,
       within fg_threshold of the CM) count as votes here, so that a ground-truth instance casts one vote per pixel.

    Arguments:
        vmap: (2, H, W) vector map (dx, dy) in pixels.
        dt: distance threshold DT (pixels), vt: vote threshold VT (votes).
        fg_threshold: pixels with |V| <= fg_threshold do not vote.
    Returns:
        ``Centers(centers (K, 2), votes (K,), spread (K,), voters)`` of the kept clusters, in seeding order.
    Raises:
        DecodingError: a malformed map (shape, NaN/inf) or thresholds out of range.
    """
    v = _check_vmap(vmap)
    check_thresholds(dt, vt, 1.0, fg_threshold)
    return _find_centers(v, dt, vt, fg_threshold)


def _find_centers(v, dt, vt, fg_threshold):
    """``find_centers`` on a checked map and thresholds."""
    voters, (mean_x, mean_y, sx, sy) = _cast_votes(v, fg_threshold, int(np.ceil(dt)))           # step 1
    h, w = voters.mag2.shape
    n, gx, gy, margin = voters.n, voters.gx, voters.gy, voters.margin
    # Step 2. Step 3 neither keeps nor boosts a cluster short of VT by more than its zero-vector CM pixels can add:
    # the clustering may stop once only such clusters are left to seed.
    floor = vt - extraction.max_center_pixels(fg_threshold)
    owner, seeds = voting.cluster_cells(gx, gy, h + 2 * margin, w + 2 * margin, n, mean_x, mean_y, float(dt),
                                        int(floor))
    counts, centers, spread = voting.cluster_stats(owner, seeds, n, sx, sy, mean_x, mean_y)
    # Step 3. Only clusters within reach of VT care about their zero-vector CM pixels.
    near_vt = np.flatnonzero((counts < vt) & (counts >= floor))
    keep = np.flatnonzero(counts >= vt)
    if len(near_vt):
        cluster = np.where(voters.cell >= 0, owner[voters.cell], -1)                   # (M,) -1: none
        _, _, lab = extraction.center_pixels(voters.idx, cluster, voters.mag2, float(fg_threshold),
                                             _fg2(fg_threshold), centers[near_vt], near_vt + 1)
        boosted = counts + np.bincount(lab - 1, minlength=len(counts))
        keep = np.flatnonzero(boosted >= vt)
    return Centers(centers[keep], counts[keep], spread[keep], voters)


def assign_pixels(kept, et, fg_threshold=FG_THRESHOLD):
    """Step 4 of the paper's decoding: every foreground pixel whose vote lands closer than ET to a kept CM joins the
    nearest one (``extraction.assign_votes``); a zero-vector pixel (|V| <= fg_threshold) within fg_threshold of a
    kept CM joins it when one of its 8 neighbours does. Every other pixel is background.

    Arguments:
        kept: ``find_centers``' ``Centers`` (K kept CMs and the votes of step 1).
        et: extraction threshold ET (pixels).
        fg_threshold: as given to ``find_centers``.
    Returns:
        ``Assignment(labels (H, W) int32, order (N,), votes (K,))``: N instances numbered by votes.
    """
    voters, centers = kept.voters, kept.centers
    k, pixels = extraction.assign_votes(voters.x, voters.y, voters.cell, voters.n, voters.gx, voters.gy,
                                        voters.mag2.shape, voters.margin, centers, float(et))  # (M,) kept CM, -1: none
    cy, cx, clab = extraction.center_pixels(voters.idx, k, voters.mag2, float(fg_threshold), _fg2(fg_threshold),
                                            centers, np.arange(1, len(centers) + 1))
    relabel, order, votes = _numbering(kept, pixels, clab)
    labels = np.zeros(voters.mag2.shape, np.int32)
    extraction.paint_votes(labels, voters.idx, k, relabel)
    labels[cy, cx] = relabel[clab]
    return Assignment(labels, order, votes)


def watershed_pixels(kept, fg_threshold=FG_THRESHOLD):
    """The paper's ablation of step 4: a watershed (scikit-image) on the magnitude map |V| from one marker per kept
    CM (its nearest pixel), within the foreground; then the zero-vector CM pixels as in ``assign_pixels``.

    Arguments:
        kept: ``find_centers``' ``Centers``.
        fg_threshold: as given to ``find_centers``.
    Returns:
        ``Assignment(labels (H, W) int32, order (N,), votes (K,))``: N instances numbered by votes.
    """
    from skimage.segmentation import watershed

    mag2, centers = kept.voters.mag2, kept.centers
    h, w = mag2.shape
    markers = np.zeros((h, w), np.int32)
    my = np.clip(np.rint(centers[:, 1]).astype(np.int64), 0, h - 1)
    mx = np.clip(np.rint(centers[:, 0]).astype(np.int64), 0, w - 1)
    markers[my[::-1], mx[::-1]] = np.arange(len(centers), 0, -1)   # on a shared pixel the stronger CM wins
    mask = mag2 > _fg2(fg_threshold)
    mask[my, mx] = True
    ws = watershed(np.sqrt(mag2), markers, mask=mask).astype(np.int64)             # 1-based, 0 = background
    cy, cx, clab = extraction.center_pixels(np.arange(h * w), ws.ravel() - 1, mag2, float(fg_threshold),
                                            _fg2(fg_threshold), centers, np.arange(1, len(centers) + 1))
    relabel, order, votes = _numbering(kept, np.bincount(ws.ravel(), minlength=len(centers) + 1)[1:], clab)
    labels = relabel[ws]
    labels[cy, cx] = relabel[clab]
    return Assignment(labels, order, votes)


def _cast_votes(v, fg_threshold, margin):
    """Step 1 (``voting.cast_votes``) on a checked (2, H, W) float32 map, its votes binned (``voting.bin_votes``).
    Returns (``Votes``, (mean_x, mean_y, sx, sy) of the cells)."""
    mag2, idx, vx, vy, bad = voting.cast_votes(v, _fg2(fg_threshold))
    if bad:
        bad = np.count_nonzero(~np.isfinite(v))
        raise DecodingError(f"vector map has {bad} NaN/inf values" if bad else "vector map has values beyond 1e19")
    h, w = mag2.shape
    cell, n, mean_x, mean_y, sx, sy, gx, gy = voting.bin_votes(vx, vy, h, w, margin)
    return Votes(idx, vx, vy, mag2, cell, n, gx, gy, margin), (mean_x, mean_y, sx, sy)


def _numbering(kept, pixels, cm_ids):
    """Step 4's numbering: the zero-vector CM pixels (1-based ``cm_ids``) count as votes; the kept CMs with
    ``pixels`` > 0 are numbered 1..N by votes (stable). Returns (relabel (K + 1,) int32 from 1-based kept index to
    instance, 0 for none; order (N,); votes (K,))."""
    votes = kept.votes + np.bincount(cm_ids - 1, minlength=len(kept.votes))
    alive = np.flatnonzero(pixels > 0)
    order = alive[np.argsort(-votes[alive], kind="stable")]
    relabel = np.zeros(len(votes) + 1, np.int32)
    relabel[order + 1] = np.arange(1, len(order) + 1)
    return relabel, order, votes


def _scored(kept, assigned, vt, et):
    """``Decoded`` from step 4's instances: their CMs, votes and scores (see the module docstring)."""
    order = assigned.order
    centers, counts, spread = kept.centers[order], assigned.votes[order], kept.spread[order]
    # Score: saturation in votes times concentration of the cluster's votes (mean squared distance to its CM).
    scores = counts / (counts + float(vt)) * np.exp(-spread / float(et) ** 2)
    return Decoded(assigned.labels, centers.reshape(-1, 2).astype(np.float64), counts.astype(np.int64),
                   np.maximum(scores, 1e-6).astype(np.float32))
