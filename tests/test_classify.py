"""Instance classification (issue 5, point 3): crops, the instance LMDB extractor, the generated GoogLeNet and the
deploy-net Classifier."""
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import helpers
from dcme_layers.data import cityscapes, lmdb_io
from dcme_layers.net import classify, crops
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
    np.testing.assert_allclose(out[1], (np.array([200, 100, 50], np.float32) - crops.MEAN_BGR)[:, None, None]
                               * np.ones((1, 32, 32)))
    assert np.all(out[0] == 0)  # id 1 has no pixel: an all-mean crop
    # with a margin the crop also shows the black surroundings
    out = crops.instance_crops(image, labels, crop=32, margin=0.25)
    assert np.allclose(out[1][:, 0, 0], -crops.MEAN_BGR) and np.allclose(out[1][:, 16, 16],
                                                                              [96, -17, -73])


def test_instance_crops_empty_and_mismatched():
    image = np.zeros((8, 8, 3), np.uint8)
    assert crops.instance_crops(image, np.zeros((8, 8), np.int32)).shape == (0, 3, 224, 224)
    with pytest.raises(errors.ClassifyError, match="differ in size"):
        crops.instance_crops(image, np.zeros((8, 9), np.int32))
    with pytest.raises(errors.ClassifyError, match="uint8"):
        crops.instance_crops(image.astype(np.float32), np.zeros((8, 8), np.int32))


# ----------------------------------------------------------------------------------------- LMDB extraction --

def _read_lmdb(path):
    import lmdb
    from caffe.proto import caffe_pb2

    env = lmdb.open(str(path), readonly=True, lock=False)
    out = []
    with env.begin() as txn:
        for key, value in txn.cursor():
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            img = np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
            out.append((key.decode(), d.label, img))
    env.close()
    return out


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


def _frame_and_id(key):
    """'<hash>_<frame>_<raw id>' -> (frame, raw id)."""
    name, iid = key.split("_", 1)[1].rsplit("_", 1)
    return name, int(iid)


