"""The Caffe that `make setup` built and selected: pycaffe from the recorded install and variant, EuclideanLoss, a
dcme_layers Python layer trained through pycaffe and through the `caffe` command, and the CPU build's `caffe`
refusing -gpu in one line."""
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers

caffe = helpers.import_caffe()
from caffe import layers as L, params as P  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _net_from_spec(n, tmp_path, name="net.prototxt", phase=caffe.TEST):
    path = tmp_path / name
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), phase)


def test_pycaffe_is_the_build_make_setup_selected_and_its_variant():
    """pycaffe comes from the install prefix that `make setup` recorded in .venv, and that build is CPU_ONLY exactly
    when the recorded variant says CUDA=0 (its CMake config records the flag)."""
    import caffe.proto.caffe_pb2 as pb

    assert hasattr(caffe, "Net") and hasattr(caffe, "get_solver")
    assert pb.LayerParameter(type="EuclideanLoss").type == "EuclideanLoss"
    prefix = Path((REPO / ".venv" / ".caffe_prefix").read_text().strip())
    assert prefix in Path(caffe.__file__).resolve().parents
    variant = dict(line.split("=", 1) for line in (REPO / ".venv" / ".caffe_variant").read_text().split())
    config = (prefix / "share" / "Caffe" / "CaffeConfig.cmake").read_text()
    cpu_only = re.search(r"set\(Caffe_CPU_ONLY (ON|OFF)\)", config)[1] == "ON"
    assert cpu_only == (variant["CUDA"] == "0"), (variant, cpu_only)
    caffe.set_mode_cpu()


@pytest.mark.slow
def test_euclidean_loss_matches_numpy(tmp_path):
    """EuclideanLoss = sum((a - b)^2) / (2N), N = batch size; its gradient is (a - b) / N."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[3, 4, 7, 9]))
    n.target = L.Input(shape=dict(dim=[3, 2, 7, 9]))
    n.pred = L.Convolution(n.data, num_output=2, kernel_size=3, pad=1,
                           weight_filler=dict(type="gaussian", std=0.1), bias_filler=dict(type="constant", value=0.2))
    n.loss = L.EuclideanLoss(n.pred, n.target)
    net = _net_from_spec(n, tmp_path)
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.normal(size=(3, 4, 7, 9))
    net.blobs["target"].data[...] = rng.normal(size=(3, 2, 7, 9))
    loss = float(net.forward()["loss"])
    a, b = net.blobs["pred"].data.astype(np.float64), net.blobs["target"].data.astype(np.float64)
    expected = np.sum((a - b) ** 2) / (2 * 3)
    assert loss == pytest.approx(expected, rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["pred"].diff, (a - b) / 3, rtol=1e-4, atol=1e-6)
    assert np.abs(net.params["pred"][0].diff).sum() > 0


def _write_h5_dataset(tmp_path, n=16, size=(9, 11)):
    """A small regression task: target = a fixed smooth function of the input, stored as a real HDF5Data source."""
    rng = np.random.default_rng(1)
    data = rng.uniform(-1, 1, size=(n, 1) + size).astype(np.float32)
    target = np.concatenate([np.roll(data, 1, axis=3), -0.5 * data], axis=1).astype(np.float32)
    h5 = tmp_path / "train.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = data
        f["target"] = target
    listing = tmp_path / "train_h5.txt"
    listing.write_text(f"{h5}\n")
    return listing


def _unpool_net(source, batch):
    """Conv -> max pool with index top -> dcme_layers.net.unpool.Unpool (Python) -> conv -> EuclideanLoss."""
    n = caffe.NetSpec()
    n.data, n.target = L.HDF5Data(source=str(source), batch_size=batch, ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1, n.pool1_mask = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
    n.unpool1 = L.Python(n.pool1, n.pool1_mask, n.conv1, module="dcme_layers.net.unpool", layer="Unpool",
                         propagate_down=[True, False, False])
    n.pred = L.Convolution(n.unpool1, num_output=2, kernel_size=3, pad=1,
                           weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    n.loss = L.EuclideanLoss(n.pred, n.target)
    return n.to_proto()


def _solver(tmp_path, net_path, max_iter):
    path = tmp_path / "solver.prototxt"
    path.write_text(
        f'net: "{net_path}"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: {max_iter}\n'
        f'display: 1\nrandom_seed: 7\nsnapshot: 0\nsnapshot_after_train: false\nsolver_mode: CPU\n')
    return path


def _setup_unpool_solver(tmp_path, max_iter):
    net_path = tmp_path / "unpool_train.prototxt"
    net_path.write_text(str(_unpool_net(_write_h5_dataset(tmp_path), batch=4)))
    return _solver(tmp_path, net_path, max_iter)


@pytest.mark.slow
def test_python_layer_trains_through_pycaffe(tmp_path):
    solver = caffe.get_solver(str(_setup_unpool_solver(tmp_path, 40)))
    assert "unpool1" in solver.net.layer_dict
    assert solver.net.layer_dict["unpool1"].type == "Python"
    losses = []
    for _ in range(40):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_python_layer_trains_through_caffe_command(tmp_path):
    solver = _setup_unpool_solver(tmp_path, 40)
    env = {k: v for k, v in helpers.clean_env().items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # From the repository root, as the user runs it; a clean PYTHONPATH proves the wrapper supplies it.
    run = subprocess.run([str(helpers.caffe_binary()), "train", "-solver", str(solver)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "Creating layer unpool1" in log and "Optimization Done" in log
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*?\), loss = ([-+.\deE]+)", log)]
    assert len(losses) == 40, log[-3000:]          # display 1: one loss line per iteration
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_gpu_flag_on_the_cpu_build_is_refused_in_one_line(tmp_path):
    """`.venv/bin/caffe ... -gpu N` on the CPU-only build: one line naming the CUDA build, not Caffe's C++ abort."""
    if "CUDA=1" in (REPO / ".venv" / ".caffe_variant").read_text().splitlines():
        pytest.skip(".venv has the CUDA build")
    for flag in (["-gpu", "0"], ["--gpu=all"]):
        run = subprocess.run([str(helpers.caffe_binary()), "train", "-solver", str(tmp_path / "x.prototxt"), *flag],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stdout == "", run.stderr
        assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("caffe: -gpu needs the CUDA build")
        assert "`make setup CUDA=1 CUDNN=1`" in run.stderr
