"""SegNet's unpooling inside real caffe.Nets, both the native ``Unpool`` layer (dcme_layers/native, compiled into Caffe
by `make setup`) and its Python reference dcme_layers.net.unpool.Unpool: values land at the pooling argmax, output size
from the reference bottom on odd (ceil-mode) sizes, backward is the adjoint of forward and matches finite
differences, native and Python agree exactly, clear errors; plus the native layer's own gtest (Caffe's conventions)."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import helpers

caffe = helpers.import_caffe()
from caffe import layers as L, params as P  # noqa: E402

from dcme_layers.util.errors import UnpoolError  # noqa: E402

caffe.set_mode_cpu()
pytestmark = pytest.mark.slow


LAYERS = pytest.mark.parametrize("native", [False, True], ids=["python", "native"])


def make_net(x_shape, p_input=False, mask_shape=None, native=False):
    """x -> MAX pool 2/2 (values + indices) -> Unpool(features, indices, x), the Python or the ``native`` layer.

    Features are the pooled values (``up``), or with ``p_input`` an independent Input blob ``p`` of the pooled shape.
    ``mask_shape``: take the indices from an Input ``m`` of that shape instead of the pooling layer."""
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=list(x_shape)))
    n.pool, n.mask = L.Pooling(n.x, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
    pooled = list(x_shape[:2]) + [-(-x_shape[2] // 2), -(-x_shape[3] // 2)]
    mask = n.mask
    if mask_shape is not None:
        n.m = L.Input(shape=dict(dim=list(mask_shape)))
        mask = n.m
    feat = n.pool
    if p_input:
        n.p = L.Input(shape=dict(dim=pooled))
        feat = n.p
    if native:
        n.up = L.Unpool(feat, mask, n.x, propagate_down=[True, False, False])
    else:
        n.up = L.Python(feat, mask, n.x, module="dcme_layers.net.unpool", layer="Unpool",
                        propagate_down=[True, False, False])
    if p_input:
        n.silence = L.Silence(n.pool, ntop=0)
    proto = n.to_proto()
    proto.force_backward = True
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(str(proto))
    try:
        return caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)


def distinct(shape, seed):
    """Values with gaps of 1 (no ties in any pooling window), in random order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32) - np.prod(shape) / 2


