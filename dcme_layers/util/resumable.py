"""Resumable outputs: the one mechanism every long job writes through (encode-data, instance crops, inference,
export of predictions, tuning).

A job's output ``final`` (a folder, or one file) is built in the folder ``<final>.partial`` beside it:

  job.json   what the output is made from: the job's settings, and the path, size and mtime of every input file
             (and the content hash of small ones)
  done.txt   one line per finished item, ``<key>\\t<value>``, appended only once the item's data is durably on
             disk: a kill, a crash or a full disk never marks an item done that is not written
  ...        the job's own files (its ``Store``)

A lock file ``.<name>.lock`` beside ``final`` keeps a second run out. ``Job.finish`` records the size of every
file of the output (dcme_layers.util.records) and renames the folder over ``final`` (a file output: the payload
file, then ``<final>.job.json`` beside it), so ``final`` is always complete, old or new. A rerun then:

- skips an output whose settings and inputs are unchanged and whose files still have their recorded sizes
  (a truncated or half-copied output is redone, never trusted);
- redoes one whose input files changed (the line names the first changed file);
- refuses one made with other settings unless ``force`` (which always redoes);
- resumes a ``.partial`` of the same settings and inputs from its done list, and starts one of anything else over.

Write errors (a full disk above all) end the job with one line naming the file and saying that a rerun resumes.
"""
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from dcme_layers.util import disk
from dcme_layers.util.errors import DataError, DiskFullError, PartialDamaged
from dcme_layers.util.files import atomic_write
from dcme_layers.util.records import (DONE, RECORD, DoneList, changed_input, file_record, output_sizes, read_done,
                                      read_record, record_path, size_problem)

__all__ = ["ITEM_DELAY", "Job"]

#: Seconds every job waits after marking items done (tests only: it lets them kill a job between two items).
ITEM_DELAY = float(os.environ.get("DCME_TEST_ITEM_DELAY") or 0)


