"""dcme_layers.core.encoding (Eq. 1-2): hand-computed maps, properties on random instance maps, a realistic size."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from dcme_layers.core.encoding import instance_anchors, magnitude, vector_map

# Instance 1: three pixels (1,0) (2,0) (1,1) -> CM (4/3, 1/3), bbox centroid (1.5, 0.5).
# Instance 2: two disjoint pixels (0,2) (3,2) -> CM = bbox centroid = (1.5, 2), outside both pixels.
SMALL = np.array([[0, 1, 1, 0],
                  [0, 1, 0, 0],
                  [2, 0, 0, 2]], np.int32)
# Instance 7: an L (0,0) (1,0) (2,0) (0,1) (0,2) -> CM (0.6, 0.6), bbox centroid (1, 1).
# Instance 26001: two parts, (4,0) and the column (3,1) (3,2) -> CM (10/3, 1), bbox centroid (3.5, 1).
L_SHAPE = np.array([[7, 7, 7, 0, 26001],
                    [7, 0, 0, 26001, 0],
                    [7, 0, 0, 26001, 0]], np.int32)


def test_small_map_by_hand():
    v = vector_map(SMALL)
    assert v.shape == (2, 3, 4) and v.dtype == np.float32
    third = 1 / 3
    dx = [[0, third, -2 * third, 0],
          [0, third, 0, 0],
          [1.5, 0, 0, -1.5]]
    dy = [[0, third, third, 0],
          [0, -2 * third, 0, 0],
          [0, 0, 0, 0]]
    np.testing.assert_allclose(v[0], dx, atol=1e-6)
    np.testing.assert_allclose(v[1], dy, atol=1e-6)
    ids, cm = instance_anchors(SMALL)
    assert ids.tolist() == [1, 2] and ids.dtype == np.int64
    assert cm.dtype == np.float64 and cm.shape == (2, 2)
    np.testing.assert_allclose(cm, [[4 / 3, 1 / 3], [1.5, 2.0]])


def test_bbox_centroid_by_hand():
    v = vector_map(SMALL, "bbox")
    np.testing.assert_allclose(v[0], [[0, .5, -.5, 0], [0, .5, 0, 0], [1.5, 0, 0, -1.5]], atol=1e-6)
    np.testing.assert_allclose(v[1], [[0, .5, .5, 0], [0, -.5, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    ids, c = instance_anchors(SMALL, "bbox")
    np.testing.assert_allclose(c, [[1.5, .5], [1.5, 2.0]])


def test_l_shape_and_disjoint_instance_cm_vs_bbox():
    ids, cm = instance_anchors(L_SHAPE, "cm")
    _, bb = instance_anchors(L_SHAPE, "bbox")
    assert ids.tolist() == [7, 26001]
    np.testing.assert_allclose(cm, [[.6, .6], [10 / 3, 1.0]])
    np.testing.assert_allclose(bb, [[1.0, 1.0], [3.5, 1.0]])
    v = vector_map(L_SHAPE, "cm")
    # corner pixel (0, 0) of the L points to (0.6, 0.6); the lone part (4, 0) of 26001 to (10/3, 1)
    np.testing.assert_allclose(v[:, 0, 0], [.6, .6], atol=1e-6)
    np.testing.assert_allclose(v[:, 0, 4], [10 / 3 - 4, 1.0], atol=1e-6)
    np.testing.assert_allclose(v[:, 2, 3], [10 / 3 - 3, -1.0], atol=1e-6)
    vb = vector_map(L_SHAPE, "bbox")
    np.testing.assert_allclose(vb[:, 0, 0], [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(vb[:, 0, 4], [-.5, 1.0], atol=1e-6)


def test_background_only_and_magnitude():
    z = np.zeros((5, 7), np.uint16)
    v = vector_map(z)
    assert v.shape == (2, 5, 7) and not v.any()
    ids, a = instance_anchors(z)
    assert ids.shape == (0,) and a.shape == (0, 2)
    m = magnitude(np.array([[[3, 0]], [[4, -2]]], np.float32))
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, [[5, 2]])


@pytest.mark.parametrize("bad, anchor", [(np.zeros((2, 3, 4), np.int32), "cm"), (np.zeros((3, 4)), "cm"),
                                         (SMALL, "centroid")])
def test_bad_arguments(bad, anchor):
    with pytest.raises(ValueError):
        vector_map(bad, anchor)
    with pytest.raises(ValueError):
        magnitude(np.zeros((3, 4, 5)))


def _reference(inst, anchor):
    """Loop over instances (the slow, obvious way) for comparison."""
    ref = {}
    for i in np.unique(inst[inst != 0]):
        r, c = np.nonzero(inst == i)
        if anchor == "cm":
            ref[i] = (c.mean(), r.mean())
        else:
            ref[i] = ((c.min() + c.max()) / 2, (r.min() + r.max()) / 2)
    return ref


instance_maps = arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 16)),
                       elements=st.sampled_from([0, 0, 0, 1, 2, 3, 24001, 33000, -7, 2**31 - 1]))


@settings(max_examples=60, deadline=None)
@given(inst=instance_maps, anchor=st.sampled_from(["cm", "bbox"]))
def test_properties(inst, anchor):
    v = vector_map(inst, anchor)
    ref = _reference(inst, anchor)
    ids, anchors = instance_anchors(inst, anchor)
    assert ids.tolist() == sorted(ref)
    rows, cols = np.mgrid[:inst.shape[0], :inst.shape[1]]
    assert not v[:, inst == 0].any()  # background exactly zero
    for i, a in zip(ids, anchors):
        m = inst == i
        np.testing.assert_allclose(a, ref[i], atol=1e-9)
        # pixel + vector = anchor for every pixel of the instance
        np.testing.assert_allclose(cols[m] + v[0][m], a[0], atol=1e-4)
        np.testing.assert_allclose(rows[m] + v[1][m], a[1], atol=1e-4)
        if anchor == "cm":  # the vectors of an instance cancel out (its CM is the mean pixel)
            assert abs(v[0][m].mean()) < 1e-4 and abs(v[1][m].mean()) < 1e-4


def test_realistic_size_matches_loop():
    """340x680 with 40 overlapping rectangles (many occluded into several parts) against the loop reference."""
    rng = np.random.default_rng(3)
    inst = np.zeros((340, 680), np.int32)
    for k in range(40):
        y, x = rng.integers(0, 300), rng.integers(0, 640)
        inst[y:y + rng.integers(2, 120), x:x + rng.integers(2, 200)] = 26000 + k
    for anchor in ("cm", "bbox"):
        v = vector_map(inst, anchor)
        ref = _reference(inst, anchor)
        rows, cols = np.mgrid[:340, :680]
        expect = np.zeros_like(v)
        for i, (ax, ay) in ref.items():
            m = inst == i
            expect[0][m], expect[1][m] = ax - cols[m], ay - rows[m]
        np.testing.assert_allclose(v, expect, atol=2e-4)
