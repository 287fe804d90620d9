"""dcme_layers.net.crops and tools/extract_instances.py: instance boxes and crops, and the instance LMDB for
GoogLeNet (on the tiny set and the real sample), resumed after a kill or an error."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import helpers
from helpers import frame_and_id, read_lmdb
from dcme_layers.core import paper
from dcme_layers.data import cityscapes
from dcme_layers.net import crops
from dcme_layers.util import errors


# ---------------------------------------------------------------------------------------------- crops (numpy) --

def test_instance_boxes_known_geometry():
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 10:20] = 7  # 4 rows x 10 columns
    labels[15, 0] = 3  # a single pixel at the left border
    labels[18:20, 25:30] = 7  # disjoint second part of instance 7
    ids, boxes, areas = crops.instance_boxes(labels, margin=0.1)
    assert ids.tolist() == [3, 7]
    assert areas.tolist() == [1, 40 + 10]
    # id 3: box [0, 1) x [15, 16), pad 0.1 -> floor(-0.1) = -1 clipped to 0, ceil(1.1) = 2, floor(14.9) = 14, 17
    # id 7: box x [10, 30), y [2, 20): pad 2 and 1.8 -> x [8, 32) clipped to 30, y [0.2 -> 0, 21.8 -> 22 -> 20)
    assert boxes.tolist() == [[0, 14, 2, 17], [8, 0, 30, 20]]
    ids, boxes, _ = crops.instance_boxes(labels, margin=0)
    assert boxes.tolist() == [[0, 15, 1, 16], [10, 2, 30, 20]]


@settings(max_examples=40, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4)),
       st.floats(0, 0.5))
def test_instance_boxes_contain_their_pixels(labels, margin):
    ids, boxes, areas = crops.instance_boxes(labels, margin)
    present = np.unique(labels[labels > 0])
    assert ids.tolist() == present.tolist()
    h, w = labels.shape
    for i, (x0, y0, x1, y1), a in zip(ids, boxes, areas):
        ys, xs = np.nonzero(labels == i)
        assert a == len(ys)
        assert 0 <= x0 <= xs.min() and xs.max() < x1 <= w
        assert 0 <= y0 <= ys.min() and ys.max() < y1 <= h
        # the margin never adds more than margin * size (+1 for rounding) on a side
        assert xs.min() - x0 <= margin * (xs.max() + 1 - xs.min()) + 1


def test_instance_crops_cut_the_right_region_minus_mean():
    image = np.zeros((60, 90, 3), np.uint8)
    image[10:30, 40:80] = (200, 100, 50)  # BGR block = instance 2's box exactly
    labels = np.zeros((60, 90), np.int32)
    labels[10:30, 40:80] = 2
    out = crops.instance_crops(image, labels, crop=32, margin=0)
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32
    mean = np.float32(paper.GOOGLENET_MEAN_BGR)
    np.testing.assert_allclose(out[1], (np.array([200, 100, 50], np.float32) - mean)[:, None, None]
                               * np.ones((1, 32, 32)))
    assert np.all(out[0] == 0)  # id 1 has no pixel: an all-mean crop
    # with a margin the crop also shows the black surroundings
    out = crops.instance_crops(image, labels, crop=32, margin=0.25)
    assert np.allclose(out[1][:, 0, 0], -mean) and np.allclose(out[1][:, 16, 16], [96, -17, -73])


def test_instance_crops_empty_and_mismatched():
    image = np.zeros((8, 8, 3), np.uint8)
    assert crops.instance_crops(image, np.zeros((8, 8), np.int32)).shape == (0, 3, 224, 224)
    with pytest.raises(errors.ClassifyError, match="differ in size"):
        crops.instance_crops(image, np.zeros((8, 9), np.int32))
    with pytest.raises(errors.ClassifyError, match="uint8"):
        crops.instance_crops(image.astype(np.float32), np.zeros((8, 8), np.int32))


# ----------------------------------------------------------------------------------------- LMDB extraction --

def _expected_instances(root, split, size, min_pixels):
    """{(frame, raw id): class index} of the instances at `size` with >= min_pixels pixels, computed directly."""
    expected = {}
    for frame in cityscapes.list_frames(root, split):
        _, ids = cityscapes.load_frame(frame, size)
        inst = cityscapes.instance_map(ids)
        values, counts = np.unique(inst[inst > 0], return_counts=True)
        for v, c in zip(values, counts):
            if c >= min_pixels:
                expected[(frame.name, int(v))] = cityscapes.CLASS_INDEX[int(v) // 1000]
    return expected


@pytest.mark.slow
def test_extract_cli_tiny_cityscapes(tiny_cityscapes, tmp_path, repo):
    """Both splits by default; one entry per instance with >= min pixels at --size, with its class index."""
    helpers.import_caffe()
    out = tmp_path / "instances"
    r = subprocess.run([sys.executable, "tools/extract_instances.py", "--root", str(tiny_cityscapes), "--out",
                        str(out), "--size", "128", "256", "--min-pixels", "20"],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for split in ("train", "val"):
        entries = read_lmdb(out / split)
        expected = _expected_instances(tiny_cityscapes, split, (128, 256), 20)
        assert len(entries) == len(expected) > 0
        assert {frame_and_id(k): label for k, label, _ in entries} == expected
        assert all(img.shape == (3, 224, 224) and img.dtype == np.uint8 for _, _, img in entries)
        manifest = json.loads((out / split / "manifest.json").read_text())
        assert manifest["count"] == len(entries) == sum(manifest["per_class"].values())
        assert manifest["settings"]["size"] == [128, 256] and manifest["settings"]["min_pixels"] == 20
        assert f"{out / split}: {len(entries)} instances" in r.stdout
        assert not (out / f"{split}.partial").exists()
    # other settings on an existing output: a one-line error, the output untouched
    before = (out / "train" / "data.mdb").read_bytes()
    r = subprocess.run([sys.executable, "tools/extract_instances.py", "--root", str(tiny_cityscapes), "--out",
                        str(out), "--split", "train", "--margin", "0.3"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    assert (out / "train" / "data.mdb").read_bytes() == before


@pytest.mark.slow
def test_extract_killed_mid_run_resumes_to_the_uninterrupted_result(tiny_cityscapes, tmp_path):
    """SIGKILL after the first frame's crops are committed; the rerun resumes and writes the LMDB an uninterrupted
    run writes, entry for entry."""
    helpers.import_caffe()
    args = ["--root", tiny_cityscapes, "--split", "train", "--size", "128", "256", "--min-pixels", "20"]
    whole = helpers.run_tool("extract_instances", *args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    assert helpers.kill_mid_run("extract_instances", args + ["--out", out], out / "train.partial" / "done.txt") == 1
    assert not (out / "train").exists()
    r = helpers.run_tool("extract_instances", *args, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after 1 done" in r.stdout
    entries = [(k, label, img.tobytes()) for k, label, img in read_lmdb(out / "train")]
    assert entries == [(k, label, img.tobytes()) for k, label, img in read_lmdb(tmp_path / "whole" / "train")]
    assert len(entries) > 3
    manifests = [json.loads((d / "train" / "manifest.json").read_text()) for d in (out, tmp_path / "whole")]
    assert manifests[0]["per_class"] == manifests[1]["per_class"] and manifests[0]["count"] == len(entries)


@pytest.mark.slow
def test_extract_instances_real_sample(sample_instances):
    root, out, manifest = sample_instances
    entries = read_lmdb(out / "train")
    expected = _expected_instances(root, "train", (340, 680), 50)
    assert len(entries) == len(expected) > 50
    assert {frame_and_id(k): label for k, label, _ in entries} == expected
    assert manifest["per_class"]["car"] == sum(1 for v in expected.values() if v == cityscapes.CLASS_INDEX[26])
    assert manifest["count"] == len(entries) and manifest["skipped_small"] > 0
    assert json.loads((out / "train" / "manifest.json").read_text()) == manifest
    # keys are hash-ordered (shuffled for Caffe's sequential Data layer), not grouped by frame
    frames_in_order = [frame_and_id(k)[0] for k, _, _ in entries]
    assert frames_in_order != sorted(frames_in_order)
    # the same settings again: returned as is, not rewritten
    mtime = (out / "train" / "data.mdb").stat().st_mtime_ns
    assert crops.extract_instances(root, "train", out, size=(340, 680), min_pixels=50) == manifest
    assert (out / "train" / "data.mdb").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_extract_crop_is_the_instance_box(sample_instances):
    """A stored crop is the subsampled image in the instance's box + 10% per side, resized (checks BGR, CHW)."""
    root, out, _ = sample_instances
    key, _, img = read_lmdb(out / "train")[0]
    name, iid = frame_and_id(key)
    frame = next(f for f in cityscapes.list_frames(root, "train") if f.name == name)
    image, ids = cityscapes.load_frame(frame, (340, 680))
    ys, xs = np.nonzero(ids == iid)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    px, py = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    x0, y0 = int(max(np.floor(x0 - px), 0)), int(max(np.floor(y0 - py), 0))
    x1, y1 = int(min(np.ceil(x1 + px), 680)), int(min(np.ceil(y1 + py), 340))
    shrink = y1 - y0 >= 224 and x1 - x0 >= 224
    patch = cv2.resize(image[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    np.testing.assert_array_equal(img, patch.transpose(2, 0, 1))


@pytest.mark.slow
def test_extract_resumes_after_an_error(sample_instances, tmp_path):
    """A corrupt frame stops the run with an error naming it; the frames before stay done. The rerun extracts only
    the frames not done, and those whose files changed since (frame 0 is replaced in between), and ends with the
    same LMDB as a clean run."""
    root, clean, manifest = sample_instances
    mirror = tmp_path / "root"
    for f in root.rglob("*.png"):
        dst = mirror / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(f)
    frames = cityscapes.list_frames(mirror, "train")
    last, first = Path(frames[-1].image), Path(frames[0].image)
    last.unlink()
    last.write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(errors.DataError, match=last.name):
        crops.extract_instances(mirror, "train", out, size=(340, 680), min_pixels=50)
    assert not (out / "train").exists() and (out / "train.partial" / "done.txt").read_text().count("\n") == 7
    last.unlink()
    last.symlink_to(root / last.relative_to(mirror))
    first.unlink()
    first.write_bytes((root / first.relative_to(mirror)).read_bytes())  # same pixels, a new file
    lines = []
    resumed = crops.extract_instances(mirror, "train", out, size=(340, 680), min_pixels=50, log=lines.append)
    assert f"the inputs of 1 done items changed (first: {frames[0].name}); redoing them" in lines[0]
    assert lines[1].endswith("resuming after 6 done")
    assert resumed["count"] == manifest["count"] and resumed["per_class"] == manifest["per_class"]
    assert resumed["skipped_small"] == manifest["skipped_small"]
    assert [e[:2] for e in read_lmdb(out / "train")] == [e[:2] for e in read_lmdb(clean / "train")]
    assert not (out / "train.partial").exists()


def test_fragment_boxes_lie_inside_the_box():
    rng = np.random.default_rng(0)
    boxes = crops.fragment_boxes((10, 20, 110, 70), 200, rng)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= (10, 20)).all() and (boxes[:, 2] <= 110).all() and (boxes[:, 3] <= 70).all()
    assert w.min() >= 30 and h.min() >= 15 and w.max() > 90 and h.max() > 45     # sides from 30% to all of it
    assert len({tuple(b) for b in boxes}) > 150                                   # drawn, not fixed
    assert (crops.fragment_boxes((5, 5, 6, 6), 3, rng) == (5, 5, 6, 6)).all()  # a 1-pixel box: itself


def test_extract_with_fragments_and_seed(tiny_cityscapes, tmp_path):
    """--fragments N adds N crops of parts of each instance with its class; --seed reorders the LMDB."""
    helpers.import_caffe()
    kw = dict(size=(128, 256), min_pixels=20)
    plain = crops.extract_instances(tiny_cityscapes, "train", tmp_path / "plain", **kw)
    one = crops.extract_instances(tiny_cityscapes, "train", tmp_path / "one", seed=1, fragments=2, **kw)
    assert one["count"] == 3 * plain["count"] > 0 and one["settings"]["fragments"] == 2
    labels = {frame_and_id(k): label for k, label, _ in read_lmdb(tmp_path / "plain" / "train")}
    entries = read_lmdb(tmp_path / "one" / "train")
    parts = [(k, label, img) for k, label, img in entries if "_part" in k]
    assert len(parts) == 2 * len(labels)
    for key, label, img in parts:                        # a part carries its instance's class, and is another crop
        parent = frame_and_id(key.rsplit("_part", 1)[0])
        assert label == labels[parent]
    whole = {frame_and_id(k): img for k, _, img in entries if "_part" not in k}
    assert sum(np.array_equal(img, whole[frame_and_id(k.rsplit("_part", 1)[0])]) for k, _, img in parts) == 0
    two = crops.extract_instances(tiny_cityscapes, "train", tmp_path / "two", seed=2, fragments=2, **kw)
    names = [k.split("_", 1)[1] for k, _, _ in entries]
    other = [k.split("_", 1)[1] for k, _, _ in read_lmdb(tmp_path / "two" / "train")]
    assert two["count"] == one["count"] and sorted(names) == sorted(other) and names != other


@pytest.mark.slow
def test_extract_cli_missing_root_is_one_line(tmp_path, repo):
    r = subprocess.run([sys.executable, "tools/extract_instances.py", "--root", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "out")], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and str(tmp_path / "nowhere") in r.stderr
    assert not (tmp_path / "out" / "train").exists()
