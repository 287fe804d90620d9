"""dcme_layers.util.resumable, the one resumable-output mechanism of the long jobs: skip, redo, refuse and resume by
the job record, one writer at a time, and a full disk (a real, small tmpfs) as one line. Each job's own kill and
resume tests sit beside that job's tests."""
import time

import pytest

import helpers
from dcme_layers.util import records, resumable
from dcme_layers.util.errors import DataError, PartialDamaged
from dcme_layers.util.store import Store


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
        records.verify(out)

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

@pytest.mark.slow
def test_a_write_error_from_a_full_disk_becomes_one_line(repo, tmp_path):
    """The writer's own ENOSPC (not the free-space check before it) becomes the one-line DiskFullError."""
    disk = tmp_path / "disk"
    r = helpers.in_small_disk(disk, "256k", f"""
        from dcme_layers.util import errors, resumable
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


# --- the driver, Job.run, with a plain-file Store (one file per item) ----------------------------------------------

KEYS = ["a", "b", "c", "d", "e"]


class Files(Store):
    """Item k as the file <partial>/k holding its result; a done item whose file is gone is redone."""

    def __init__(self, damaged=None, fail_complete=False):
        self.damaged, self.fail_complete, self.partial, self.writes = damaged, fail_complete, None, []

    def open(self, partial, done):
        self.partial = partial
        if self.damaged:
            why, self.damaged = self.damaged, None
            raise PartialDamaged(why)
        return {k: v for k, v in done.items() if (partial / k).is_file()}

    def write(self, batch):
        self.writes.append([k for k, _ in batch])
        for key, result in batch:
            (self.partial / key).write_text(result)
        return [(key, result.upper()) for key, result in batch]

    def complete(self, done):
        if self.fail_complete:
            raise DataError("cannot complete")
        (self.partial / "all.txt").write_text("".join(done[k] for k in KEYS))


def produce(seen, fail_at=None):
    def results(todo):
        for key in todo:
            if key == fail_at:
                raise DataError(f"{key}: bad input")
            seen.append(key)
            yield key, key * 2
    return results


def job(out, lines):
    return resumable.Job(out, {"n": 1}, [], log=lines.append)


def test_run_writes_every_item_in_batches_and_finishes(tmp_path):
    out, lines, seen, store = tmp_path / "out", [], [], Files()
    with job(out, lines) as j:
        assert not j.up_to_date()
        done = j.run(KEYS, produce(seen), store, batch=2)
    assert done == {k: (k * 2).upper() for k in KEYS} and seen == KEYS
    assert store.writes == [["a", "b"], ["c", "d"], ["e"]]
    assert (out / "all.txt").read_text() == "AABBCCDDEE" and not (tmp_path / "out.partial").exists()
    with job(out, lines) as j:
        assert j.up_to_date()


def test_an_error_keeps_the_items_produced_and_the_rerun_resumes(tmp_path):
    out, lines, seen = tmp_path / "out", [], []
    with job(out, lines) as j, pytest.raises(DataError, match="c: bad input"):
        j.run(KEYS, produce(seen, fail_at="c"), Files(), batch=16)
    assert (tmp_path / "out.partial" / "done.txt").read_text() == "a\tAA\nb\tBB\n" and not out.exists()
    seen.clear()
    with job(out, lines) as j:
        j.run(KEYS, produce(seen), Files(), batch=16)
    assert seen == ["c", "d", "e"] and lines[-1].endswith("out.partial: resuming after 2 done")
    assert (out / "all.txt").read_text() == "AABBCCDDEE"


def test_lost_items_are_redone_and_a_damaged_partial_starts_over(tmp_path):
    out, lines, seen = tmp_path / "out", [], []
    with job(out, lines) as j, pytest.raises(DataError, match="d: bad input"):
        j.run(KEYS, produce(seen, fail_at="d"), Files())
    (tmp_path / "out.partial" / "b").unlink()  # done, but its data is gone
    seen.clear()
    with job(out, lines) as j, pytest.raises(DataError, match="cannot complete"):
        j.run(KEYS, produce(seen), Files(fail_complete=True))
    assert seen == ["b", "d", "e"] and not out.exists()
    seen.clear()
    with job(out, lines) as j:
        j.run(KEYS, produce(seen), Files(damaged="its files are unreadable"))
    assert lines[-1] == f"{tmp_path / 'out.partial'}: its files are unreadable; starting over"
    assert seen == KEYS and (out / "all.txt").read_text() == "AABBCCDDEE"
