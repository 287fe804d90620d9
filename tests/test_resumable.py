"""resumable.Job.run: the one driver of the long jobs, with a plain-file Store (one file per item)."""
import pytest

from dcme_layers.util import resumable
from dcme_layers.util.errors import DataError, PartialDamaged
from dcme_layers.util.store import Store

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