def test_extract_cli_tiny_cityscapes(tiny_cityscapes, tmp_path, repo):
    """Both splits by default; one entry per instance with >= min pixels at --size, with its class index."""
    helpers.import_caffe()
    out = tmp_path / "instances"
    r = subprocess.run([sys.executable, "tools/extract_instances.py", "--root", str(tiny_cityscapes), "--out",
                        str(out), "--size", "128", "256", "--min-pixels", "20"],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for split in ("train", "val"):
        entries = _read_lmdb(out / split)
        expected = _expected_instances(tiny_cityscapes, split, (128, 256), 20)
        assert len(entries) == len(expected) > 0
        assert {_frame_and_id(k): label for k, label, _ in entries} == expected
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
    entries = [(k, label, img.tobytes()) for k, label, img in _read_lmdb(out / "train")]
    assert entries == [(k, label, img.tobytes()) for k, label, img in _read_lmdb(tmp_path / "whole" / "train")]
    assert len(entries) > 3
    manifests = [json.loads((d / "train" / "manifest.json").read_text()) for d in (out, tmp_path / "whole")]
    assert manifests[0]["per_class"] == manifests[1]["per_class"] and manifests[0]["count"] == len(entries)


@pytest.fixture(scope="module")
def sample_instances(cityscapes_sample, tmp_path_factory):
    helpers.import_caffe()
    out = tmp_path_factory.mktemp("instances")
    manifest = crops.extract_instances(cityscapes_sample, "train", out, size=(340, 680), min_pixels=50)
    return cityscapes_sample, out, manifest


def test_extract_instances_real_sample(sample_instances):
    root, out, manifest = sample_instances
    entries = _read_lmdb(out / "train")
    expected = _expected_instances(root, "train", (340, 680), 50)
    assert len(entries) == len(expected) > 50
    assert {_frame_and_id(k): label for k, label, _ in entries} == expected
    assert manifest["per_class"]["car"] == sum(1 for v in expected.values() if v == cityscapes.CLASS_INDEX[26])
    assert manifest["count"] == len(entries) and manifest["skipped_small"] > 0
    assert json.loads((out / "train" / "manifest.json").read_text()) == manifest
    # keys are hash-ordered (shuffled for Caffe's sequential Data layer), not grouped by frame
    frames_in_order = [_frame_and_id(k)[0] for k, _, _ in entries]
    assert frames_in_order != sorted(frames_in_order)
    # the same settings again: returned as is, not rewritten
    mtime = (out / "train" / "data.mdb").stat().st_mtime_ns
    assert crops.extract_instances(root, "train", out, size=(340, 680), min_pixels=50) == manifest
    assert (out / "train" / "data.mdb").stat().st_mtime_ns == mtime


def test_extract_crop_is_the_instance_box(sample_instances):
    """A stored crop is the subsampled image in the instance's box + 10% per side, resized (checks BGR, CHW)."""
    root, out, _ = sample_instances
    key, _, img = _read_lmdb(out / "train")[0]
    name, iid = _frame_and_id(key)
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
    assert [e[:2] for e in _read_lmdb(out / "train")] == [e[:2] for e in _read_lmdb(clean / "train")]
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
    labels = {_frame_and_id(k): label for k, label, _ in _read_lmdb(tmp_path / "plain" / "train")}
    entries = _read_lmdb(tmp_path / "one" / "train")
    parts = [(k, label, img) for k, label, img in entries if "_part" in k]
    assert len(parts) == 2 * len(labels)
    for key, label, img in parts:                        # a part carries its instance's class, and is another crop
        parent = _frame_and_id(key.rsplit("_part", 1)[0])
        assert label == labels[parent]
    whole = {_frame_and_id(k): img for k, _, img in entries if "_part" not in k}
    assert sum(np.array_equal(img, whole[_frame_and_id(k.rsplit("_part", 1)[0])]) for k, _, img in parts) == 0
    two = crops.extract_instances(tiny_cityscapes, "train", tmp_path / "two", seed=2, fragments=2, **kw)
    names = [k.split("_", 1)[1] for k, _, _ in entries]
    other = [k.split("_", 1)[1] for k, _, _ in _read_lmdb(tmp_path / "two" / "train")]
    assert two["count"] == one["count"] and sorted(names) == sorted(other) and names != other


def test_extract_cli_missing_root_is_one_line(tmp_path, repo):
    r = subprocess.run([sys.executable, "tools/extract_instances.py", "--root", str(tmp_path / "nowhere"),
                        "--out", str(tmp_path / "out")], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and str(tmp_path / "nowhere") in r.stderr
    assert not (tmp_path / "out" / "train").exists()


# ----------------------------------------------------------------------------------------------- GoogLeNet --

@pytest.fixture(scope="module")
def caffe():
    caffe = helpers.import_caffe()
    caffe.set_mode_cpu()
    return caffe


def _write_lmdb(path, crops, labels):
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (c, label) in enumerate(zip(crops, labels)):
            txn.put(b"%08d" % i, lmdb_io.image_datum(c.transpose(2, 0, 1), label))
    env.close()


def _separable_crops(n, seed=0):
    """n 224x224 BGR crops of 2 classes that differ in colour and texture (class 0 person: reddish stripes; class 2
    car: flat bluish), so a few iterations of SGD have something to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 * 2
    images = np.empty((n, 224, 224, 3), np.uint8)
    yy = np.arange(224)[:, None]
    for i, label in enumerate(labels):
        noise = rng.normal(0, 20, (224, 224, 3))
        if label == 0:
            base = np.where((yy // 16) % 2 == 0, 200, 60)[..., None] * np.array([0.3, 0.4, 1.0])
        else:
            base = np.full((224, 224, 1), 120) * np.array([1.0, 0.6, 0.3])
        images[i] = np.clip(base + noise, 0, 255)
    return images, labels


def _param_count(net):
    return {name: sum(b.data.size for b in blobs) for name, blobs in net.params.items()}


def test_generated_prototxt_is_committed(repo, caffe):
    from models.googlenet import net

    files = net.generate()
    assert sorted(files) == ["googlenet_deploy.prototxt", "googlenet_smoke_solver.prototxt",
                             "googlenet_smoke_train.prototxt", "googlenet_solver.prototxt", "googlenet_train.prototxt"]
    for name, text in files.items():
        assert text.startswith("# Generated by tools/make_prototxt.py from models/googlenet/net.py; do not edit.")
        assert (repo / "prototxt" / name).read_text() == text, f"prototxt/{name} is stale: make prototxt"
    solver = files["googlenet_solver.prototxt"]
    for line in ('lr_policy: "poly"', "base_lr: 0.001", "momentum: 0.9", "weight_decay: 0.0002", "power: 0.5",
                 'snapshot_prefix: "models/googlenet/googlenet"', "solver_mode: CPU",
                 'net: "prototxt/googlenet_train.prototxt"'):
        assert line in solver
    losses = {l.name: (l.bottom[0], [round(w, 6) for w in l.loss_weight]) for l in net.train("a", "b").layer
              if l.type == "SoftmaxWithLoss"}
    assert losses == {"loss1/loss": ("loss1/classifier_cs", [0.3]), "loss2/loss": ("loss2/classifier_cs", [0.3]),
                      "loss3/loss3": ("loss3/classifier_cs", [1.0])}
    train = files["googlenet_train.prototxt"]
    assert "batch_size: 64" in train and 'source: "data/instances/train"' in train
    assert 'source: "data/instances/val"' in train


def test_train_and_deploy_nets(caffe, tmp_path):
    """The train net initialises on an LMDB (3 weighted heads, 8 classes) and the deploy net gives (1, 8)
    probabilities; the learnable layers are BVLC GoogLeNet's (same names, same sizes) but for the classifiers."""
    from models.googlenet import net

    crops, labels = _separable_crops(4)
    _write_lmdb(tmp_path / "train", crops, labels)
    train = tmp_path / "train.prototxt"
    train.write_text(str(net.train(str(tmp_path / "train"), str(tmp_path / "train"), batch_size=2,
                                       test_batch_size=2)))
    tnet = caffe.Net(str(train), caffe.TRAIN)
    out = tnet.forward()
    assert set(out) == {"loss1/loss1", "loss2/loss2", "loss3/loss3"}
    for head in ("loss1", "loss2", "loss3"):  # each head: mean softmax cross-entropy of its 8-way classifier
        scores = tnet.blobs[head + "/classifier_cs"].data.astype(np.float64)
        assert scores.shape == (2, 8)
        logp = scores - scores.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        assert float(out[f"{head}/{head}"]) == pytest.approx(-logp[[0, 1], labels[:2]].mean(), rel=1e-4)
    assert tnet.blobs["data"].data.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(tnet.blobs["label"].data, labels[:2])
    test = caffe.Net(str(train), caffe.TEST)
    assert {"loss1/top-1", "loss2/top-1", "loss3/top-1"} <= set(test.forward())

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(net.deploy()))
    dnet = caffe.Net(str(deploy), caffe.TEST)
    dnet.blobs["data"].data[...] = np.random.default_rng(0).normal(0, 50, (1, 3, 224, 224))
    prob = dnet.forward()["prob"]
    assert prob.shape == (1, 8) and abs(float(prob.sum()) - 1) < 1e-5 and np.all(prob > 0)

    counts = _param_count(tnet)
    classifiers = {"loss1/classifier_cs": 1024 * 8 + 8, "loss2/classifier_cs": 1024 * 8 + 8,
                   "loss3/classifier_cs": 1024 * 8 + 8}
    for name, n in classifiers.items():
        assert counts.pop(name) == n
    # BVLC bvlc_googlenet/train_val.prototxt without its three 1000-way classifiers: 57 + 2 convolutions,
    # 2 auxiliary fc layers; 10,303,280 weights and biases (counted from the BVLC prototxt).
    assert len(counts) == 61 and "inception_5b/pool_proj" in counts and "loss2/fc" in counts
    assert sum(counts.values()) == 10303280
    assert _param_count(dnet) == {k: v for k, v in _param_count(tnet).items()
                                  if not k.startswith(("loss1/", "loss2/"))}


@pytest.fixture(scope="module")
def smoke(caffe, tmp_path_factory):
    """A short SGD run with the generated smoke settings (the paper's solver) at batch 4 for 10 iterations on
    separable crops (about 3 s per iteration on 2 cores)."""
    import models
    from models.googlenet import net

    tmp = tmp_path_factory.mktemp("smoke")
    crops, labels = _separable_crops(16)
    _write_lmdb(tmp / "train", crops, labels)
    (tmp / "train.prototxt").write_text(str(net.train(str(tmp / "train"), None, batch_size=4)))
    cfg = dict(net.SMOKE, max_iter=10, random_seed=7)
    (tmp / "solver.prototxt").write_text(models.solver(str(tmp / "train.prototxt"), str(tmp / "snap"), cfg))
    solver = caffe.get_solver(str(tmp / "solver.prototxt"))
    losses = []
    start = time.time()
    for _ in range(cfg["max_iter"]):
        solver.step(1)
        blobs = solver.net.blobs
        losses.append(float(0.3 * blobs["loss1/loss1"].data + 0.3 * blobs["loss2/loss2"].data
                            + blobs["loss3/loss3"].data))
    seconds = (time.time() - start) / cfg["max_iter"]
    weights = tmp / "smoke.caffemodel"
    solver.net.save(str(weights))
    deploy = tmp / "deploy.prototxt"
    deploy.write_text(str(net.deploy()))
    return dict(losses=losses, weights=weights, deploy=deploy, s_per_iter=seconds)


def test_smoke_training_lowers_the_loss(smoke):
    losses = smoke["losses"]
    print("GoogLeNet smoke: %.2f s/iter (batch 4), loss %.3f -> %.3f" % (smoke["s_per_iter"], losses[0],
                                                                        np.mean(losses[-3:])))
    assert np.isfinite(losses).all() and losses[0] > 2
    assert np.mean(losses[-3:]) < 0.5 * losses[0]


def test_classifier(smoke, sample_instances):
    clf = classify.Classifier(smoke["deploy"], smoke["weights"], batch_size=4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)
    labels = np.zeros((60, 100), np.int32)
    labels[5:20, 5:30], labels[30:55, 40:90], labels[0:3, 95:100] = 1, 2, 3
    labels[40:50, 0:10] = 5  # id 4 absent
    ids, conf = clf.classify(image, labels)
    assert ids.shape == conf.shape == (5,) and conf.dtype == np.float32
    assert set(ids.tolist()) <= set(cityscapes.INSTANCE_LABEL_IDS)
    probs = clf.probabilities(image, labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert conf[3] == 0 and np.array_equal(conf[[0, 1, 2, 4]], probs[[0, 1, 2, 4]].max(axis=1))
    # the same crops in one batch of 5 through a net of its own (the classifier ran batches of 4 and 1)
    import caffe
    net = caffe.Net(str(smoke["deploy"]), str(smoke["weights"]), caffe.TEST)
    batch = crops.instance_crops(image, labels, clf.crop, clf.margin)
    net.blobs["data"].reshape(*batch.shape)
    net.blobs["data"].data[...] = batch
    np.testing.assert_allclose(probs, net.forward()["prob"].reshape(5, -1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ids, np.array(cityscapes.INSTANCE_LABEL_IDS)[probs.argmax(axis=1)])
    ids, conf = clf.classify(image, np.zeros((60, 100), np.int32))
    assert ids.shape == conf.shape == (0,)
    with pytest.raises(errors.DataError, match="nope.caffemodel: no such file"):
        classify.Classifier(smoke["deploy"], smoke["deploy"].parent / "nope.caffemodel")
    with pytest.raises(errors.DataError, match="deploy.prototxt: not a caffemodel"):
        classify.Classifier(smoke["deploy"], smoke["deploy"])


def test_classifier_rejects_weights_without_the_8_way_classifier(caffe, smoke, tmp_path):
    """Caffe would silently skip a classifier of another size (e.g. ImageNet's) and classify at random."""
    from models.googlenet import net

    (tmp_path / "five.prototxt").write_text(str(net.deploy(num_classes=5)))
    caffe.Net(str(tmp_path / "five.prototxt"), caffe.TEST).save(str(tmp_path / "five.caffemodel"))
    with pytest.raises(errors.DataError, match=r"five.caffemodel: layer 'loss3/classifier_cs' has blobs "
                                                   r"\[\(5, 1024\), \(5,\)\], .* needs \[\(8, 1024\), \(8,\)\]"):
        classify.Classifier(smoke["deploy"], tmp_path / "five.caffemodel")


def test_classifier_sees_what_training_saw(caffe, smoke, sample_instances, tmp_path):
    """Classifier on a frame's decoded-style labels gives the same probabilities as the train net (TEST phase)
    reading the extracted LMDB crops of the same instances: crops, channel order and mean agree end to end."""
    from models.googlenet import net

    root, out, _ = sample_instances
    entries = _read_lmdb(out / "train")
    name = _frame_and_id(entries[0][0])[0]
    mine = [(k, _frame_and_id(k)[1]) for k, _, _ in entries if _frame_and_id(k)[0] == name]
    frame = next(f for f in cityscapes.list_frames(root, "train") if f.name == name)
    image, ids = cityscapes.load_frame(frame, (340, 680))
    labels = np.zeros(ids.shape, np.int32)
    for k, (_, iid) in enumerate(mine):
        labels[ids == iid] = k + 1
    _write_lmdb(tmp_path / "one", [e[2].transpose(1, 2, 0) for e in entries if e[0] in dict(mine)],
                [e[1] for e in entries if e[0] in dict(mine)])
    (tmp_path / "t.prototxt").write_text(str(net.train(str(tmp_path / "one"), str(tmp_path / "one"),
                                                           test_batch_size=len(mine))))
    tnet = caffe.Net(str(tmp_path / "t.prototxt"), caffe.TEST, weights=str(smoke["weights"]))
    tnet.forward()
    scores = tnet.blobs["loss3/classifier_cs"].data.astype(np.float64)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    # LMDB order (keys sorted) = the order of `mine` = labels 1..K
    got = classify.Classifier(smoke["deploy"], smoke["weights"]).probabilities(image, labels)
    np.testing.assert_allclose(got, expected, atol=1e-4)