def window_max_only(x):
    """Reference unpool(pool(x)) for 2x2/2 ceil-mode windows: x where x is its window's maximum, else 0."""
    n, c, h, w = x.shape
    hp, wp = -(-h // 2), -(-w // 2)
    pad = np.full((n, c, 2 * hp, 2 * wp), -np.inf)
    pad[:, :, :h, :w] = x
    wmax = pad.reshape(n, c, hp, 2, wp, 2).max(axis=(3, 5))
    wmax = wmax.repeat(2, axis=2).repeat(2, axis=3)[:, :, :h, :w]
    return np.where(x == wmax, x, 0)


@LAYERS
@pytest.mark.parametrize("shape", [(1, 1, 7, 5), (2, 3, 5, 7), (1, 2, 85, 43), (1, 1, 1, 1), (1, 2, 6, 8)])
def test_forward_places_values_at_argmax_with_reference_size(shape, native):
    net = make_net(shape, native=native)
    x = distinct(shape, 0)
    net.blobs["x"].data[...] = x
    net.forward()
    assert net.blobs["up"].data.shape == shape  # not 2 x pooled: 85 -> 43 -> 85
    np.testing.assert_array_equal(net.blobs["up"].data, window_max_only(x))


@LAYERS
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 99))
def test_forward_and_adjoint_on_random_sizes(native, n, c, h, w, seed):
    shape = (n, c, h, w)
    net = make_net(shape, p_input=True, native=native)
    rng = np.random.default_rng(seed)
    net.blobs["x"].data[...] = distinct(shape, seed)
    p = rng.standard_normal(net.blobs["p"].data.shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    net.blobs["p"].data[...] = p
    net.forward()
    up = net.blobs["up"].data.copy()
    # every pooled value appears exactly once, everything else is 0
    assert np.count_nonzero(up) == np.count_nonzero(p)
    np.testing.assert_allclose(np.sort(up[up != 0]), np.sort(p[p != 0]))
    net.backward(up=g)
    # <unpool(p), g> == <p, unpool^T(g)>
    np.testing.assert_allclose(np.vdot(up.astype(np.float64), g), np.vdot(p.astype(np.float64), net.blobs["p"].diff),
                               rtol=1e-5, atol=1e-5)


def numeric_grad(net, name, g, eps):
    """Central differences of f = sum(g * up) with respect to every element of blob ``name``, in float64."""
    x = net.blobs[name].data
    grad = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = np.vdot(net.forward()["up"].astype(np.float64), g)
        x[i] = old - eps
        fm = np.vdot(net.forward()["up"].astype(np.float64), g)
        x[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad


@LAYERS
@pytest.mark.parametrize("shape", [(1, 1, 7, 5), (2, 2, 5, 3), (1, 1, 4, 6)])
def test_gradient_check_finite_differences(shape, native):
    rng = np.random.default_rng(1)
    g = rng.standard_normal(shape)
    # 1) with respect to the unpooled features (indices fixed by pooling x)
    net = make_net(shape, p_input=True, native=native)
    net.blobs["x"].data[...] = distinct(shape, 2)
    net.blobs["p"].data[...] = rng.standard_normal(net.blobs["p"].data.shape)
    net.forward()
    net.backward(up=g.astype(np.float32))
    analytic = net.blobs["p"].diff.copy()
    np.testing.assert_allclose(analytic, numeric_grad(net, "p", g, 1e-2), rtol=1e-3, atol=1e-3)
    # 2) through pooling and unpooling with respect to the input (eps far below the gaps between values)
    net = make_net(shape, native=native)
    net.blobs["x"].data[...] = distinct(shape, 3)
    net.forward()
    net.backward(up=g.astype(np.float32))
    analytic = net.blobs["x"].diff.copy()
    numeric = numeric_grad(net, "x", g, 0.1)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-3)
    assert np.count_nonzero(analytic) == np.prod(shape[:2]) * (-(-shape[2] // 2)) * (-(-shape[3] // 2))


def test_mask_shape_mismatch_is_a_clear_error():
    with pytest.raises(UnpoolError, match="pooling mask"):
        make_net((1, 1, 6, 6), mask_shape=(1, 1, 2, 2))


def test_indices_out_of_range_is_a_clear_error():
    net = make_net((1, 1, 6, 6), mask_shape=(1, 1, 3, 3))
    net.blobs["m"].data[...] = 36  # one past the last position of a 6x6 plane
    with pytest.raises(UnpoolError, match="outside"):
        net.forward()


def test_nan_input_is_a_clear_error():
    """Caffe's MAX pooling leaves index -1 where its input is NaN (a diverged training): named, not a crash."""
    net = make_net((1, 2, 5, 5))
    net.blobs["x"].data[...] = np.nan
    with pytest.raises(UnpoolError, match="NaN"):
        net.forward()


# SegNet's decoder sizes (340 -> 170 -> 85 -> 43 -> 22 and back), odd sizes, batch > 1.
SHAPES = [(2, 3, 7, 5), (3, 2, 1, 9), (2, 4, 43, 86), (2, 8, 85, 170), (1, 2, 170, 340), (1, 1, 340, 680),
          (2, 16, 22, 43)]


@pytest.mark.parametrize("shape", SHAPES)
def test_native_equals_python_forward_and_backward(shape):
    """The same bottoms and top diff through both layers give identical outputs and gradients (a scatter and a
    gather: no arithmetic, so equality is exact)."""
    rng = np.random.default_rng(sum(shape))
    x = distinct(shape, 4)
    nets = [make_net(shape, p_input=True, native=native) for native in (False, True)]
    p = rng.standard_normal(nets[0].blobs["p"].data.shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    outs = []
    for net in nets:
        net.blobs["x"].data[...] = x
        net.blobs["p"].data[...] = p
        net.forward()
        net.backward(up=g)
        outs.append((net.blobs["up"].data.copy(), net.blobs["p"].diff.copy()))
    np.testing.assert_array_equal(outs[1][0], outs[0][0])
    np.testing.assert_array_equal(outs[1][1], outs[0][1])
    assert np.count_nonzero(outs[1][0]) == np.count_nonzero(p)


def test_native_gtest_passes(repo):
    """The native layer's gtest (tests of Caffe's kind: hand-computed forward and backward, the SegNet size chain, a
    GradientChecker check in float and double; in a CUDA build also GPU = CPU), built and installed by `make setup`."""
    prefix = Path((repo / ".venv" / ".caffe_prefix").read_text().strip())
    binary = prefix / "bin" / "test_dcme_layers"
    assert binary.exists(), "make setup installs bin/test_dcme_layers next to bin/caffe"
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, GLOG_minloglevel="2"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "UnpoolLayerTest" in run.stdout and "TestGradient" in run.stdout
    assert "[  FAILED  ]" not in run.stdout


def test_native_bad_indices_stop_with_one_line():
    """Caffe layers stop the process with LOG(FATAL): the line says what is wrong (run in a child process)."""
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_unpool import make_net
net = make_net((1, 2, 5, 5), native=True)
net.blobs["x"].data[...] = np.nan
net.forward()
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, GLOG_minloglevel="0"))
    assert run.returncode != 0
    assert "pooling index -1 outside [0, 25)" in run.stderr and "NaN" in run.stderr, run.stderr[-2000:]