class Job:
    """One resumable output (see the module docstring). Use as a context manager, which holds the lock:

        with Job(final, settings, inputs, force=force) as job:
            if not job.up_to_date():
                job.run(keys, produce, store)

    ``start``, ``done`` and ``finish`` are steps of ``run``, for a job that drives them itself.

    Arguments:
        final: the output path; a folder, or a file when ``payload`` is given.
        settings: JSON-ready dict of everything but the input files that the output depends on.
        inputs: the input files (fingerprinted by file_record): a list of paths, or {item key: [paths]} when each
            item has its own, so that a resumed run redoes only the items whose files changed.
        force: redo even an up-to-date output, and replace one of other settings.
        payload: for a file output, the name of the file inside ``job.partial`` that becomes ``final``.
        what: how messages call the output ("encoded split", "blob file", ...).
        log: where the lines about skipping, redoing and resuming go.
    """

    def __init__(self, final, settings, inputs=(), force=False, payload=None, what="output", log=print):
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + ".partial")
        self.payload = payload
        self.force, self.what, self.log = force, what, log
        if not isinstance(inputs, dict):
            inputs = {"": list(inputs)}
        self.record = {"settings": settings, "inputs": {k: [file_record(p) for p in v] for k, v in inputs.items()}}
        self._lock = None
        self._done = None   # the DoneList while the partial is open

    def __enter__(self):
        self.final.parent.mkdir(parents=True, exist_ok=True)
        path = self.final.with_name(f".{self.final.name}.lock")
        self._lock = open(path, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DataError(f"{self.final}: another run is writing it (lock {path}); wait for it to finish or stop "
                            f"it") from None
        return self

    def __exit__(self, *exc):
        if self._done:
            self._done.close()
        self._lock.close()

    # --- the finished output ------------------------------------------------------------------------------------
    def up_to_date(self):
        """True when ``final`` is a finished output of the same settings and inputs with intact files (then the
        job has nothing to do); False when it must be (re)made. DataError when it was made with other settings
        and not ``force``."""
        if not self.final.exists():
            return False
        old = read_record(self.final)
        if self.force:
            self.log(f"{self.final}: --force, redoing it")
            return False
        if old is None:
            raise DataError(f"{self.final}: exists but has no {record_path(self.final).name} (not a {self.what} "
                            f"written by this version); use --force to replace it or choose another --out")
        if old.get("settings") != self.record["settings"]:
            raise self._other_settings(old["settings"], self.record["settings"])
        changed = changed_input(old.get("inputs", {}), self.record["inputs"])
        if changed:
            self.log(f"{self.final}: its input {changed} changed since it was written; redoing it")
            return False
        problem = size_problem(self.final, old)
        if problem:
            self.log(f"{problem}; redoing {self.final}")
            return False
        self.record = old
        return True

    def _other_settings(self, old, new):
        key = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), None)
        return DataError(f"{self.final}: exists with other settings ({key}: {old.get(key)!r}, now {new.get(key)!r}); "
                         f"use --force to replace it or choose another --out")

    # --- the partial output -------------------------------------------------------------------------------------
    def start(self):
        """Open ``partial`` for writing. One of the same settings is resumed: its done items whose input files
        changed since are dropped (redone); one of other settings, or whose shared inputs changed, is started
        over. Returns {key: value} of the items done so far."""
        old = self._partial_record()
        if not self.partial.exists():
            self._create_partial()
            old = self.record
        self._done = DoneList(self.partial / DONE)
        done = self._done.read()
        changed = [k for k in done if old["inputs"].get(k) != self.record["inputs"].get(k)]
        if changed:
            self.log(f"{self.partial}: the inputs of {len(changed)} done items changed (first: {changed[0]}); "
                     f"redoing them")
            done = {k: v for k, v in done.items() if k not in changed}
            self._done.keep(done)
        if old != self.record:
            atomic_write(self.partial / RECORD, lambda t: t.write_text(json.dumps(self.record) + "\n"))
        if done:
            self.log(f"{self.partial}: resuming after {len(done)} done")
        return done

    def _partial_record(self):
        """The job.json of a partial left by a run of the same settings and shared inputs; any other is removed."""
        if not self.partial.exists():
            return None
        try:
            old = json.loads((self.partial / RECORD).read_text())
        except (OSError, ValueError):
            old = None
        if old is None or old.get("settings") != self.record["settings"] or \
                old["inputs"].get("") != self.record["inputs"].get(""):
            why = "other settings or inputs" if old else "an unreadable job.json"
            self.log(f"{self.partial}: left by a run with {why}; starting over")
            shutil.rmtree(self.partial)
        return old

    def _create_partial(self):
        tmp = self.partial.with_name(self.partial.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / RECORD).write_text(json.dumps(self.record) + "\n")
        (tmp / DONE).write_text("")
        os.replace(tmp, self.partial)

    def _restart(self, why):
        """Start ``partial`` over; returns the empty done dict."""
        self.log(f"{self.partial}: {why}; starting over")
        self._done.close()
        shutil.rmtree(self.partial)
        return self.start()

    def done(self, *items):
        """Mark items done: each a key or a (key, value) pair. Call only once their data is flushed to disk."""
        with self.writing(self.partial / DONE):
            self._done.add(i if isinstance(i, tuple) else (i, "") for i in items)
        if ITEM_DELAY:
            time.sleep(ITEM_DELAY)

    def _ensure_space(self, nbytes):
        """DiskFullError (before anything is written) unless ``nbytes`` + RESERVE bytes are free for the partial."""
        free = disk.free_bytes(self.partial)
        if free < nbytes + disk.RESERVE:
            raise self._disk_full(self.partial, free)

    def _disk_full(self, path, free=None):
        if free is None:
            free = disk.free_bytes(self.partial)
        n = len(read_done(self.partial / DONE)) if (self.partial / DONE).is_file() else 0
        return DiskFullError(f"{path}: no space left on device ({free >> 20} MiB free); free some space and re-run: "
                             f"the {n} items done are kept and the run resumes")

    def writing(self, path):
        """Context manager around a write to ``path``: a full-disk error becomes DiskFullError (one line)."""
        return disk.full_disk_raises(lambda: self._disk_full(path), self.partial.parent)

    # --- the whole job ------------------------------------------------------------------------------------------
    def run(self, keys, produce, store, batch=1, desc=None, unit="frame"):
        """Make the output once ``up_to_date`` said it must be: open or resume the partial, produce and write every
        item not done, marking each done once on disk, then ``store.complete`` and ``finish``.

        Arguments:
            keys: every item's key, in output order.
            produce: the keys still to do -> iterable of (key, result), in that order (e.g. a process pool).
            store: a Store, the job's files in the partial.
            batch: items written together (one LMDB transaction); after an error or Ctrl-C, those already
                produced are still written.
            desc, unit: the progress bar's label (None for no bar) and what it counts.
        Returns:
            {key: done value} of every item.
        """
        try:
            done = self._open(store, self.start())
            todo = [k for k in keys if k not in done]
            with tqdm(total=len(keys), initial=len(done), desc=desc, unit=unit, disable=desc is None) as bar:
                self._write_all(produce(todo), store, done, batch, bar)
            with self.writing(self.partial):
                store.complete(done)
        finally:
            store.close()
        self.finish()
        return done

    def _open(self, store, done):
        """The done items whose data ``store`` still holds; a partial it finds damaged is started over."""
        try:
            intact = store.open(self.partial, done)
        except PartialDamaged as e:
            store.close()
            done = intact = self._restart(str(e))
            store.open(self.partial, done)
        if len(intact) < len(done):
            self._done.keep(intact)
        return intact

    def _write_all(self, results, store, done, batch, bar):
        pending = []
        try:
            for key, result in results:
                pending.append((key, result))
                if len(pending) >= batch:
                    self._commit(store, pending, done)
                bar.update(1)
        finally:
            if pending:  # produced before an error or Ctrl-C: kept
                self._commit(store, pending, done)

    def _commit(self, store, pending, done):
        """Write the pending items (emptying the list: on a full disk they are produced again by the rerun) and
        mark them done."""
        items = pending[:]
        pending.clear()
        nbytes = store.nbytes(items)
        if nbytes:
            self._ensure_space(nbytes)
        with self.writing(self.partial / store.target):
            marks = store.write(items)
        self.done(*marks)
        done.update(marks)

    def finish(self):
        """Record the output's file sizes and make ``partial`` the new ``final`` (the old one is removed only
        after the new one is in place)."""
        self._done.close()
        self._done = None
        src = self.partial / self.payload if self.payload else self.partial
        self.record["outputs"] = output_sizes(src)
        record = json.dumps(self.record, indent=1) + "\n"
        with self.writing(self.partial):
            if self.payload:
                self._finish_file(src, record)
            else:
                self._finish_folder(record)
        return self.record

    def _finish_file(self, src, record):
        side = self.final.with_name(self.final.name + "." + RECORD)
        side.unlink(missing_ok=True)             # a file without its record is never trusted
        disk.fsync_file(src)
        os.replace(src, self.final)
        atomic_write(side, lambda t: disk.write_synced(t, record))
        shutil.rmtree(self.partial)

    def _finish_folder(self, record):
        (self.partial / DONE).unlink()
        atomic_write(self.partial / RECORD, lambda t: disk.write_synced(t, record))
        old = self.final.with_name(self.final.name + f".old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        shutil.rmtree(old, ignore_errors=True)
