"""dcme_layers.core.decoding: hand-made maps, ground-truth maps from encoding.vector_map (hypothesis-generated and
real Cityscapes), noisy vectors, merging, the watershed ablation, bad input, a dense reference of the four steps, and
a stored digest of the decoder's output on a fixed corpus."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dcme_layers.core.decoding import decode
from dcme_layers.core.paper import THRESHOLDS
from dcme_layers.core.thresholds import parse_thresholds
from dcme_layers.core.encoding import instance_anchors, vector_map
from dcme_layers.data import cityscapes
from dcme_layers.data.synthetic_scene import render_frame
from helpers import noisy_rectangles, rect_map

DT, VT, ET = THRESHOLDS["segnet"]


def iou(a, b):
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


def decoded_mask(dec, gt_mask):
    """The decoded instance covering most of gt_mask (empty mask if none does)."""
    lab = dec.labels[gt_mask]
    lab = lab[lab > 0]
    if len(lab) == 0:
        return np.zeros_like(gt_mask)
    return dec.labels == np.bincount(lab).argmax()


def qualifying(m, dt=DT, vt=VT, et=ET):
    """Instances the exactness rule covers: >= VT pixels, CM farther than DT from every other CM, and every
    instance whose CM lies within reach (ET + 2 DT) is itself isolated and kept (so no dropped or merged votes
    can land within ET of it)."""
    ids, cm = instance_anchors(m)
    n = np.array([np.count_nonzero(m == i) for i in ids])
    d = np.hypot(*(cm[:, None, :] - cm[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    isolated = (n >= vt) & (d.min(1, initial=np.inf) > dt + 0.01)
    ok = isolated & np.all((d > et + 2 * dt + 1) | isolated[None, :], axis=1)
    return ids[ok], cm[ok]


def assert_recovered(m, dec, ids, cms):
    assert np.all(np.diff(dec.votes) <= 0)                         # labels numbered by votes
    for i, (x, y) in zip(ids, cms):
        gt = m == i
        got = decoded_mask(dec, gt)
        assert dec.votes[dec.labels[got][0] - 1] == np.count_nonzero(got)   # one vote per pixel
        if iou(gt, got) >= 0.99:
            continue
        # The one documented exception: a zero-vector background pixel at the CM is indistinguishable.
        extra = np.argwhere(got & ~gt)
        assert not np.any(gt & ~got), f"instance {i} lost pixels"
        assert len(extra) <= 2 and all(np.hypot(c - x, r - y) <= 0.5 for r, c in extra), f"instance {i}"


def test_hand_made_rectangles_are_recovered_exactly():
    # 9x11 rectangle: its CM is a pixel centre, so that pixel has a zero vector (|V| <= fg_threshold).
    m = rect_map(60, 100, [(5, 5, 14, 16), (30, 60, 50, 90), (40, 5, 60, 25)])
    dec = decode(vector_map(m), DT, VT, ET)
    assert dec.labels.dtype == np.int32 and dec.labels.shape == m.shape
    assert len(dec.votes) == 3
    ids, cms = instance_anchors(m)
    for i, cm in zip(ids, cms):
        got = decoded_mask(dec, m == i)
        assert np.array_equal(got, m == i)
        k = dec.labels[got][0] - 1
        np.testing.assert_allclose(dec.centers[k], cm, atol=1e-3)
    # On a ground-truth map every pixel votes, the zero-vector CM pixel of the 9x11 rectangle included.
    assert sorted(dec.votes.tolist()) == sorted([9 * 11, 20 * 30, 20 * 20])
    assert list(dec.votes) == sorted(dec.votes, reverse=True)      # labels numbered by votes
    assert np.all((dec.scores > 0) & (dec.scores <= 1))
    assert dec.scores[0] > dec.scores[-1]                           # more votes rank higher on a GT map


def test_small_instance_dropped_and_border_instance_kept():
    m = rect_map(60, 100, [(0, 0, 20, 30), (40, 70, 46, 77)])  # 600 px at the corner, 42 px < VT
    dec = decode(vector_map(m), DT, VT, ET)
    assert len(dec.votes) == 1
    assert np.array_equal(dec.labels > 0, m == 26001)


def test_two_instances_closer_than_dt_merge():
    # Two 20x10 rectangles side by side: CMs 10 px apart horizontally -> 9 px with a 1-px shift... use 8 px.
    m = rect_map(40, 60, [(10, 10, 30, 18), (10, 18, 30, 26)])
    ids, cm = instance_anchors(m)
    assert np.hypot(*(cm[0] - cm[1])) < DT
    dec = decode(vector_map(m), DT, VT, ET)
    assert len(dec.votes) == 1
    assert np.array_equal(dec.labels > 0, m > 0)
    assert dec.votes[0] == np.count_nonzero(m)
    np.testing.assert_allclose(dec.centers[0], cm.mean(0), atol=1e-3)
    # With a smaller DT the same map decodes into the two instances.
    dec = decode(vector_map(m), 5, VT, 4)
    assert len(dec.votes) == 2
    assert_recovered(m, dec, ids, cm)


def test_far_votes_and_empty_map():
    v = np.zeros((2, 30, 40), np.float32)
    dec = decode(v, DT, VT, ET)
    assert dec.labels.max() == 0 and dec.centers.shape == (0, 2) and dec.votes.shape == (0,)
    v[:, :20, :20] = -100.0           # 400 pixels all voting for a point far outside the image
    dec = decode(v, DT, VT, ET)
    assert dec.labels.max() == 0 and len(dec.scores) == 0


# One shape of at least VT pixels in the left 56 columns, the others centred 44+ columns right of it (beyond
# ET + 2 DT): the rule covers at least that one whatever the others do.
isolated = st.tuples(st.sampled_from(["rect", "ellipse"]), st.integers(10, 69), st.integers(15, 40),
                     st.integers(5, 10), st.integers(6, 15))
crowd = st.lists(st.tuples(st.sampled_from(["rect", "ellipse"]), st.integers(0, 79), st.integers(100, 159),
                           st.integers(2, 14), st.integers(2, 20)), max_size=5)


def paint(spec, h=80, w=120):
    """Instance map of shapes painted in order (later ones occlude earlier ones)."""
    m = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    for k, (kind, cy, cx, ry, rx) in enumerate(spec, 1):
        if kind == "rect":
            inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        else:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        m[inside] = 24000 + k
    return m


@settings(max_examples=60, deadline=None)
@given(isolated, crowd)
def test_exactness_on_generated_ground_truth(alone, others):
    m = paint([alone] + others, w=160)
    ids, cms = qualifying(m)
    assert 24001 in ids
    dec = decode(vector_map(m), DT, VT, ET)
    assert_recovered(m, dec, ids, cms)
    # Decoding does not depend on the instance ids: numbering them the other way round gives the same labels.
    u = np.unique(m[m > 0])
    flipped = np.where(m > 0, 33000 + len(u) - np.searchsorted(u, m), 0).astype(np.int32)
    assert np.array_equal(decode(vector_map(flipped), DT, VT, ET).labels, dec.labels)


# Up to six shapes, one per 70 px cell of a 160x240 map (centres 64+ px apart: more than 2 DT plus twice the noise
# plus ET for both networks), each of 100+ pixels: every one must come back.
cells = st.lists(st.tuples(st.sampled_from(["rect", "ellipse"]), st.integers(-3, 3), st.integers(-3, 3),
                           st.integers(6, 12), st.integers(6, 14)), min_size=1, max_size=6)


@settings(max_examples=30, deadline=None)
@given(cells, st.integers(0, 2 ** 31 - 1), st.sampled_from(["segnet", "fcn8s"]))
def test_noisy_vectors_within_et_decode_to_the_same_instances(spec, seed, net):
    dt, vt, et = THRESHOLDS[net]
    m = paint([(kind, 45 + 70 * (k // 3) + jy, 45 + 70 * (k % 3) + jx, ry, rx)
               for k, (kind, jy, jx, ry, rx) in enumerate(spec)], h=160, w=240)
    v = vector_map(m)
    noise = 0.3 * dt  # every vote stays within 0.3 * sqrt(2) * DT < DT / 2 of its CM
    rng = np.random.default_rng(seed)
    v = v + (rng.uniform(-noise, noise, v.shape) * (m > 0)).astype(np.float32)
    ids, cms = instance_anchors(m)
    n = np.array([np.count_nonzero(m == i) for i in ids])
    d = np.hypot(*(cms[:, None, :] - cms[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    # VT + 20 pixels: the few pixels whose noisy vector fell under fg_threshold cast no vote.
    assert np.all(n >= vt + 20) and np.all(d > 2 * dt + 2 * noise * np.sqrt(2) + et)
    dec = decode(v, dt, vt, et)
    assert len(dec.votes) == len(ids)
    short = np.hypot(v[0], v[1]) <= 0.5    # pixels whose noisy vector fell under fg_threshold: no vote
    yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
    for i in ids:
        gt = m == i
        got = decoded_mask(dec, gt)
        assert not np.any(gt & ~got & ~short)
        # Only a zero-vector background pixel within fg_threshold of the decoded CM can join (documented).
        cx, cy = dec.centers[dec.labels[got][0] - 1]
        assert not np.any(got & ~gt & (np.hypot(xx - cx, yy - cy) > 0.5))


def test_real_cityscapes_ground_truth_decodes_exactly(cityscapes_sample):
    import cv2

    from dcme_layers.data import cityscapes

    frames = cityscapes.list_frames(cityscapes_sample, "train")[:3]
    checked = 0
    for f in frames:
        ids = cityscapes.read_instance_ids(f.instance_ids)
        m = cityscapes.instance_map(cv2.resize(ids, (680, 340), interpolation=cv2.INTER_NEAREST))
        for name, (dt, vt, et) in THRESHOLDS.items():
            q_ids, q_cms = qualifying(m, dt, vt, et)
            assert_recovered(m, decode(vector_map(m), dt, vt, et), q_ids, q_cms)
            checked += len(q_ids)
    assert checked >= 10


def test_watershed_ablation_on_separated_instances():
    m = rect_map(60, 100, [(5, 5, 14, 16), (30, 60, 50, 90), (40, 5, 60, 25)])
    dec = decode(vector_map(m), DT, VT, ET, method="watershed")
    assert len(dec.votes) == 3
    for i in np.unique(m[m > 0]):
        assert np.array_equal(decoded_mask(dec, m == i), m == i)
    # Touching instances: the vote decoder separates them exactly, the watershed only approximately.
    m = rect_map(40, 80, [(5, 5, 35, 40), (5, 40, 35, 75)])
    vote = decode(vector_map(m), DT, VT, ET)
    ws = decode(vector_map(m), DT, VT, ET, method="watershed")
    for i in (26001, 26002):
        assert np.array_equal(decoded_mask(vote, m == i), m == i)
        assert iou(decoded_mask(ws, m == i), m == i) > 0.7
    assert np.array_equal(ws.labels > 0, m > 0)


@pytest.mark.parametrize("method", ["vote", "watershed"])
def test_decode_kept_serves_every_et_as_decode_does(method):
    """Steps 1-3 once (find_centers), then step 4 for several ETs: decode's output with each, bit for bit."""
    from dcme_layers.core.decoding import decode_kept, find_centers

    v = noisy_rectangles(np.random.default_rng(7))
    kept = find_centers(v, DT, VT)
    for et in (4, 7.5, ET, 25):
        for x, y in zip(decode_kept(kept, VT, et, method), decode(v, DT, VT, et, method=method)):
            assert np.array_equal(x, y)


