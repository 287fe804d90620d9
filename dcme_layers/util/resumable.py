"""Resumable outputs: the one mechanism every long job writes through (encode-data, instance crops, inference,
export of predictions).

A job's output ``final`` (a folder, or one file) is built in the folder ``<final>.partial`` beside it:

  job.json   what the output is made from: the job's settings, and the path, size and mtime of every input file
             (and the content hash of small ones)
  done.txt   one line per finished item, ``<key>\\t<value>``, appended only once the item's data is durably on
             disk (the job flushes its own files first, then ``Job.done`` fsyncs the line): a kill, a crash or a
             full disk never marks an item done that is not written
  ...        the job's own files

A lock file ``.<name>.lock`` beside ``final`` keeps a second run out. ``Job.finish`` records the size of every
file of the output in job.json and renames the folder over ``final`` (a file output: the payload file, then
``<final>.job.json`` beside it), so ``final`` is always complete, old or new. A rerun then:

- skips an output whose settings and inputs are unchanged and whose files still have their recorded sizes
  (a truncated or half-copied output is redone, never trusted);
- redoes one whose input files changed (the line names the first changed file);
- refuses one made with other settings unless ``force`` (which always redoes);
- resumes a ``.partial`` of the same settings and inputs from its done list, and starts one of anything else over.

Write errors (a full disk above all) end the job with one line naming the file and saying that a rerun resumes.
"""
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from dcme_layers.util.errors import DataError, DiskFullError
from dcme_layers.util.files import atomic_write

RECORD = "job.json"
DONE = "done.txt"
#: Input files up to this size are fingerprinted by content too (prototxts, manifests); larger ones by size+mtime.
HASH_BELOW = 64 << 10
#: Free space kept in reserve: a write that would leave less stops before it starts.
RESERVE = 1 << 20
#: Seconds every job waits after marking items done (tests only: it lets them kill a job between two items).
ITEM_DELAY = float(os.environ.get("DCME_TEST_ITEM_DELAY") or 0)


def digest(data):
    """The short content hash used in records and done lines: sha256 prefix (16 hex) of bytes or an array's bytes."""
    if not isinstance(data, bytes):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def file_record(path):
    """[absolute path, size, mtime_ns, sha256 prefix of the content or None]: how an input file is fingerprinted."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"{path}: no such input file") from None
    content = digest(path.read_bytes()) if st.st_size <= HASH_BELOW else None
    return [str(path), st.st_size, st.st_mtime_ns, content]


def changed_input(old, new):
    """The path of the first input that differs between two {item: [file_record()]} dicts, or None."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, []), new.get(key, [])
        for x, y in zip(a, b):
            if x != y:
                return y[0]
        if len(a) != len(b):
            return (a if len(a) > len(b) else b)[min(len(a), len(b))][0]
    return None


def output_sizes(path):
    """{relative path: size} of the files of an output (a folder; "." for one file), without job.json, done.txt
    and LMDB lock files (which readers may create)."""
    path = Path(path)
    if path.is_file():
        return {".": path.stat().st_size}
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in (RECORD, DONE, "lock.mdb")}


def _record_path(final):
    final = Path(final)
    return final / RECORD if final.is_dir() else final.with_name(final.name + "." + RECORD)


def read_record(final):
    """The job.json of a finished output, or None when it has none (or an unreadable one)."""
    try:
        return json.loads(_record_path(final).read_text())
    except (OSError, ValueError):
        return None


def verify(final, what="output"):
    """Raise DataError naming the file unless ``final`` is a finished output whose files all have the sizes
    recorded when it was finished (e.g. an LMDB truncated after the run). Returns its record."""
    record = read_record(final)
    if record is None:
        raise DataError(f"{final}: not a finished {what} (no {_record_path(final).name}); re-run the job that "
                        f"writes it")
    problem = _size_problem(final, record)
    if problem:
        raise DataError(f"{problem}; re-run the job that writes it")
    return record


def _size_problem(final, record):
    want, got = record.get("outputs", {}), output_sizes(final) if Path(final).exists() else {}
    for rel, size in want.items():
        p = Path(final) / rel if Path(final).is_dir() else Path(final)
        if rel not in got:
            return f"{p}: missing from the finished output"
        if got[rel] != size:
            return f"{p}: {got[rel]} bytes, {size} when it was written (truncated or replaced)"
    return None


