"""dcme_layers.data.cityscapes: labels from cityscapesscripts, ids, subsampling, frame listing and bad input (one line
in every tool that reads the ground truth); proven on the real sample (8 train frames) when it is present."""
import shutil

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels, name2label

import helpers
from dcme_layers.core.encoding import instance_anchors, vector_map
from dcme_layers.data import cityscapes as cs
from dcme_layers.util.errors import DataError


def test_instance_labels_come_from_cityscapesscripts():
    names = [l.name for l in cs.INSTANCE_LABELS]
    assert names == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert cs.INSTANCE_LABEL_IDS == (24, 25, 26, 27, 28, 31, 32, 33)
    assert all(any(l is m for m in labels) for l in cs.INSTANCE_LABELS)  # the library's own Label objects
    assert cs.CLASS_INDEX == {24: 0, 25: 1, 26: 2, 27: 3, 28: 4, 31: 5, 32: 6, 33: 7}


def test_instance_and_class_maps():
    raw = np.array([[0, 7, 24, 24000],
                    [26001, 29000, 30002, 33005],
                    [1, 26, 25003, 11]], np.int32)  # 24, 26: groups; 29xxx, 30xxx: caravan, trailer (ignored)
    np.testing.assert_array_equal(cs.instance_map(raw), [[0, 0, 0, 24000], [26001, 0, 0, 33005], [0, 0, 25003, 0]])
    assert cs.instance_map(raw).dtype == np.int32
    c = cs.class_map(raw)
    assert c.dtype == np.uint8
    np.testing.assert_array_equal(c, [[0, 7, 24, 24], [26, 29, 30, 33], [1, 26, 25, 11]])


def test_check_ids():
    cs.check_ids(np.array([[0, 7, 26, 26001, 33999]]))
    for bad, word in [(40, "unknown"), (7001, "no instances"), (99000, "unknown")]:
        with pytest.raises(DataError, match=rf"^x\.png: id {bad}: .*{word}"):
            cs.check_ids(np.array([[7, bad]]), "x.png")


def test_subsample():
    rng = np.random.default_rng(0)
    image = np.full((102, 204, 3), (10, 20, 30), np.uint8)
    ids = rng.choice([0, 7, 26000, 26001, 24003], size=(102, 204)).astype(np.int32)
    img, small = cs.subsample(image, ids, (34, 68))
    assert img.shape == (34, 68, 3) and img.dtype == np.uint8 and small.shape == (34, 68)
    assert (img == (10, 20, 30)).all()  # area interpolation of a constant image
    assert set(np.unique(small)) <= set(np.unique(ids))  # nearest neighbour never invents ids
    np.testing.assert_array_equal(small, ids[(np.arange(34) * 3)[:, None], np.arange(68) * 3])
    with pytest.raises(ValueError):
        cs.subsample(image, ids[:50], (34, 68))


def test_real_sample(cityscapes_sample):
    frames = cs.list_frames(cityscapes_sample, "train")
    assert [f.name for f in frames] == [f"aachen_{i:06d}_000019" for i in range(8)]
    assert cs.available_splits(cityscapes_sample) == ["train"]
    total = total8 = 0
    for f in frames:
        ids = cs.read_instance_ids(f.instance_ids)
        assert ids.shape == (1024, 2048) and ids.dtype == np.int32
        cs.check_ids(ids, f.instance_ids)
        u = np.unique(ids)
        total += int((u >= 1000).sum())
        total8 += len(np.unique(cs.instance_map(ids))) - 1
        # labelIds agree with the label part of instanceIds
        np.testing.assert_array_equal(cs.class_map(ids), cs.read_label_ids(f.label_ids))
    # The README's 124 instances are all of the 8 evaluated classes (no caravan/trailer in these frames).
    assert total == 124 and total8 == 124


def test_real_frame_encoding(cityscapes_sample):
    f = cs.list_frames(cityscapes_sample, "train")[4]
    image, vmap, n = cs.encode_frame(f)
    assert image.shape == (3, 340, 680) and image.dtype == np.uint8
    assert vmap.shape == (2, 340, 680) and vmap.dtype == np.float32
    _, ids = cs.load_frame(f)
    inst = cs.instance_map(ids)
    assert n == len(np.unique(inst)) - 1 > 10
    rows, cols = np.mgrid[:340, :680]
    assert not vmap[:, inst == 0].any()
    for i in np.unique(inst[inst > 0]):
        m = inst == i
        cm = cols[m].mean(), rows[m].mean()
        np.testing.assert_allclose(cols[m] + vmap[0][m], cm[0], atol=1e-3)
        np.testing.assert_allclose(rows[m] + vmap[1][m], cm[1], atol=1e-3)
    # the image is the area-subsampled BGR image
    full = cv2.imread(f.image)
    np.testing.assert_array_equal(image.transpose(1, 2, 0), cv2.resize(full, (680, 340), interpolation=cv2.INTER_AREA))


@pytest.fixture
def root_copy(tiny_cityscapes, tmp_path):
    """A writable copy of the tiny synthetic train split (leftImg8bit and gtFine)."""
    for sub in ("leftImg8bit", "gtFine"):
        shutil.copytree(tiny_cityscapes / sub / "train", tmp_path / sub / "train")
    return tmp_path


def test_list_frames_pairs(root_copy):
    frames = cs.list_frames(root_copy, "train")
    assert [f.name for f in frames] == [f"synthcity_{i:06d}_000019" for i in range(3)]
    f = frames[1]
    assert f.split == "train" and f.city == "synthcity" and f.image.endswith("synthcity_000001_000019_leftImg8bit.png")
    with pytest.raises(DataError, match="no such directory"):
        cs.list_frames(root_copy, "val")