def test_decode_is_deterministic():
    rng = np.random.default_rng(1)
    m = paint([("ellipse", 30, 40, 12, 18), ("rect", 50, 90, 10, 14), ("ellipse", 60, 30, 8, 20)])
    v = vector_map(m) + rng.normal(0, 1.5, (2, 80, 120)).astype(np.float32) * (m > 0)
    a, b = decode(v, DT, VT, ET), decode(v.copy(), DT, VT, ET)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("args, match", [
    ((np.zeros((3, 10, 10)), 10, 50, 15), "shape"),
    ((np.zeros((2, 10)), 10, 50, 15), "shape"),
    ((np.full((2, 10, 10), np.nan), 10, 50, 15), "NaN"),
    ((np.full((2, 10, 10), np.inf), 10, 50, 15), "NaN"),
    ((np.zeros((2, 10, 10)), 0, 50, 15), "DT"),
    ((np.zeros((2, 10, 10)), 10, 0, 15), "VT"),
    ((np.zeros((2, 10, 10)), 10, 2.5, 15), "VT"),
    ((np.zeros((2, 10, 10)), 10, 50, -1), "ET"),
    ((np.zeros((2, 10, 10)), 10, 50, np.nan), "ET"),
])
def test_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        decode(*args)


def test_bad_method_and_fg_threshold():
    v = np.zeros((2, 10, 10), np.float32)
    with pytest.raises(ValueError, match="method"):
        decode(v, 10, 50, 15, method="meanshift")
    with pytest.raises(ValueError, match="fg_threshold"):
        decode(v, 10, 50, 15, fg_threshold=-1)


