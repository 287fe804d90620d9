"""Nothing lost, nothing silently wrong (issue 9): the one resumable-output mechanism (dcme_layers.util.resumable), a
full disk (a real, small tmpfs in a private mount namespace), stale and truncated outputs, bad ground truth and
bad arguments, each a single line."""
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import helpers
from dcme_layers.data import cityscapes as cs
from dcme_layers.util import resumable

caffe = helpers.import_caffe()

from dcme_layers.data import lmdb_io
from dcme_layers.util.errors import DataError

SIZE = ("86", "171")


def _run(repo, tool, *args, timeout=300):
    return subprocess.run([sys.executable, f"tools/{tool}.py", *map(str, args)], cwd=repo, capture_output=True,
                          text=True, timeout=timeout)


def _content(split_dir):
    return {k: [(key, a.tobytes()) for key, a in lmdb_io.read_datum_lmdb(split_dir / k)] for k in ("images", "vectors")}


def _copy_root(src, dst, splits=("train", "val")):
    for split in splits:
        for sub in ("leftImg8bit", "gtFine"):
            shutil.copytree(src / sub / split, dst / sub / split)
    return dst


# --- the mechanism ----------------------------------------------------------------------------------------------

def test_job_skips_redoes_refuses_and_resumes(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1")
    b.write_text("2")
    out, lines = tmp_path / "out", []

    def job(settings=None, force=False, inputs=None):
        return resumable.Job(out, settings or {"n": 1}, inputs or {"a": [a], "b": [b]}, force, log=lines.append)

    with job() as j:  # a run killed after item "a": nothing final, a partial with "a" done
        assert not j.up_to_date() and j.start() == {}
        (j.partial / "a").write_text("A")
        j.done(("a", "x"))
    assert not out.exists()
    with job() as j:
        assert not j.up_to_date() and j.start() == {"a": "x"}
        (j.partial / "b").write_text("B")
        j.done("b")
        j.finish()
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "job.json"] and not j.partial.exists()
    with job() as j:
        assert j.up_to_date()  # same settings and inputs, files intact
    with job({"n": 2}) as j, pytest.raises(DataError, match=r"out: exists with other settings \(n: 1, now 2\); "
                                                             r"use --force"):
        j.up_to_date()
    with job(force=True) as j:
        assert not j.up_to_date() and lines[-1].endswith("--force, redoing it")
    time.sleep(0.01)
    b.write_text("22")  # a changed input: the finished output is redone, the line names the file
    with job() as j:
        assert not j.up_to_date() and lines[-1] == f"{out}: its input {b} changed since it was written; redoing it"
        j.start()
        (j.partial / "a").write_text("1")
        j.done("a", "b")
        j.finish()
    (out / "a").write_text("truncated?")  # a file of the output changed size after it was finished
    with job() as j:
        assert not j.up_to_date() and lines[-1] == f"{out / 'a'}: 10 bytes, 1 when it was written (truncated or " \
                                                   f"replaced); redoing {out}"
    with pytest.raises(DataError, match="10 bytes, 1 when it was written"):
        resumable.verify(out)

    # a partial whose item "b" got a new input resumes "a" only
    with job() as j:
        j.start()
        j.done("a", "b")
    b.write_text("333")
    with job() as j:
        assert j.start() == {"a": ""}
        assert "the inputs of 1 done items changed (first: b)" in lines[-2]


def test_a_second_writer_is_refused_with_one_line(tmp_path):
    with resumable.Job(tmp_path / "out", {}) as j:
        with pytest.raises(DataError, match=r"out: another run is writing it \(lock .*\.out\.lock\)"):
            resumable.Job(tmp_path / "out", {}).__enter__()
        j.start()


# --- a full disk: a real tmpfs in a private mount namespace ----------------------------------------------------

