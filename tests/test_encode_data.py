"""tools/encode_data.py (`make encode-data`) and its dcme_layers.data.lmdb_io: LMDB round trip (also through Caffe's
own Data layer), configuration guard, a kill, Ctrl-C and a full disk resumed, changed inputs and truncation redone, bad
input in one line."""
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

import helpers

helpers.import_caffe()

from dcme_layers.data import cityscapes as cs, datum, lmdb_io
from dcme_layers.util.errors import DataError

SIZE = ("86", "171")


def _encode(repo, root, out, *extra, timeout=120):
    return subprocess.run([sys.executable, "tools/encode_data.py", "--root", str(root), "--out", str(out), "--size",
                           *SIZE, "--quiet", *extra], cwd=repo, capture_output=True, text=True, timeout=timeout)


def _content(split_dir):
    return {k: [(key, a.tobytes()) for key, a in lmdb_io.read_datum_lmdb(split_dir / k)] for k in ("images", "vectors")}


@pytest.fixture(scope="module")
def encoded(repo, tiny_cityscapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("lmdb")
    r = _encode(repo, tiny_cityscapes, out, "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_round_trip(encoded, tiny_cityscapes):
    assert sorted(p.name for p in encoded.iterdir() if not p.name.startswith(".")) == ["train", "val"]
    for split in ("train", "val"):
        d = encoded / split
        frames = cs.list_frames(tiny_cityscapes, split)
        frames = [frames[i] for i in lmdb_io.frame_order(len(frames), split)]  # train: a seeded permutation
        names = (d / "frames.txt").read_text().split()
        assert names == [f.name for f in frames]
        images = list(lmdb_io.read_datum_lmdb(d / "images"))
        vectors = list(lmdb_io.read_datum_lmdb(d / "vectors"))
        keys = [f"{i:08d}_{n}" for i, n in enumerate(names)]
        assert [k for k, _ in images] == keys and [k for k, _ in vectors] == keys
        total = 0
        for f, (_, img), (_, vec) in zip(frames, images, vectors):
            want_img, want_vec, n = cs.encode_frame(f, (86, 171))
            assert img.dtype == np.uint8 and img.shape == (3, 86, 171)
            assert vec.dtype == np.float32 and vec.shape == (2, 86, 171)
            np.testing.assert_array_equal(img, want_img)
            np.testing.assert_array_equal(vec, want_vec)
            total += n
        m = json.loads((d / "manifest.json").read_text())
        assert m["size"] == [86, 171] and m["input_size"] == [256, 512] and m["anchor"] == "cm"
        assert m["frames"] == len(frames) and m["instances"] == total > 0
        assert m["source"]["root"] == str(tiny_cityscapes.resolve())
        assert m["source"]["files"][0][0] == os.path.relpath(frames[0].image, tiny_cityscapes)
        assert sorted(p.name for p in d.iterdir()) == ["frames.txt", "images", "job.json", "manifest.json", "vectors"]


@pytest.mark.slow
def test_caffe_data_layers_read_aligned_pairs(encoded, tiny_cityscapes, tmp_path):
    """Caffe's own C++ Data layer (LMDB backend) reads both LMDBs in the same order with the right values."""
    import caffe
    d = encoded / "train"
    net_file = tmp_path / "data.prototxt"
    net_file.write_text(f"""
layer {{ name: "data" type: "Data" top: "data" data_param {{ source: "{d / 'images'}" backend: LMDB batch_size: 2 }} }}
layer {{ name: "target" type: "Data" top: "target" data_param {{ source: "{d / 'vectors'}" backend: LMDB batch_size: 2 }} }}
""")
    caffe.set_mode_cpu()
    net = caffe.Net(str(net_file), caffe.TEST)
    net.forward()
    frames = [cs.list_frames(tiny_cityscapes, "train")[i] for i in lmdb_io.frame_order(3, "train")]
    for i in range(2):
        img, vec, _ = cs.encode_frame(frames[i], (86, 171))
        np.testing.assert_array_equal(net.blobs["data"].data[i], img.astype(np.float32))
        np.testing.assert_array_equal(net.blobs["target"].data[i], vec)


@pytest.mark.slow
def test_up_to_date_other_config_and_force(repo, encoded, tiny_cityscapes, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(encoded, out)
    before = _content(out / "train")
    r = _encode(repo, tiny_cityscapes, out, "--splits", "train")
    assert r.returncode == 0 and "up to date" in r.stdout
    r = _encode(repo, tiny_cityscapes, out, "--splits", "train", "--anchor", "bbox")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"encode_data: error: {out / 'train'}: exists with other settings")
    assert "--force" in r.stderr
    assert _content(out / "train") == before  # untouched
    r = _encode(repo, tiny_cityscapes, out, "--splits", "train", "--anchor", "bbox", "--force", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "train" / "manifest.json").read_text())["anchor"] == "bbox"
    after = _content(out / "train")
    assert after["images"] == before["images"] and after["vectors"] != before["vectors"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["train", "val"]


@pytest.mark.slow
def test_kill_and_resume(repo, encoded, tiny_cityscapes, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "tools/encode_data.py", "--root", str(tiny_cityscapes), "--out", str(out), "--size", *SIZE,
           "--splits", "train", "--workers", "1", "--commit-every", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=helpers.clean_env(DCME_TEST_ITEM_DELAY="1.0"))
    progress = out / "train.partial" / "done.txt"
    helpers.wait_for_done(proc, progress)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = progress.read_text().count("\n")
    assert 1 <= done < 3, "the encoder was not killed mid-way"
    assert not (out / "train").exists()  # nothing that looks complete
    assert sorted(p.name for p in (out / "train.partial").iterdir()) == ["done.txt", "images", "job.json", "vectors"]
    r = _encode(repo, tiny_cityscapes, out, "--splits", "train", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert f"resuming after {done} done" in r.stdout
    assert not (out / "train.partial").exists()
    assert _content(out / "train") == _content(encoded / "train")  # identical to an uninterrupted run
    m, ref = (json.loads((d / "train" / "manifest.json").read_text()) for d in (out, encoded))
    assert m["instances_per_frame"] == ref["instances_per_frame"]


@pytest.mark.slow
def test_bad_input_keeps_committed_frames(repo, tiny_cityscapes, tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    for sub in ("leftImg8bit", "gtFine"):
        shutil.copytree(tiny_cityscapes / sub / "train", root / sub / "train")
    frames = [cs.list_frames(root, "train")[i] for i in lmdb_io.frame_order(3, "train")]  # in LMDB order
    # frame 0 has no instances (valid), frame 2 is a corrupt PNG
    cv2.imwrite(frames[0].instance_ids, np.full((256, 512), 7, np.uint16))
    cv2.imwrite(frames[0].label_ids, np.full((256, 512), 7, np.uint8))
    data = open(frames[2].image, "rb").read()
    open(frames[2].image, "wb").write(data[:len(data) // 2])
    r = _encode(repo, root, out, "--workers", "1", "--commit-every", "1")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"encode_data: error: {frames[2].image}: cannot decode image (corrupt or not an image)"
    assert not (out / "train").exists()
    assert (out / "train.partial" / "done.txt").read_text().count("\n") == 2  # frames 0 and 1 kept
    shutil.copy(tiny_cityscapes / os.path.relpath(frames[2].image, root), frames[2].image)  # fix it, resume
    r = _encode(repo, root, out, "--workers", "1")
    assert r.returncode == 0 and "resuming after 2 done" in r.stdout
    (_, vec0), = [kv for kv in lmdb_io.read_datum_lmdb(out / "train" / "vectors") if kv[0].endswith(frames[0].name)]
    assert vec0.shape == (2, 86, 171) and not vec0.any()
    # a label without its image: one line naming the label, the complete output is kept
    before = _content(out / "train")
    os.unlink(frames[1].image)
    r = _encode(repo, root, out, "--force")
    assert r.returncode == 1
    assert r.stderr == f"encode_data: error: {frames[1].instance_ids}: label has no {frames[1].name}_leftImg8bit.png " \
                       f"in {root / 'leftImg8bit' / 'train' / 'synthcity'}\n"
    assert _content(out / "train") == before


def test_library_errors(tiny_cityscapes, tmp_path):
    with pytest.raises(DataError, match="no split"):
        lmdb_io.encode_dataset(tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="not an LMDB"):
        list(lmdb_io.read_datum_lmdb(tmp_path))
    with pytest.raises(ValueError, match="NaN"):
        datum.float_datum(np.full((2, 3, 4), np.nan, np.float32))
    v = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    from caffe.proto import caffe_pb2
    d = caffe_pb2.Datum()
    d.ParseFromString(datum.float_datum(v))
    assert (d.channels, d.height, d.width) == (2, 3, 4) and not d.data
    np.testing.assert_array_equal(np.array(d.float_data, np.float32).reshape(v.shape), v)


@pytest.mark.slow
def test_train_split_is_shuffled_across_cities_and_pairs_stay_aligned(repo, tiny_cityscapes, tmp_path):
    """Caffe's Data layer reads an LMDB in key order: the train split's keys must not run city by city (sorted order
    would put every batch in one city), and each image key must still hold its own frame's vectors."""
    root = tmp_path / "root"
    for i, f in enumerate(cs.list_frames(tiny_cityscapes, "train") * 3):  # 9 frames in 3 cities
        city, name = f"city{i // 3}", f"city{i // 3}_{i:06d}_000019"  # each city holds all 3 scenes
        for src, sub, suffix in ((f.image, "leftImg8bit", cs.IMAGE_SUFFIX),
                                 (f.instance_ids, "gtFine", cs.INSTANCE_SUFFIX), (f.label_ids, "gtFine", cs.LABEL_SUFFIX)):
            dst = root / sub / "train" / city / (name + suffix)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    r = _encode(repo, root, tmp_path / "out", "--workers", "1")
    assert r.returncode == 0, r.stderr
    names = (tmp_path / "out" / "train" / "frames.txt").read_text().split()
    cities = [n.split("_")[0] for n in names]
    assert sorted(names) != names and cities != sorted(cities)  # not in sorted (city) order
    assert any(a != b for a, b in zip(cities, cities[1:3]))     # the first batch of 3 already mixes cities
    frames = {f.name: f for f in cs.list_frames(root, "train")}
    for (key, img), (vkey, vec) in zip(lmdb_io.read_datum_lmdb(tmp_path / "out" / "train" / "images"),
                                       lmdb_io.read_datum_lmdb(tmp_path / "out" / "train" / "vectors")):
        want_img, want_vec, _ = cs.encode_frame(frames[key[9:]], (86, 171))
        assert key == vkey
        np.testing.assert_array_equal(img, want_img)
        np.testing.assert_array_equal(vec, want_vec)
    manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    assert "RandomState(1337)" in manifest["order"]


@pytest.mark.slow
def test_encode_on_a_full_disk_stops_with_one_line_and_resumes(tiny_cityscapes, tmp_path):
    clean = tmp_path / "clean"
    assert helpers.run_tool("encode_data", "--root", tiny_cityscapes, "--out", clean, "--size", *SIZE, "--quiet",
                            "--splits", "train").returncode == 0
    disk, keep = tmp_path / "disk", tmp_path / "kept"
    r = helpers.in_small_disk(disk, "1300k", f"""
        a = tool("encode_data", "--root", "{tiny_cityscapes}", "--out", "{disk}/lmdb", "--size", *{SIZE!r},
                 "--splits", "train", "--workers", "1", "--commit-every", "1", "--quiet")
        print("RC1", a.returncode); print("ERR1", a.stderr.strip().replace(chr(10), " | "))
        remount("64m")
        b = tool("encode_data", "--root", "{tiny_cityscapes}", "--out", "{disk}/lmdb", "--size", *{SIZE!r},
                 "--splits", "train", "--workers", "1", "--quiet")
        print("RC2", b.returncode); print("OUT2", b.stdout.strip().replace(chr(10), " | "))
        import shutil; shutil.copytree("{disk}/lmdb/train", "{keep}")
    """)
    assert r.returncode == 0, r.stderr
    got = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert got["RC1"] == "1"
    assert got["ERR1"].startswith(f"encode_data: error: {disk}/lmdb/train.partial: no space left on device (")
    assert got["ERR1"].endswith("MiB free); free some space and re-run: the 1 items done are kept and the run resumes")
    assert got["RC2"] == "0" and "resuming after 1 done" in got["OUT2"]
    assert _content(keep) == _content(clean / "train")  # identical to a run that had room


@pytest.mark.slow
def test_encode_redoes_changed_inputs_force_redoes_and_truncation_is_caught(tiny_cityscapes, tmp_path):
    root, out = helpers.copy_root(tiny_cityscapes, tmp_path / "root", ("val",)), tmp_path / "out"
    enc = ("encode_data", "--root", root, "--out", out, "--size", *SIZE, "--quiet")
    assert helpers.run_tool(*enc).returncode == 0
    before = _content(out / "val")
    frames = cs.list_frames(root, "val")
    ids = cs.read_instance_ids(frames[1].instance_ids)  # replace frame 1's instances with frame 0's
    cv2.imwrite(frames[1].instance_ids, cs.read_instance_ids(frames[0].instance_ids).astype(np.uint16))
    shutil.copy(frames[0].label_ids, frames[1].label_ids)
    r = helpers.run_tool(*enc)
    assert r.returncode == 0 and f"its input {frames[1].instance_ids} changed" in r.stdout, r.stdout
    after = _content(out / "val")
    assert after["vectors"][0] == before["vectors"][0] and after["vectors"][1] != before["vectors"][1]
    cv2.imwrite(frames[1].instance_ids, ids.astype(np.uint16))
    cv2.imwrite(frames[1].label_ids, cs.class_map(ids))
    assert "up to date" not in helpers.run_tool(*enc).stdout
    assert "up to date" in helpers.run_tool(*enc).stdout
    r = helpers.run_tool(*enc, "--force")
    assert r.returncode == 0 and "--force, redoing it" in r.stdout and _content(out / "val") == before

    data = out / "val" / "vectors" / "data.mdb"  # truncated after a finished run
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    with pytest.raises(DataError, match=r"vectors/data.mdb: \d+ bytes, \d+ when it was written \(truncated or "
                                        r"replaced\); re-run"):
        lmdb_io.check_encoded(out / "val")  # what tools/infer.py and make evaluate check before reading
    r = helpers.run_tool(*enc)
    assert r.returncode == 0 and "(truncated or replaced); redoing" in r.stdout
    assert _content(out / "val") == before


def _ctrl_c_default():
    """SIGINT as a terminal's foreground process has it: a suite started in the background by a non-interactive
    shell (`make test &`) inherits SIGINT ignored, and so would the tool under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_on_encode_is_one_line_and_resumable(repo, tiny_cityscapes, tmp_path, workers):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "tools/encode_data.py", "--root", str(tiny_cityscapes), "--out", str(out),
                             "--size", *SIZE, "--splits", "train", "val", "--workers", workers, "--commit-every", "1",
                             "--quiet"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_ctrl_c_default,
                            env=helpers.clean_env(DCME_TEST_ITEM_DELAY="3.0"))
    helpers.wait_for_done(proc, out / "train.partial" / "done.txt")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group, mid-sleep
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err == "encode_data: interrupted; committed frames are kept, re-run to resume\n", err
    r = helpers.run_tool("encode_data", "--root", tiny_cityscapes, "--out", out, "--size", *SIZE, "--splits", "train",
                         "--quiet")
    assert r.returncode == 0 and "resuming after" in r.stdout


def test_encoding_in_this_process_leaves_ctrl_c_alone(tiny_cityscapes, tmp_path):
    """Only pool workers ignore SIGINT: a serial encode (--workers 1, or a library call) must not make its own
    process, or the processes it starts later, deaf to Ctrl-C."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)   # as Python starts in a terminal
    try:
        lmdb_io.encode_dataset(tiny_cityscapes, tmp_path / "out", ["val"], size=(43, 86), workers=1,
                               progress=False, log=lambda *_: None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
