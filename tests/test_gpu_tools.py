"""The CPU-testable parts of the GPU path (make gpu-bundle, tools/gpu_check.sh): the `caffe time` nets, the bundle's
library packing (the packed binaries run from the bundle's own lib/), and the parsing of real `caffe time` and
`caffe train` output that gpu_check.py reads on the GPU machine."""
import os
import subprocess
from pathlib import Path

import pytest

import helpers

caffe = helpers.import_caffe()
from caffe import layers as L, params as P  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

import models  # noqa: E402
from models.fcn8s import net as fcn8s  # noqa: E402
from models.segnet import net as segnet  # noqa: E402
from tools import gpu_bundle, gpu_check  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAFFE_CMD = helpers.caffe_binary()
ENV = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")

ENGINE_PARAM = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
                "Pooling": "pooling_param", "ReLU": "relu_param"}


@pytest.mark.parametrize("mod,batch", [(segnet, 15), (fcn8s, 14)])
def test_timing_nets_choose_the_engine(mod, batch):
    for caffe_engine in (False, True):
        net = models.timing_net(mod.NAME, mod.body, batch, caffe_engine=caffe_engine)
        data = net.layer[0]
        assert data.type == "DummyData" and [list(s.dim) for s in data.dummy_data_param.shape] == \
            [[batch, 3, 340, 680], [batch, 2, 340, 680]]
        assert all(f.type == "gaussian" for f in data.dummy_data_param.data_filler)  # never timed on zeros
        assert net.layer[-1].type == "EuclideanLoss"
        engines = [getattr(layer, ENGINE_PARAM[layer.type]).engine for layer in net.layer
                   if layer.type in ENGINE_PARAM]
        assert len(engines) > 20
        expected = caffe_pb2.ConvolutionParameter.CAFFE if caffe_engine else caffe_pb2.ConvolutionParameter.DEFAULT
        assert set(engines) == {expected}  # (CAFFE is 1 and DEFAULT 0 in every one of these enums)


def tiny_net(path, batch=2):
    """DummyData -> conv -> MAX pool (indices) -> native Unpool ("upsample1") -> conv -> EuclideanLoss."""
    n = caffe.NetSpec()
    n.data, n.target = L.DummyData(shape=[dict(dim=[batch, 3, 45, 61]), dict(dim=[batch, 2, 45, 61])],
                                   data_filler=[dict(type="gaussian", std=1), dict(type="constant", value=0.5)],
                                   ntop=2)
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, weight_filler=dict(type="gaussian", std=0.1))
    n.pool, n.mask = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
    n.up = L.Unpool(n.pool, n.mask, n.conv, propagate_down=[True, False, False], name="upsample1")
    n.out = L.Convolution(n.up, num_output=2, kernel_size=3, pad=1, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.EuclideanLoss(n.out, n.target)
    path.write_text(str(n.to_proto()))
    return path


def test_parse_time_reads_real_caffe_time_output(tmp_path):
    net = tiny_net(tmp_path / "tiny.prototxt")
    run = subprocess.run([str(CAFFE_CMD), "time", "-model", str(net), "-iterations", "3"], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    r = gpu_check.parse_time(run.stderr)
    assert r["total_ms"] > 0
    assert {"data", "conv", "upsample1", "out", "loss"} <= set(r["layers"])
    # the net's time leaves out the DummyData layer, which draws the input anew on every pass
    assert r["forward_backward_ms"] == pytest.approx(r["total_ms"] - r["layers"]["data"], abs=1e-3)
    assert r["layers"]["data"] > 0


def test_parse_losses_reads_real_caffe_train_output(tmp_path):
    net = tiny_net(tmp_path / "tiny.prototxt")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(models.solver(str(net), str(tmp_path / "snap"), dict(
        base_lr=1e-5, momentum=0.9, max_iter=12, snapshot=0, snapshot_after_train=False, display=1, average_loss=1,
        test_iter=None, random_seed=3)))
    run = subprocess.run([str(CAFFE_CMD), "train", "-solver", str(solver)], env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = gpu_check.parse_losses(run.stderr)
    assert len(losses) == 12
    assert sum(losses[-5:]) < sum(losses[:5])  # gpu_check's "the loss falls", on a real run


def test_packed_binaries_run_from_the_bundle_lib_alone(tmp_path):
    """gpu_bundle's packing on this machine's Caffe: every library ldd names is packed except the system and CUDA
    ones, and the packed gtest binary runs with only the bundle's lib/ on the library path."""
    prefix = Path((REPO / ".venv" / ".caffe_prefix").read_text().strip())
    kept, provided = gpu_bundle.pack_binaries(prefix, tmp_path / "stage")
    lib = tmp_path / "stage" / "lib"
    assert any(k.startswith("libcaffe.so") for k in kept) and any(k.startswith("libglog") for k in kept)
    assert not any(k.startswith(gpu_bundle.PROVIDED) for k in kept)
    assert any(p.startswith("libc.so") for p in provided)
    assert sorted(p.name for p in lib.iterdir()) == sorted(kept)
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib), GLOG_minloglevel="2")
    ldd = subprocess.run(["ldd", str(tmp_path / "stage" / "bin" / "caffe")], env=env, capture_output=True, text=True)
    assert "not found" not in ldd.stdout
    for line in ldd.stdout.splitlines():  # each non-system library resolves inside the bundle
        if "=>" in line and not line.split()[0].startswith(gpu_bundle.PROVIDED):
            assert str(lib) in line, line
    run = subprocess.run([str(tmp_path / "stage" / "bin" / "test_dcme_layers")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "PASSED" in run.stdout, run.stdout[-2000:]
