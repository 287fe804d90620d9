"""The test pipeline (issue 5): a short end-to-end run of tools/evaluate.py, and its handling of bad blob files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

caffe = pytest.importorskip("caffe", reason="run `make setup` first")

import models  # noqa: E402
from dcme_layers import caffe_log, inference  # noqa: E402
from dcme_layers.caffe_log import INFO_LINE  # noqa: E402
from dcme_layers.lmdb_io import encode_dataset  # noqa: E402
from models.segnet import net as segnet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = (48, 96)


@pytest.fixture(scope="module")
def encoded(tiny_cityscapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoded")
    encode_dataset(tiny_cityscapes, out, ["train", "val"], size=SIZE, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def weights(encoded, tmp_path_factory):
    """A SegNet trained for 4 iterations on the tiny set (so its BatchNorm statistics exist) and an untrained
    GoogLeNet (fillers only): enough to run every step of the pipeline for real."""
    tmp = tmp_path_factory.mktemp("weights")
    train = tmp / "segnet_train.prototxt"
    train.write_text(str(segnet.train(f"{encoded}/train", f"{encoded}/val", batch_size=1)))
    settings = dict(segnet.SMOKE, max_iter=4, snapshot=4, test_iter=None,
                    base_lr=segnet.SMOKE["base_lr"] * (340 * 680) / (SIZE[0] * SIZE[1]))
    solver = tmp / "solver.prototxt"
    solver.write_text(models.solver(str(train), str(tmp / "segnet"), settings))
    caffe.set_mode_cpu()
    caffe.get_solver(str(solver)).solve()
    classifier = caffe.Net(str(REPO / "prototxt/googlenet_deploy.prototxt"), caffe.TEST)
    classifier.save(str(tmp / "googlenet.caffemodel"))
    return tmp / "segnet_iter_4.caffemodel", tmp / "googlenet.caffemodel"


def run_evaluate(tiny_cityscapes, encoded, weights, out, *extra):
    cmd = [sys.executable, "tools/evaluate.py", "--model", "segnet", "--split", "val", "--root", str(tiny_cityscapes),
           "--encoded", str(encoded), "--out", str(out), "--weights", str(weights[0]),
           "--classifier-weights", str(weights[1]), "--thresholds", "2,4,3", "--workers", "1", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_end_to_end_report_has_all_four_metrics(tiny_cityscapes, encoded, weights, tmp_path):
    run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / "eval", "--oracle", "--figures", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    rows = report["results"]
    assert rows[0]["name"].startswith("DCME segnet (GoogLeNet classes)")
    assert len(rows) > 1 and any("oracle" in n.lower() or "GT" in n for n in (r["name"] for r in rows[1:]))
    for row in rows:  # the tiny set has disparity and camera files: every metric is a number
        for metric in ("AP", "AP50%", "AP100m", "AP50m"):
            assert isinstance(row[metric], float) and 0.0 <= row[metric] <= 1.0, (row["name"], metric)
    assert rows[1]["AP"] == 1.0  # the full-resolution ground truth scores itself perfectly
    md = (tmp_path / "eval" / "report.md").read_text()
    assert all(m in md for m in ("AP50%", "AP100m", "AP50m"))
    with h5py.File(tmp_path / "eval" / "pred_vectors.h5", "r") as f:
        assert f["vectors"].shape == (2, 2) + SIZE and np.isfinite(f["vectors"][...]).all()
    assert len(list((tmp_path / "eval" / "figures").glob("*.png"))) == 1
    preds = list((tmp_path / "eval").glob("pred-*/*_pred.txt"))
    assert len(preds) == 2

    # Rerunning into the same --out with other weights must not reuse the old blobs or predictions.
    other = tmp_path / "other.caffemodel"
    other.write_bytes(Path(weights[0]).read_bytes())
    run = run_evaluate(tiny_cityscapes, encoded, (other, weights[1]), tmp_path / "eval")
    assert run.returncode != 0 and "pred_vectors.h5: made with other inputs" in run.stderr, run.stderr[-2000:]


def test_nan_blob_and_foreign_blob_file_are_named(tiny_cityscapes, encoded, weights, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    frames = inference.read_frames(encoded / "val")
    with h5py.File(out / "pred_vectors.h5", "w") as f:  # a finished blob file whose first frame is NaN
        f["vectors"] = np.full((len(frames), 2) + SIZE, np.nan, np.float32)
        f["frames"] = np.array(frames, dtype=h5py.string_dtype())
    run = run_evaluate(tiny_cityscapes, encoded, weights, out)
    assert run.returncode != 0
    assert "pred_vectors.h5" in run.stderr and "NaN" in run.stderr, run.stderr[-2000:]

    with h5py.File(out / "pred_vectors.h5", "w") as f:  # another frame list
        f["vectors"] = np.zeros((1, 2) + SIZE, np.float32)
        f["frames"] = np.array(["elsewhere_000000_000019"], dtype=h5py.string_dtype())
    run = run_evaluate(tiny_cityscapes, encoded, weights, out)
    assert run.returncode != 0 and "frame list differs" in run.stderr, run.stderr[-2000:]

    with h5py.File(out / "pred_vectors.h5", "w") as f:  # the right frames at another resolution
        f["vectors"] = np.zeros((len(frames), 2, 2 * SIZE[0], 2 * SIZE[1]), np.float32)
        f["frames"] = np.array(frames, dtype=h5py.string_dtype())
    run = run_evaluate(tiny_cityscapes, encoded, weights, out)
    assert run.returncode != 0 and f"blobs are {2 * SIZE[0]}x{2 * SIZE[1]}" in run.stderr, run.stderr[-2000:]


def _env_without_glog_level():
    return {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}


def test_tools_load_nets_without_glog_info_lines(encoded, weights, tmp_path):
    """tools/infer.py initialises SegNet (hundreds of glog INFO lines by default) and prints none of them; with
    GLOG_minloglevel=0 set by the user the same run prints them (so the pattern does match Caffe's lines)."""
    cmd = [sys.executable, "tools/infer.py", "--model", "segnet", "--split", "val", "--encoded", str(encoded),
           "--weights", str(weights[0])]
    run = subprocess.run(cmd + ["--out", str(tmp_path / "a.h5")], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=_env_without_glog_level())
    assert run.returncode == 0, run.stderr[-2000:]
    info = [line for line in run.stderr.splitlines() if INFO_LINE.match(line)]
    assert not info, info[:3]
    assert (tmp_path / "a.h5").is_file()
    run = subprocess.run(cmd + ["--out", str(tmp_path / "b.h5")], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=dict(_env_without_glog_level(), GLOG_minloglevel="0"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert sum(bool(INFO_LINE.match(line)) for line in run.stderr.splitlines()) > 100


def test_demo_training_progress_from_real_caffe_train(encoded, tmp_path):
    """caffe_log.train runs the real `caffe train` binary: the full glog log lands in the file, the loss curve is
    parsed from it (one point per display line), and nothing of it reaches the terminal but the bar."""
    train = tmp_path / "train.prototxt"
    train.write_text(str(segnet.train(f"{encoded}/train", f"{encoded}/val", batch_size=1)))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(models.solver(str(train), str(tmp_path / "segnet"), dict(
        segnet.SMOKE, max_iter=3, snapshot=3, test_iter=None, display=1, average_loss=1,
        base_lr=segnet.SMOKE["base_lr"] * (340 * 680) / (SIZE[0] * SIZE[1]))))
    assert caffe_log.max_iter(solver) == 3
    log = tmp_path / "train.log"
    rc, curve = caffe_log.train([str(REPO / ".venv/bin/caffe"), "train", "-solver", str(solver)], log, 3,
                                progress=False, cwd=REPO)
    assert rc == 0
    assert [it for it, _ in curve] == [0, 1, 2, 3]   # display 1; Caffe prints the last loss after the loop too
    assert all(np.isfinite(loss) and loss > 0 for _, loss in curve)
    text = log.read_text()
    assert "Optimization Done." in text and sum(bool(INFO_LINE.match(line)) for line in text.splitlines()) > 100
    assert (tmp_path / "segnet_iter_3.caffemodel").is_file()