def test_encode_on_a_full_disk_stops_with_one_line_and_resumes(repo, tiny_cityscapes, tmp_path):
    clean = tmp_path / "clean"
    assert _run(repo, "encode_data", "--root", tiny_cityscapes, "--out", clean, "--size", *SIZE, "--quiet",
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


def test_a_write_error_from_a_full_disk_becomes_one_line(repo, tmp_path):
    """The writer's own ENOSPC (not the free-space check before it) is turned into the same line."""
    disk = tmp_path / "disk"
    r = helpers.in_small_disk(disk, "256k", f"""
        from dcme_layers.util import resumable
        with resumable.Job("{disk}/out", {{}}) as job:
            job.start()
            try:
                with job.writing(job.partial / "big"), open(job.partial / "big", "wb") as f:
                    f.write(b"x" * (1 << 20))
                    f.flush()
            except errors.DiskFullError as e:
                print(e)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{disk}/out.partial/big: no space left on device (0 MiB free); free some space and "
                               f"re-run"), r.stdout


# --- stale and truncated outputs -------------------------------------------------------------------------------

def test_encode_redoes_changed_inputs_force_redoes_and_truncation_is_caught(repo, tiny_cityscapes, tmp_path):
    root, out = _copy_root(tiny_cityscapes, tmp_path / "root", ("val",)), tmp_path / "out"
    enc = ("encode_data", "--root", root, "--out", out, "--size", *SIZE, "--quiet")
    assert _run(repo, *enc).returncode == 0
    before = _content(out / "val")
    frames = cs.list_frames(root, "val")
    ids = cs.read_instance_ids(frames[1].instance_ids)  # replace frame 1's instances with frame 0's
    cv2.imwrite(frames[1].instance_ids, cs.read_instance_ids(frames[0].instance_ids).astype(np.uint16))
    shutil.copy(frames[0].label_ids, frames[1].label_ids)
    r = _run(repo, *enc)
    assert r.returncode == 0 and f"its input {frames[1].instance_ids} changed" in r.stdout, r.stdout
    after = _content(out / "val")
    assert after["vectors"][0] == before["vectors"][0] and after["vectors"][1] != before["vectors"][1]
    cv2.imwrite(frames[1].instance_ids, ids.astype(np.uint16))
    cv2.imwrite(frames[1].label_ids, cs.class_map(ids))
    assert "up to date" not in _run(repo, *enc).stdout
    assert "up to date" in _run(repo, *enc).stdout
    r = _run(repo, *enc, "--force")
    assert r.returncode == 0 and "--force, redoing it" in r.stdout and _content(out / "val") == before

    data = out / "val" / "vectors" / "data.mdb"  # truncated after a finished run
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    with pytest.raises(DataError, match=r"vectors/data.mdb: \d+ bytes, \d+ when it was written \(truncated or "
                                        r"replaced\); re-run"):
        lmdb_io.check_encoded(out / "val")  # what tools/infer.py and make evaluate check before reading
    r = _run(repo, *enc)
    assert r.returncode == 0 and "(truncated or replaced); redoing" in r.stdout
    assert _content(out / "val") == before


def test_oracle_does_not_reuse_predictions_of_another_root(repo, tiny_cityscapes, tmp_path):
    """The same frame names under another root (here: every instance relabelled as one class) are redone."""
    other = _copy_root(tiny_cityscapes, tmp_path / "other", ("val",))
    for f in cs.list_frames(other, "val"):
        ids = cs.read_instance_ids(f.instance_ids)
        ids = np.where(ids >= 24000, 26000 + ids % 1000, ids)  # every instance becomes a car
        cv2.imwrite(f.instance_ids, ids.astype(np.uint16))
        cv2.imwrite(f.label_ids, cs.class_map(ids))
    args = ("--split", "val", "--out", tmp_path / "oracle", "--anchor", "cm", "--method", "vote", "--figures", "0",
            "--no-full-res")
    first = _run(repo, "oracle", "--root", tiny_cityscapes, *args)
    second = _run(repo, "oracle", "--root", other, *args)
    fresh = _run(repo, "oracle", "--root", other, *args[:3], tmp_path / "fresh", *args[4:])
    assert first.returncode == second.returncode == fresh.returncode == 0, second.stderr
    assert "changed since it was written; redoing it" in second.stdout
    rows = [[line for line in r.stdout.splitlines() if ": AP " in line] for r in (second, fresh)]
    assert rows[0] == rows[1]


# --- bad ground truth and arguments: one line ------------------------------------------------------------------

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


@pytest.mark.parametrize("case", sorted(BAD_GROUND_TRUTH))
def test_bad_ground_truth_is_one_line_in_every_reader(repo, tiny_cityscapes, tmp_path, case):
    root = _copy_root(tiny_cityscapes, tmp_path / "root", ("val",))
    frame = cs.list_frames(root, "val")[0]
    which, make, expect = BAD_GROUND_TRUTH[case]
    ids = cs.read_instance_ids(frame.instance_ids)
    assert (ids == 7).any() and (ids == 23).any()  # the synthetic frame has road and sky to corrupt
    bad = getattr(frame, which)
    cv2.imwrite(bad, make(ids))
    for tool, args in (("oracle", ("--root", root, "--split", "val", "--out", tmp_path / "o", "--figures", "0")),
                       ("encode_data", ("--root", root, "--out", tmp_path / "e", "--size", *SIZE, "--quiet"))):
        r = _run(repo, tool, *args)
        last = r.stderr.splitlines()[-1]  # after any progress bar
        assert r.returncode != 0 and "Traceback" not in r.stderr, (tool, r.stderr[-2000:])
        assert last.startswith(tool) and bad in last and expect in last, (tool, r.stderr)


def test_negative_counts_and_a_zero_size_are_refused(repo, tiny_cityscapes, tmp_path):
    for tool, arg in (("oracle", "--limit"), ("oracle", "--figures"), ("evaluate", "--max-instances"),
                      ("evaluate", "--figures"), ("encode_data", "--workers")):
        r = _run(repo, tool, arg, "-1")
        assert r.returncode == 2 and f"argument {arg}: -1 must be" in r.stderr.splitlines()[-1], (tool, r.stderr)
    r = _run(repo, "encode_data", "--root", tiny_cityscapes, "--out", tmp_path / "out", "--size", "0", "0")
    assert r.returncode == 2 and "argument --size: 0 must be >= 1" in r.stderr
    assert not (tmp_path / "out").exists()


def _ctrl_c_default():
    """SIGINT as a terminal's foreground process has it: a suite started in the background by a non-interactive
    shell (`make test &`) inherits SIGINT ignored, and so would the tool under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    r = _run(repo, "encode_data", "--root", tiny_cityscapes, "--out", out, "--size", *SIZE, "--splits", "train",
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
