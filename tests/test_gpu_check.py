"""The CPU-testable parts of tools/gpu_check.py (tools/gpu_check.sh): the parsing of real `caffe time` and `caffe
train` output that it reads on the GPU machine, the TF32 rows of its table, and its demo stage as a dry run on the CPU
build."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

caffe = helpers.import_caffe()
from caffe import layers as L, params as P  # noqa: E402

import models  # noqa: E402
from dcme_layers.net import caffe_log  # noqa: E402
from models.segnet import net as segnet  # noqa: E402
from tools import gpu_bundle, gpu_check  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CAFFE_CMD = helpers.caffe_binary()
ENV = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")


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
    r = caffe_log.parse_time(run.stderr)
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
    losses = [loss for _, loss in caffe_log.loss_curve(run.stderr)[0]]
    assert len(losses) == 12
    assert sum(losses[-5:]) < sum(losses[:5])  # gpu_check's "the loss falls", on a real run


def test_tf32_rows_sit_beside_the_peers_tf32(tmp_path, capsys):
    """The table pairs the TF32 `caffe time` run with the peer's TF32 configuration and fp32 with fp32 (times
    parsed from a real `caffe time`)."""
    net = tiny_net(tmp_path / "tiny.prototxt")
    run = subprocess.run([str(CAFFE_CMD), "time", "-model", str(net), "-iterations", "2"], env=ENV,
                         capture_output=True, text=True, timeout=120)
    t = caffe_log.parse_time(run.stderr)
    t.pop("layers")
    s = t["forward_backward_ms"] / 1000
    res = dict(device="cpu", batches={"segnet": 2}, time={"segnet/default": t, "segnet/default/tf32": t}, train={},
               unpool_tests_passed=0,
               peer=[dict(net="segnet", mode="fp32", cudnn=True, s_per_iter=2 * s),
                     dict(net="segnet", mode="tf32", cudnn=True, s_per_iter=4 * s)])
    gpu_check.print_table(res)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| segnet")]
    assert "| cuDNN |" in rows[0] and "| fp32, cuDNN |" in rows[0] and rows[0].endswith("| 0.50x |")
    assert "| cuDNN, TF32 |" in rows[1] and "| tf32, cuDNN |" in rows[1] and rows[1].endswith("| 0.25x |")


def test_demo_stage_dry_run_on_the_cpu_build(tiny_cityscapes, tmp_path):
    """The GPU check's demo stage, end to end on the CPU build at 48x96: the bundle (this build's binaries, the
    demo's nets and frames), `tools/gpu_check.py --demo` (training stopped by the time limit with a snapshot, the
    BatchNorm statistics pass, `caffe test` into an HDF5Output file), then `tools/evaluate.py --predictions` on
    what came back. The statistics equal tools/compute_bn_stats.py's and the predictions pycaffe's."""
    import h5py
    import numpy as np

    from dcme_layers.data.lmdb_io import encode_dataset
    from dcme_layers.net import inference
    from tools import compute_bn_stats, demo

    size = (48, 96)
    enc = tmp_path / "enc"
    encode_dataset(tiny_cityscapes, enc, ["train", "val"], size=size, workers=1, progress=False)
    c = demo.config(gpu=True)
    c = dict(c, size=size, segnet=dict(c["segnet"], batch_size=2),
             segnet_solver=dict(c["segnet_solver"], max_iter=10000, display=1, average_loss=1))
    stage, bundle = tmp_path / "stage", tmp_path / "bundle"
    gpu_bundle.pack_binaries(Path((REPO / ".venv" / ".caffe_prefix").read_text().strip()), stage)
    entry = gpu_bundle.write_demo(stage, c, enc)
    assert (entry["train_frames"], entry["val_frames"], entry["bn_passes"]) == (3, 2, 2)
    bundle.mkdir()
    gpu_bundle.pack(stage, bundle, dict(batches={}, demo=entry), xz=None)

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "tools/gpu_check.py", str(out), "--bundle", str(bundle), "--demo", "15",
                          "--cpu", "--keep-weights"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    d = json.loads((out / "gpu_check.json").read_text())["demo"]
    assert d["stopped_by_time"] and d["iterations"] >= 2 and d["iterations_per_s"] > 0
    assert [it for it, _ in d["losses"]] == list(range(d["iterations"]))
    assert d["final_loss"] < d["first_loss"]
    assert (out / "demo" / "predictions.h5.frames.txt").read_text() == (enc / "val" / "frames.txt").read_text()

    # the caffe-only statistics pass = caffe-segnet's recipe (tools/compute_bn_stats.py) on the same weights
    trained = out / "demo" / f"demo_segnet_iter_{d['iterations']}.caffemodel"
    stats = compute_bn_stats.compute_bn_stats(trained, tmp_path / "bn.caffemodel",
                                              stage / "nets" / "demo_train.prototxt", enc / "train", progress=False)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(gpu_bundle.with_bn_stats_names(segnet.deploy(shape=(1, 3) + size))))
    net = caffe.Net(str(deploy), str(out / "demo" / "demo_segnet_bnstats_iter_2.caffemodel"), caffe.TEST)
    for name, (mean, var) in stats.items():
        got_mean, got_var, count = (b.data for b in net.params[name + gpu_bundle.BN_STATS_SUFFIX])
        assert count[0] == 2
        np.testing.assert_allclose(got_mean / count[0], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_var / count[0], var, rtol=1e-5, atol=1e-6)
    # caffe test's HDF5Output holds what pycaffe predicts, frame by frame in the LMDB's order
    blobs = inference.infer_split(deploy, out / "demo" / "demo_segnet_bnstats_iter_2.caffemodel", enc / "val",
                                  tmp_path / "infer.h5", "segnet", log=lambda *_: None)
    with h5py.File(blobs, "r") as a, h5py.File(out / "demo" / "predictions.h5", "r") as b:
        np.testing.assert_array_equal(a["vectors"][...], b["data"][...])

    run = subprocess.run([sys.executable, "tools/evaluate.py", "--predictions", str(out / "demo" / "predictions.h5"),
                          "--root", str(tiny_cityscapes), "--encoded", str(enc), "--out", str(tmp_path / "eval"),
                          "--oracle-classes", "--thresholds", "2,4,3", "--workers", "1", "--bootstrap", "0",
                          "--figures", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "eval" / "report.json").read_text())["results"]
    assert rows[0]["name"].startswith("DCME segnet (ground-truth classes)") and 0 <= rows[0]["AP"] <= 1
