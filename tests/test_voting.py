"""dcme_layers.core.voting, the compiled kernels of the decoding: step 2 (clustering the votes) stops early on a
noisy map once no cluster left to seed can reach VT (with its zero-vector CM pixels), and the clusters it keeps must
be those of the plain greedy; the kernels are compiled once into a cache outside the repository."""
from pathlib import Path

import numpy as np
import pytest

from dcme_layers.core import extraction, voting
from dcme_layers.core.decoding import decode
from helpers import noisy_rectangles


def cluster_votes(vx, vy, shape, dt, min_votes):
    """Step 2 through the kernels: (cluster of each vote (-1: none), centers (K, 2), counts (K,))."""
    margin = int(np.ceil(dt))
    cell, n, mean_x, mean_y, sx, sy, gx, gy = voting.bin_votes(vx, vy, *shape, margin)
    owner, seeds = voting.cluster_cells(gx, gy, shape[0] + 2 * margin, shape[1] + 2 * margin, n, mean_x, mean_y,
                                        float(dt), min_votes)
    counts, centers, _ = voting.cluster_stats(owner, seeds, n, sx, sy, mean_x, mean_y)
    return np.where(cell >= 0, owner[cell], -1), centers, counts


def lattice_votes(pairs, h=300, w=500):
    """The votes at ``pairs`` (x, y) plus isolated single votes 20 px apart (more than 2 DT) away from (250, 150):
    enough cells for step 2's grid path. Returns (vx, vy)."""
    lattice = [(x, y) for y in range(5, h, 20) for x in range(5, w, 20) if np.hypot(x - 250, y - 150) > 25]
    return np.array(list(pairs) + lattice, float).T


def test_early_stop_bound_is_tight():
    """20 cells of 2 votes on a ring (radii 4.53-4.95 px: every pair closer than DT = 10, but each cell's opposite one
    farther than 9 px) make one cluster of 40, the isolated votes clusters of 1. Checked before the cells of 2 votes,
    the bound must stop the clustering (no cluster at all) only when min_votes exceeds 40; before the single votes,
    it stops after the ring's cluster."""
    offsets = ((4.5, 0.5), (0.5, 4.5), (4.5, 1.5), (1.5, 4.5), (3.5, 3.5))
    ring = [(250.5 + a * dx, 150.5 + b * dy + e) for dx, dy in offsets for a in (-1, 1) for b in (-1, 1)
            for e in (-0.1, 0.1)]
    vx, vy = lattice_votes(ring)
    _, _, counts = cluster_votes(vx, vy, (300, 500), 10.0, min_votes=40)
    assert list(counts) == [40]
    _, _, counts = cluster_votes(vx, vy, (300, 500), 10.0, min_votes=0)
    assert counts[0] == 40 and np.all(counts[1:] == 1) and len(counts) == len(vx) - 39
    _, _, counts = cluster_votes(vx, vy, (300, 500), 10.0, min_votes=41)
    assert len(counts) == 0


@pytest.mark.parametrize("dx, dy", [(10.49, 0), (0, 10.49), (10.45, 0.9)])
def test_grid_window_reaches_cells_int_dt_plus_one_apart(dx, dy):
    """Two votes closer than DT = 10.5 whose cells lie 11 apart (per axis) make one cluster, and the bound sees
    it: with min_votes = 2 the clustering does not stop."""
    vx, vy = lattice_votes([(250.49, 150.49), (250.49 + dx, 150.49 + dy)])
    assert np.hypot(dx, dy) < 10.5 and max(abs(np.rint(250.49 + dx) - 250), abs(np.rint(150.49 + dy) - 150)) == 11
    cluster, _, counts = cluster_votes(vx, vy, (300, 500), 10.5, min_votes=2)
    assert cluster[0] == cluster[1] and counts[cluster[0]] == 2 and len(counts) == len(vx) - 1


def plain_greedy(vx, vy, shape, dt):
    """Step 2 without shortcuts: (cluster per vote, counts, centers) of the greedy over the cells near the image."""
    h, w = shape
    cx, cy, m = np.rint(vx).astype(int), np.rint(vy).astype(int), int(np.ceil(dt))
    cells = sorted({(y, x) for x, y in zip(cx.tolist(), cy.tolist()) if -m <= x < w + m and -m <= y < h + m})
    index = {c: i for i, c in enumerate(cells)}
    vote_cell = np.array([index.get((y, x), -1) for x, y in zip(cx.tolist(), cy.tolist())])
    n = np.bincount(vote_cell[vote_cell >= 0], minlength=len(cells))
    means = np.array([[vx[vote_cell == i].mean(), vy[vote_cell == i].mean()] for i in range(len(cells))])
    owner = np.full(len(cells), -1)
    seeds = 0
    for s in sorted(range(len(cells)), key=lambda i: (-n[i], i)):
        if owner[s] < 0:
            owner[(owner < 0) & (np.hypot(*(means - means[s]).T) < dt)] = seeds
            seeds += 1
    cluster = np.where(vote_cell >= 0, owner[vote_cell], -1)
    counts = np.bincount(cluster[cluster >= 0], minlength=seeds)
    centers = np.array([[vx[cluster == k].mean(), vy[cluster == k].mean()] for k in range(seeds)])
    return cluster, counts, centers


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("background, dt", [(0.05, 10), (0.4, 10), (0.05, 15)])
def test_early_stop_keeps_the_plain_greedy_clusters(seed, background, dt):
    """For every VT from 12 to 80 (floors from 3 to 71 votes, some of them just above what the noise gathers): the
    clusters seeded before the stop are the plain greedy's and every later one falls short of the floor. Across
    VTs, the clustering both stops and runs to the end."""
    v = noisy_rectangles(np.random.default_rng(seed), background=background)
    ys, xs = np.nonzero(np.hypot(v[0], v[1]) > 0.5)
    vx, vy = xs + v[0, ys, xs].astype(np.float64), ys + v[1, ys, xs].astype(np.float64)
    ref_cluster, ref_counts, ref_centers = plain_greedy(vx, vy, v.shape[1:], dt)
    stopped = set()
    for vt in range(12, 81, 2):
        floor = vt - extraction.max_center_pixels(0.5)
        cluster, centers, counts = cluster_votes(vx, vy, v.shape[1:], dt, floor)
        k = len(counts)
        stopped.add(k < len(ref_counts))
        assert np.array_equal(counts, ref_counts[:k]) and np.all(ref_counts[k:] < floor)
        np.testing.assert_allclose(centers, ref_centers[:k], rtol=0, atol=1e-9)
        assert np.array_equal(cluster, np.where(ref_cluster < k, ref_cluster, -1))
    assert stopped == {True, False}


def test_compiled_kernels_are_cached_outside_the_repository(repo):
    import numba

    decode(np.zeros((2, 4, 4), np.float32), 10, 50, 15)
    cache = Path(numba.config.CACHE_DIR).resolve()
    assert not cache.is_relative_to(repo.resolve())
    assert any(cache.rglob("voting.*.nbi")) and any(cache.rglob("extraction.*.nbi"))
    assert not [p for p in repo.rglob("*.nb[ic]") if ".venv" not in p.parts]