@pytest.mark.parametrize("remove, named", [("image", "instance_ids"), ("instance_ids", "image"),
                                           ("label_ids", "instance_ids")])
def test_missing_partner_is_named(root_copy, remove, named):
    f = cs.list_frames(root_copy, "train")[1]
    (root_copy / getattr(f, remove)).unlink()
    with pytest.raises(DataError) as e:
        cs.list_frames(root_copy, "train")
    assert str(e.value).startswith(getattr(f, named) + ":")
    assert "\n" not in str(e.value)


def test_corrupt_wrong_size_unknown_id_empty(root_copy):
    frames = cs.list_frames(root_copy, "train")
    # corrupt PNG (truncated)
    data = open(frames[0].image, "rb").read()
    open(frames[0].image, "wb").write(data[:len(data) // 3])
    with pytest.raises(DataError, match="^" + frames[0].image + ": cannot decode"):
        cs.encode_frame(frames[0], (86, 171))
    # label of another size than its image
    ids = cs.read_instance_ids(frames[1].instance_ids)
    cv2.imwrite(frames[1].instance_ids, ids[:200].astype(np.uint16))
    with pytest.raises(DataError, match="^" + frames[1].instance_ids + ": size 512x200 differs"):
        cs.encode_frame(frames[1], (86, 171))
    # label id unknown to cityscapesscripts
    ids = cs.read_instance_ids(frames[2].instance_ids)
    ids[5, 5] = 45
    cv2.imwrite(frames[2].instance_ids, ids.astype(np.uint16))
    with pytest.raises(DataError, match="^" + frames[2].instance_ids + ": id 45: label id 45 unknown"):
        cs.encode_frame(frames[2], (86, 171))
    # a frame without instances is valid: all-zero vector map
    cv2.imwrite(frames[2].instance_ids, np.full(ids.shape, name2label["road"].id, np.uint16))
    cv2.imwrite(frames[2].label_ids, np.full(ids.shape, name2label["road"].id, np.uint8))  # its labelIds agree
    image, vmap, n = cs.encode_frame(frames[2], (86, 171))
    assert n == 0 and vmap.shape == (2, 86, 171) and not vmap.any() and image.any()
    # expected full-resolution size
    with pytest.raises(DataError, match="expected 2048x1024"):
        cs.encode_frame(frames[2], (86, 171), expect_shape=(1024, 2048))


def test_vector_map_of_subsampled_ids_matches_anchors(tiny_cityscapes):
    f = cs.list_frames(tiny_cityscapes, "val")[0]
    _, ids = cs.load_frame(f, (128, 256))
    inst = cs.instance_map(ids)
    for anchor in ("cm", "bbox"):
        v = vector_map(inst, anchor)
        keys, anchors = instance_anchors(inst, anchor)
        rows, cols = np.mgrid[:128, :256]
        for k, (ax, ay) in zip(keys, anchors):
            m = inst == k
            np.testing.assert_allclose(cols[m] + v[0][m], ax, atol=1e-3)
            np.testing.assert_allclose(rows[m] + v[1][m], ay, atol=1e-3)


SIZE = ("86", "171")  # tools/encode_data.py --size of the runs below
# case: (which file, its new content from the frame's instanceIds, what the line says)
BAD_GROUND_TRUTH = {
    "unknown id 45": ("instance_ids", lambda ids: np.where(ids == 7, 45, ids).astype(np.uint16),
                      "id 45: label id 45 unknown to cityscapesscripts"),
    "sky with an instance index": ("instance_ids", lambda ids: np.where(ids == 23, 23005, ids).astype(np.uint16),
                                   "id 23005: label 'sky' (id 23) has no instances"),
    "label of another size": ("instance_ids", lambda ids: ids[:128].astype(np.uint16),
                              "size 512x128 differs from its image"),
    "16-bit labelIds": ("label_ids", lambda ids: cs.class_map(ids).astype(np.uint16), "labelIds PNG must be 8-bit"),
    "all-zero labelIds": ("label_ids", lambda ids: np.zeros(ids.shape, np.uint8), "contradicts its instanceIds"),
}


@pytest.mark.slow
@pytest.mark.usefixtures("caffe")  # tools/encode_data.py writes Datum LMDBs
@pytest.mark.parametrize("case", sorted(BAD_GROUND_TRUTH))
def test_bad_ground_truth_is_one_line_in_every_reader(tiny_cityscapes, tmp_path, case):
    root = helpers.copy_root(tiny_cityscapes, tmp_path / "root", ("val",))
    frame = cs.list_frames(root, "val")[0]
    which, make, expect = BAD_GROUND_TRUTH[case]
    ids = cs.read_instance_ids(frame.instance_ids)
    assert (ids == 7).any() and (ids == 23).any()  # the synthetic frame has road and sky to corrupt
    bad = getattr(frame, which)
    cv2.imwrite(bad, make(ids))
    for tool, args in (("oracle", ("--root", root, "--split", "val", "--out", tmp_path / "o", "--figures", "0")),
                       ("encode_data", ("--root", root, "--out", tmp_path / "e", "--size", *SIZE, "--quiet"))):
        r = helpers.run_tool(tool, *args)
        last = r.stderr.splitlines()[-1]  # after any progress bar
        assert r.returncode != 0 and "Traceback" not in r.stderr, (tool, r.stderr[-2000:])
        assert last.startswith(tool) and bad in last and expect in last, (tool, r.stderr)
