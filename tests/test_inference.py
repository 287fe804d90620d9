"""dcme_layers.net.inference and tools/infer.py: weights of another net and bad net files, the lock of a second run,
damaged and incomplete partials, a full disk and a kill, each resumed to the uninterrupted result."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import helpers

helpers.import_caffe()

from dcme_layers.net import inference  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run_infer(encoded, out, weights, *extra, deploy=REPO / "prototxt/segnet_deploy.prototxt"):
    return subprocess.run([sys.executable, "tools/infer.py", "--encoded", str(encoded), "--split", "val", "--out",
                           str(out), "--weights", str(weights), "--deploy", str(deploy), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_weights_of_another_net_and_bad_net_files_are_one_line(encoded, weights, tmp_path):
    out = tmp_path / "pred_vectors.h5"
    r = run_infer(encoded, out, weights[1])  # GoogLeNet's weights for SegNet: Caffe would load none, rc 0
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == (
        f"infer: error: {weights[1]}: has no layer 'conv1_1', which {REPO / 'prototxt/segnet_deploy.prototxt'} "
        "learns (weights of another net? pass the snapshot trained with this net)")
    (tmp_path / "bad.caffemodel").write_bytes(b"\x08\x96\x01garbage" * 10)
    r = run_infer(encoded, out, tmp_path / "bad.caffemodel")
    assert r.returncode == 1 and "bad.caffemodel: not a caffemodel" in r.stderr.splitlines()[-1]
    (tmp_path / "bad.prototxt").write_text('layer { name: "x" type: "Convolution" bottom: "data" top: "y" }\n}\n')
    r = run_infer(encoded, out, weights[0], deploy=tmp_path / "bad.prototxt")
    assert r.returncode == 1 and "bad.prototxt: not a net prototxt" in r.stderr.splitlines()[-1], r.stderr
    assert "Check failed" not in r.stderr and not out.exists()


def test_a_second_infer_run_is_refused_and_a_damaged_partial_is_redone(encoded, weights, clean_blobs, tmp_path):
    from dcme_layers.util import records, resumable

    out = tmp_path / "pred_vectors.h5"
    with resumable.Job(out, {}):  # another run holds the lock
        r = run_infer(encoded, out, weights[0])
    assert r.returncode == 1 and r.stderr.splitlines()[-1].startswith(
        f"infer: error: {out}: another run is writing it (lock {tmp_path / '.pred_vectors.h5.lock'})")

    r = run_infer(encoded, out, weights[0])  # a run killed after frame 0 was marked done...
    assert r.returncode == 0, r.stderr[-2000:]
    partial = tmp_path / "pred_vectors.h5.partial"
    partial.mkdir()
    (partial / "job.json").write_text(json.dumps({k: v for k, v in records.read_record(out).items()
                                                  if k != "outputs"}))
    frames = inference.read_frames(encoded / "val")
    (partial / "done.txt").write_text(f"{frames[0]}\t{records.digest(clean_blobs[0])}\n")
    (partial / "vectors.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # ...whose HDF5 file was cut short
    r = run_infer(encoded, out, weights[0], "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "vectors.h5 unreadable" in r.stdout and "starting over" in r.stdout
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["vectors"][...], clean_blobs)


def test_a_frame_marked_done_but_not_on_disk_is_predicted_again(encoded, weights, clean_blobs, tmp_path):
    """A partial that claims more than its file holds, as a crash on a full disk can leave it: every frame marked
    done, one of them all zeros."""
    from dcme_layers.util import records

    out = tmp_path / "pred_vectors.h5"
    assert run_infer(encoded, out, weights[0]).returncode == 0
    record = {k: v for k, v in records.read_record(out).items() if k != "outputs"}
    partial = tmp_path / "pred_vectors.h5.partial"
    partial.mkdir()
    (partial / "job.json").write_text(json.dumps(record))
    frames = inference.read_frames(encoded / "val")
    (partial / "done.txt").write_text("".join(f"{n}\t{records.digest(v)}\n" for n, v in zip(frames, clean_blobs)))
    shutil.copy(out, partial / "vectors.h5")
    with h5py.File(partial / "vectors.h5", "r+") as f:
        f["vectors"][1] = 0  # frame 1's data never reached the disk
    r = run_infer(encoded, out, weights[0], "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 frames marked done are not on disk; predicting them again" in r.stdout
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["vectors"][...], clean_blobs)


def test_infer_on_a_full_disk_stops_with_one_line_and_resumes(encoded, weights, clean_blobs, tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "kept.h5"
    args = ["--encoded", encoded, "--split", "val", "--weights", weights[0], "--out", disk / "pred_vectors.h5"]
    r = helpers.in_small_disk(disk, "1000k", f"""
        a = tool("infer", *{list(map(str, args))!r})
        print("RC1", a.returncode); print("ERR1", a.stderr.strip().splitlines()[-1])
        remount("64m")
        b = tool("infer", *{list(map(str, args))!r})
        print("RC2", b.returncode)
        import shutil; shutil.copy("{disk}/pred_vectors.h5", "{kept}")
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert got["RC1"] == "1" and got["ERR1"].startswith(f"infer: error: {disk}/pred_vectors.h5.partial")
    assert "no space left on device" in got["ERR1"] and "re-run" in got["ERR1"], got["ERR1"]
    assert got["RC2"] == "0"
    with h5py.File(kept, "r") as f:
        np.testing.assert_array_equal(f["vectors"][...], clean_blobs)


def test_infer_killed_mid_run_resumes_to_the_uninterrupted_result(encoded, weights, clean_blobs, tmp_path):
    out = tmp_path / "pred_vectors.h5"
    args = ["--encoded", encoded, "--split", "val", "--out", out, "--weights", weights[0]]
    assert helpers.kill_mid_run("infer", args, tmp_path / "pred_vectors.h5.partial" / "done.txt") == 1
    assert not out.exists()
    r = helpers.run_tool("infer", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after 1 done" in r.stdout
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["vectors"][...], clean_blobs)