def test_parse_thresholds():
    assert parse_thresholds("segnet") == (10, 50, 15)
    assert parse_thresholds("FCN8s") == (15, 30, 20)
    assert parse_thresholds("12,40,18") == (12.0, 40, 18.0)
    for bad in ("12,40", "a,b,c", "10,0,15", "10,50,0"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


def test_scale_thresholds():
    from dcme_layers.core.thresholds import scale_thresholds

    assert scale_thresholds("segnet", (340, 680)) == (10, 50, 15)
    assert scale_thresholds("segnet", (85, 170)) == (2.5, 3, 3.75)
    assert scale_thresholds((15, 30, 20), (680, 1360)) == (30, 120, 40)
    with pytest.raises(ValueError):
        parse_thresholds(("a", 1, 2))


# --------------------------------------------------------------------------------------------------------------
# Step 2 stops early once no cluster left to seed can reach VT (test_voting.py): a cluster that reaches VT only with
# its zero-vector CM pixels must be kept.


def test_cluster_short_of_vt_by_its_two_cm_pixels_is_kept():
    """A 5x4 rectangle: its CM lies between two pixels whose vectors (0.5 px) do not vote, so 18 votes + 2 CM
    pixels reach VT = 20 (step 3); the early stop's floor (VT less the most CM pixels) must leave such a cluster."""
    m = rect_map(30, 40, [(10, 20, 15, 24)])
    dec = decode(vector_map(m), DT, 20, ET)
    assert list(dec.votes) == [20] and np.array_equal(dec.labels > 0, m > 0)


# --------------------------------------------------------------------------------------------------------------
# A dense reference of the paper's four steps (module docstring of dcme_layers/core/decoding.py): plain numpy, every
# distance measured, O(N^2); decode() must give the same instances with its binning, buckets and early stop.


def _reference_cm_pixels(mag, owner, centers, ids, fg):
    """Zero-vector pixels (|V| <= fg) within fg of a CM, not owned (``owner`` == 0) and with one of their 8
    neighbours owned by that CM's id; a pixel claimed by several CMs goes to the first. {(row, col): id}."""
    h, w = mag.shape
    claimed = {}
    for (cx, cy), i in zip(centers, ids):
        for r in range(h):
            for c in range(w):
                if (r, c) in claimed or mag[r, c] > fg or owner[r, c] or np.hypot(c - cx, r - cy) > fg:
                    continue
                ring = owner[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                if np.any(ring == i):
                    claimed[(r, c)] = i
    return claimed


def reference_decode(v, dt, vt, et, method="vote", fg=0.5):
    """The paper's decoding, written out step by step (no binning tricks beyond the documented cells)."""
    from skimage.segmentation import watershed

    _, h, w = v.shape
    mag = np.hypot(v[0].astype(np.float64), v[1].astype(np.float64))
    # Step 1: every foreground pixel votes for p + V(p).
    rows, cols = np.nonzero(mag > fg)
    vx, vy = cols + v[0][rows, cols].astype(np.float64), rows + v[1][rows, cols].astype(np.float64)
    # Step 2: votes binned on the pixel grid (cells within DT of the image take part), each cell at the mean of its
    # votes; the strongest unassigned cell (ties: row-major) absorbs every unassigned cell closer than DT.
    cx, cy, m = np.rint(vx).astype(int), np.rint(vy).astype(int), int(np.ceil(dt))
    near = (cx >= -m) & (cx < w + m) & (cy >= -m) & (cy < h + m)
    cells = sorted(set(zip(cy[near].tolist(), cx[near].tolist())))               # row-major
    members = [np.flatnonzero(near & (cy == r) & (cx == c)) for r, c in cells]
    n = np.array([len(x) for x in members])
    means = np.array([[vx[x].mean(), vy[x].mean()] for x in members]).reshape(-1, 2)
    owner = np.full(len(cells), -1)
    clusters = []
    for s in sorted(range(len(cells)), key=lambda i: (-n[i], i)):
        if owner[s] < 0:
            absorbed = [j for j in range(len(cells)) if owner[j] < 0 and np.hypot(*(means[j] - means[s])) < dt]
            owner[absorbed] = len(clusters)
            clusters.append(absorbed)
    vote_cluster = np.full(len(vx), -1)
    for j, x in enumerate(members):
        vote_cluster[x] = owner[j]
    counts = np.array([n[c].sum() for c in clusters], int)
    centers = np.array([(n[c, None] * means[c]).sum(0) / n[c].sum() for c in clusters]).reshape(-1, 2)
    spread = np.array([(n[c] * ((means[c] - centers[k]) ** 2).sum(1)).sum() / counts[k]
                       for k, c in enumerate(clusters)])
    # Step 3: clusters with fewer than VT votes are dropped; zero-vector CM pixels count as votes (only for the
    # clusters that can reach VT with the (2 ceil(fg) + 1)^2 pixels around their CM).
    owned = np.zeros((h, w), int)
    owned[rows, cols] = vote_cluster + 1
    reach = [k for k in range(len(clusters)) if counts[k] < vt <= counts[k] + (2 * int(np.ceil(fg)) + 1) ** 2]
    boosted = counts.copy()
    for i in _reference_cm_pixels(mag, owned, centers[reach], [k + 1 for k in reach], fg).values():
        boosted[i - 1] += 1
    keep = np.flatnonzero(boosted >= vt)
    centers, counts, spread = centers[keep], counts[keep], spread[keep]
    ids = list(range(1, len(keep) + 1))
    # Step 4: a vote closer than ET to a kept CM joins the nearest one (ties: the first); then the CM pixels.
    if method == "vote":
        labels = np.zeros((h, w), int)
        for p in range(len(vx)):
            d = np.hypot(centers[:, 0] - vx[p], centers[:, 1] - vy[p])
            if len(d) and d.min() < et:
                labels[rows[p], cols[p]] = np.argmin(d) + 1
    else:
        markers = np.zeros((h, w), np.int32)
        for k in reversed(range(len(centers))):                                      # the stronger CM wins
            markers[min(max(int(np.rint(centers[k, 1])), 0), h - 1), min(max(int(np.rint(centers[k, 0])), 0), w - 1)] \
                = k + 1
        mag32 = np.sqrt(np.einsum("ijk,ijk->jk", v, v))
        labels = watershed(mag32, markers, mask=(mag > fg) | (markers > 0)).astype(int)
    pixels = np.bincount(labels.ravel(), minlength=len(centers) + 1)[1:]
    for (r, c), i in _reference_cm_pixels(mag, labels, centers, ids, fg).items():
        labels[r, c] = i
        counts[i - 1] += 1
    # Empty instances dropped, the rest numbered by votes (stable), scored.
    order = [k for k in sorted(range(len(centers)), key=lambda k: -counts[k]) if pixels[k] > 0]
    relabel = np.zeros(len(centers) + 1, int)
    relabel[np.array(order, int) + 1] = np.arange(1, len(order) + 1)
    counts, spread = counts[order], spread[order]
    scores = np.maximum(counts / (counts + vt) * np.exp(-spread / et ** 2), 1e-6)
    return relabel[labels], centers[order].reshape(-1, 2), counts, scores


def random_map(rng, h, w):
    """Rectangles (some occluded) with noisy vectors, plus random votes on a few background pixels."""
    m = np.zeros((h, w), np.int32)
    for k in range(rng.integers(1, 6)):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        m[y0:y0 + rng.integers(2, 12), x0:x0 + rng.integers(2, 16)] = 26000 + k
    v = vector_map(m)
    v += (rng.normal(0, rng.uniform(0, 1.5), v.shape) * (m > 0)).astype(np.float32)
    pick = (rng.random((h, w)) < 0.05) & (m == 0)
    v[:, pick] = rng.uniform(-8, 8, (2, pick.sum())).astype(np.float32)
    return v


@pytest.mark.parametrize("method", ["vote", "watershed"])
def test_decode_equals_the_dense_reference(method):
    """decode() = reference_decode() on random small maps."""
    rng = np.random.default_rng(12)
    for trial in range(6):
        h, w = rng.integers(14, 30), rng.integers(14, 40)
        v = random_map(rng, h, w)
        for dt, vt, et in ((3, 4, 5), (2.5, 2, 3.5), (6, 12, 4)):
            got = decode(v, dt, vt, et, method=method)
            labels, centers, votes, scores = reference_decode(v, dt, vt, et, method)
            np.testing.assert_array_equal(got.labels, labels)
            np.testing.assert_allclose(got.centers, centers, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(got.votes, votes)
            np.testing.assert_allclose(got.scores, scores.astype(np.float32), rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# The decoder's output on a fixed corpus, bit for bit: labels, centers, votes and scores of 1680 decodings against
# digests stored in tests/decoding_digests.json. A change to any step's arithmetic or order shows here.

DIGESTS = Path(__file__).with_name("decoding_digests.json")
CORPUS_THRESHOLDS = ((10, 50, 15), (15, 30, 20), (2.5, 3, 3.75), (3, 4, 5), (6, 12, 4), (10.5, 20, 8), (2, 2, 2.5))


def spray(v, m, rng, share, reach):
    """Random vectors up to ``reach`` px on a ``share`` of the background pixels of instance map ``m``."""
    ys, xs = np.nonzero((m == 0) & (rng.random(m.shape) < share))
    angle, length = rng.uniform(0, 2 * np.pi, len(ys)), rng.uniform(0, reach, len(ys))
    v[0, ys, xs], v[1, ys, xs] = length * np.cos(angle), length * np.sin(angle)
    return v


def corpus_maps():
    """{name: (2, H, W) float32 vector map}: ground truth, noisy (network-like, dense and far noise) and random
    maps, small and at 340x680."""
    rng = np.random.default_rng(2024)
    maps = {}
    for i in range(24):
        m = paint([(("rect", "ellipse")[rng.integers(2)], rng.integers(0, 80), rng.integers(0, 120),
                    rng.integers(2, 15), rng.integers(2, 21)) for _ in range(rng.integers(1, 7))])
        v = vector_map(m)
        maps[f"shapes{i}-gt"] = v
        noisy = v + (rng.normal(0, rng.uniform(0.3, 2.0), v.shape) * (m > 0)).astype(np.float32)
        maps[f"shapes{i}-noisy"] = spray(noisy, m, rng, 0.05, 30.0)
        maps[f"shapes{i}-dense"] = spray(noisy.copy(), m, rng, 0.4, 12.0)
        far = noisy.copy()
        far[:, rng.random(m.shape) < 0.02] = rng.choice([-1, 1], (2, 1)) * rng.uniform(40, 1e6)
        maps[f"shapes{i}-far"] = far
    for i in range(4):
        m = cityscapes.instance_map(render_frame(np.random.default_rng(i), (340, 680))["instance_ids"])
        v = vector_map(m)
        maps[f"scene{i}-gt"] = v
        maps[f"scene{i}-noisy1"] = v + (rng.normal(0, 1.0, v.shape) * (m > 0)).astype(np.float32)
        maps[f"scene{i}-network"] = spray(v + (rng.normal(0, 1.5, v.shape) * (m > 0)).astype(np.float32), m, rng,
                                          0.05, 30.0)
    for i, (h, w) in enumerate(((80, 120), (340, 680))):
        maps[f"random{i}"] = rng.uniform(-6, 6, (2, h, w)).astype(np.float32)
    return maps


def decoded_digest(d):
    """First 16 hex digits of the sha256 of a Decoded's four arrays."""
    h = hashlib.sha256()
    for a in d:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def corpus_digests():
    """{case: digest} of decode on every corpus map, threshold set and method (and three fg_thresholds on some)."""
    out = {}
    for name, v in corpus_maps().items():
        for th in CORPUS_THRESHOLDS:
            for method in ("vote", "watershed"):
                for fg in ((0.5, 0.0, 1.2) if name.endswith("0-noisy") or name.startswith("random") else (0.5,)):
                    out[f"{name} {th} {method} fg{fg}"] = decoded_digest(decode(v, *th, method=method, fg_threshold=fg))
    return out


@pytest.mark.slow
def test_decode_matches_the_stored_digests_bit_for_bit():
    want = json.loads(DIGESTS.read_text())
    got = corpus_digests()
    assert sorted(got) == sorted(want)
    differ = [case for case in want if got[case] != want[case]]
    assert not differ, f"{len(differ)} of {len(want)} decodings changed, e.g. {differ[:5]}"