def is_disk_full(error, where):
    """True when ``error`` (any exception of a writer: OSError, lmdb.Error, HDF5's) comes from a full disk: its
    errno or message says so, or the folder ``where`` has less than RESERVE bytes free now."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "MDB_MAP_FULL" in text:  # the LMDB's own address space, not the disk
        return False
    if "No space left" in text or "errno = 28" in text:
        return True
    try:
        return shutil.disk_usage(where).free < RESERVE
    except OSError:
        return False


class Job:
    """One resumable output (see the module docstring). Use as a context manager, which holds the lock:

        with Job(final, settings, inputs, force=force) as job:
            if job.up_to_date():
                return job.record
            done = job.start()              # {key: value} of the items already done
            ... write item k into job.partial, flush it ...; job.done(k, value)
            job.finish()

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
        self._done_file = None

    # --- lock ---------------------------------------------------------------------------------------------------
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
        if self._done_file:
            self._done_file.close()
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
            raise DataError(f"{self.final}: exists but has no {_record_path(self.final).name} (not a {self.what} "
                            f"written by this version); use --force to replace it or choose another --out")
        if old.get("settings") != self.record["settings"]:
            key = next((k for k in sorted(set(old["settings"]) | set(self.record["settings"]))
                        if old["settings"].get(k) != self.record["settings"].get(k)), None)
            raise DataError(f"{self.final}: exists with other settings ({key}: {old['settings'].get(key)!r}, now "
                            f"{self.record['settings'].get(key)!r}); use --force to replace it or choose another "
                            f"--out")
        changed = changed_input(old.get("inputs", {}), self.record["inputs"])
        if changed:
            self.log(f"{self.final}: its input {changed} changed since it was written; redoing it")
            return False
        problem = _size_problem(self.final, old)
        if problem:
            self.log(f"{problem}; redoing {self.final}")
            return False
        self.record = old
        return True

    # --- the partial output -------------------------------------------------------------------------------------
    def start(self):
        """Open ``partial`` for writing. One of the same settings is resumed: its done items whose input files
        changed since are dropped (redone); one of other settings, or whose shared inputs changed, is started
        over. Returns {key: value} of the items done so far."""
        if self.partial.exists():
            try:
                old = json.loads((self.partial / RECORD).read_text())
            except (OSError, ValueError):
                old = None
            if old is None or old.get("settings") != self.record["settings"] or \
                    old["inputs"].get("") != self.record["inputs"].get(""):
                why = "other settings or inputs" if old else "an unreadable job.json"
                self.log(f"{self.partial}: left by a run with {why}; starting over")
                shutil.rmtree(self.partial)
        if not self.partial.exists():
            tmp = self.partial.with_name(self.partial.name + f".tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            (tmp / RECORD).write_text(json.dumps(self.record) + "\n")
            (tmp / DONE).write_text("")
            os.replace(tmp, self.partial)
            old = self.record
        self._done_file = open(self.partial / DONE, "a")
        done = self.read_done()
        changed = [k for k in done if old["inputs"].get(k) != self.record["inputs"].get(k)]
        if changed:
            self.log(f"{self.partial}: the inputs of {len(changed)} done items changed (first: {changed[0]}); "
                     f"redoing them")
            done = {k: v for k, v in done.items() if k not in changed}
            self.keep(done)
        if old != self.record:
            atomic_write(self.partial / RECORD, lambda t: t.write_text(json.dumps(self.record) + "\n"))
        if done:
            self.log(f"{self.partial}: resuming after {len(done)} done")
        return done

    def read_done(self):
        """{key: value} of done.txt; only complete, newline-terminated lines count (a kill may cut the last)."""
        lines = (self.partial / DONE).read_text().split("\n")[:-1]
        return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in lines)

    def keep(self, done):
        """Rewrite done.txt with only the items of ``done`` ({key: value}), e.g. those that a job's own check of
        its partial files confirmed; the others are redone."""
        self._done_file.close()
        atomic_write(self.partial / DONE, lambda t: t.write_text("".join(f"{k}\t{v}\n" for k, v in done.items())))
        self._done_file = open(self.partial / DONE, "a")

    def restart(self, why):
        """Start ``partial`` over (e.g. a job found its files unreadable); returns the empty done dict."""
        self.log(f"{self.partial}: {why}; starting over")
        self._done_file.close()
        shutil.rmtree(self.partial)
        return self.start()

    def done(self, *items):
        """Mark items done: each a key or a (key, value) pair. Call only once their data is flushed to disk."""
        lines = "".join(f"{k}\t{v}\n" for k, v in (i if isinstance(i, tuple) else (i, "") for i in items))
        with self.writing(self.partial / DONE):
            self._done_file.write(lines)
            self._done_file.flush()
            os.fsync(self._done_file.fileno())
        if ITEM_DELAY:
            time.sleep(ITEM_DELAY)

    def ensure_space(self, nbytes, path=None):
        """Stop with DiskFullError (before writing anything) unless ``nbytes`` + RESERVE bytes are free where
        ``path`` (default: the partial folder) lies."""
        path = Path(path or self.partial)
        free = shutil.disk_usage(path if path.is_dir() else path.parent).free
        if free < nbytes + RESERVE:
            raise self._disk_full(path, free)

    def _disk_full(self, path, free=None):
        if free is None:
            free = shutil.disk_usage(self.partial).free
        n = len(self.read_done()) if (self.partial / DONE).is_file() else 0
        return DiskFullError(f"{path}: no space left on device ({free >> 20} MiB free); free some space and re-run: "
                             f"the {n} items done are kept and the run resumes")

    def writing(self, path):
        """Context manager around a write to ``path``: a full-disk error becomes DiskFullError (one line)."""
        return _Writing(self, path)

    def finish(self):
        """Record the output's file sizes and make ``partial`` the new ``final`` (the old one is removed only
        after the new one is in place)."""
        self._done_file.close()
        self._done_file = None
        src = self.partial / self.payload if self.payload else self.partial
        self.record["outputs"] = output_sizes(src)
        record = json.dumps(self.record, indent=1) + "\n"
        with self.writing(self.partial):
            if self.payload:
                side = self.final.with_name(self.final.name + "." + RECORD)
                side.unlink(missing_ok=True)             # a file without its record is never trusted
                _fsync(src)
                os.replace(src, self.final)
                atomic_write(side, lambda t: _write_synced(t, record))
                shutil.rmtree(self.partial)
            else:
                (self.partial / DONE).unlink()
                atomic_write(self.partial / RECORD, lambda t: _write_synced(t, record))
                old = self.final.with_name(self.final.name + f".old-{os.getpid()}")
                if self.final.exists():
                    os.replace(self.final, old)
                os.replace(self.partial, self.final)
                shutil.rmtree(old, ignore_errors=True)
        return self.record


class _Writing:
    def __init__(self, job, path):
        self.job, self.path = job, path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is not None and not isinstance(error, (DataError, KeyboardInterrupt)) and \
                isinstance(error, Exception) and is_disk_full(error, self.job.partial.parent):
            raise self.job._disk_full(self.path) from None
        return False


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path, text):
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

