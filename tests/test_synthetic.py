"""dcme_layers.data.synthetic and tools/make_synthetic_cityscapes.py: exact layout and formats, consistency with
cityscapesscripts, determinism and the configuration guard."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from dcme_layers.data import cityscapes as cs, synthetic
from dcme_layers.util.errors import DataError


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_layout_and_formats(tiny_cityscapes):
    root = tiny_cityscapes
    files = _files(root)
    assert ".complete" in files
    names = {"train": [f"synthcity_{i:06d}_000019" for i in range(3)], "val": [f"synthval_{i:06d}_000019" for i in range(2)]}
    for split, frames in names.items():
        city = synthetic.CITIES[split]
        for n in frames:
            for f in (f"leftImg8bit/{split}/{city}/{n}_leftImg8bit.png", f"gtFine/{split}/{city}/{n}_gtFine_labelIds.png",
                      f"gtFine/{split}/{city}/{n}_gtFine_instanceIds.png", f"gtFine/{split}/{city}/{n}_gtFine_polygons.json",
                      f"disparity/{split}/{city}/{n}_disparity.png", f"camera/{split}/{city}/{n}_camera.json"):
                assert f in files
    assert len(files) == 1 + 6 * 5  # nothing else (no temporary files left)
    assert cs.available_splits(root) == ["train", "val"]
    f = cs.list_frames(root, "val")[1]
    img = cv2.imread(f.image, cv2.IMREAD_UNCHANGED)
    lab = cv2.imread(f.label_ids, cv2.IMREAD_UNCHANGED)
    ids = cv2.imread(f.instance_ids, cv2.IMREAD_UNCHANGED)
    assert img.shape == (256, 512, 3) and img.dtype == np.uint8
    assert lab.shape == (256, 512) and lab.dtype == np.uint8
    assert ids.shape == (256, 512) and ids.dtype == np.uint16
    cam = json.loads((root / "camera/val/synthval/synthval_000001_000019_camera.json").read_text())
    assert cam["extrinsic"]["baseline"] == pytest.approx(0.209313)
    assert cam["intrinsic"]["fx"] == pytest.approx(2262.52 / 4)
    disp = cv2.imread(str(root / "disparity/val/synthval/synthval_000001_000019_disparity.png"), cv2.IMREAD_UNCHANGED)
    assert disp.dtype == np.uint16 and disp.shape == (256, 512)


def test_labels_consistent(tiny_cityscapes):
    """labelIds = label part of instanceIds; every id known; polygons redrawn by cityscapesscripts agree."""
    for split in ("train", "val"):
        for f in cs.list_frames(tiny_cityscapes, split):
            ids = cs.read_instance_ids(f.instance_ids)
            lab = cs.read_label_ids(f.label_ids)
            cs.check_ids(ids, f.instance_ids)
            np.testing.assert_array_equal(cs.class_map(ids), lab)
            inst = ids[ids >= 1000]
            assert all(id2label[i // 1000].hasInstances for i in np.unique(inst))
            ann = Annotation()
            ann.fromJsonFile(f.instance_ids.replace("instanceIds.png", "polygons.json"))
            assert (ann.imgHeight, ann.imgWidth) == (256, 512)
            # cityscapesscripts rasterises with PIL, we with OpenCV: edges may differ by a pixel
            redrawn = np.asarray(createLabelImage(ann, "ids"))
            assert (redrawn == lab).mean() > 0.97
            redrawn_inst = np.asarray(createInstanceImage(ann, "ids"))
            assert (redrawn_inst == ids).mean() > 0.97


def test_deterministic_and_config_guard(tmp_path):
    a = synthetic.generate(tmp_path / "a", {"train": 2}, size=(64, 128), seed=5)
    b = synthetic.generate(tmp_path / "b", {"train": 2}, size=(64, 128), seed=5, workers=2)  # in two processes
    c = synthetic.generate(tmp_path / "c", {"train": 2}, size=(64, 128), seed=6)
    assert _files(a) == _files(b)
    for f in _files(a):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    img = "leftImg8bit/train/synthcity/synthcity_000000_000019_leftImg8bit.png"
    assert (a / img).read_bytes() != (c / img).read_bytes()
    mtime = (a / img).stat().st_mtime_ns
    synthetic.generate(a, {"train": 2}, size=(64, 128), seed=5)  # complete with the same config: left alone
    assert (a / img).stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match=f"^{a}: holds a synthetic set with another configuration"):
        synthetic.generate(a, {"train": 2}, size=(64, 128), seed=6)
    assert (a / img).read_bytes() == (b / img).read_bytes()  # nothing lost
    synthetic.generate(a, {"train": 1}, size=(64, 128), seed=6, force=True)
    assert (a / img).read_bytes() == (c / img).read_bytes()
    assert not (a / img.replace("000000", "000001")).exists()


@pytest.mark.slow
def test_cli(tmp_path, repo):
    out = tmp_path / "syn"
    r = subprocess.run([sys.executable, "tools/make_synthetic_cityscapes.py", "--out", str(out), "--train", "1",
                        "--val", "1", "--size", "64", "128"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / ".complete").exists() and cs.available_splits(out) == ["train", "val"]
    r = subprocess.run([sys.executable, "tools/make_synthetic_cityscapes.py", "--out", str(out), "--train", "2",
                        "--size", "64", "128"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"make_synthetic_cityscapes: error: {out}: ")
