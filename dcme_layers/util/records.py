"""The two records of a resumable output (dcme_layers.util.resumable): ``job.json``, what it is made from (settings
and input fingerprints) and, once finished, the size of each of its files; and ``done.txt``, a partial output's
finished items.

A finished folder output holds ``job.json`` itself; a file output has ``<file>.job.json`` beside it.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dcme_layers.util.errors import DataError
from dcme_layers.util.files import atomic_write

__all__ = ["RECORD", "DONE", "HASH_BELOW", "digest", "file_record", "changed_input", "output_sizes", "record_path",
           "read_record", "verify", "size_problem", "read_done", "DoneList"]

RECORD = "job.json"
DONE = "done.txt"
#: Input files up to this size are fingerprinted by content too (prototxts, manifests); larger ones by size+mtime.
HASH_BELOW = 64 << 10


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


def record_path(final):
    """Where the record of the output ``final`` lies: inside a folder, beside a file."""
    final = Path(final)
    return final / RECORD if final.is_dir() else final.with_name(final.name + "." + RECORD)


def read_record(final):
    """The job.json of a finished output, or None when it has none (or an unreadable one)."""
    try:
        return json.loads(record_path(final).read_text())
    except (OSError, ValueError):
        return None


def verify(final, what="output"):
    """Raise DataError naming the file unless ``final`` is a finished output whose files all have the sizes
    recorded when it was finished (e.g. an LMDB truncated after the run). Returns its record."""
    record = read_record(final)
    if record is None:
        raise DataError(f"{final}: not a finished {what} (no {record_path(final).name}); re-run the job that "
                        f"writes it")
    problem = size_problem(final, record)
    if problem:
        raise DataError(f"{problem}; re-run the job that writes it")
    return record


def size_problem(final, record):
    """The start of a message naming the first file of ``final`` that is missing or has another size than
    ``record`` says; None when all are intact."""
    want, got = record.get("outputs", {}), output_sizes(final) if Path(final).exists() else {}
    for rel, size in want.items():
        p = Path(final) / rel if Path(final).is_dir() else Path(final)
        if rel not in got:
            return f"{p}: missing from the finished output"
        if got[rel] != size:
            return f"{p}: {got[rel]} bytes, {size} when it was written (truncated or replaced)"
    return None


def read_done(path):
    """{key: value} of a done.txt; only complete, newline-terminated lines count (a kill may cut the last)."""
    lines = Path(path).read_text().split("\n")[:-1]
    return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in lines)


class DoneList:
    """A partial output's done.txt, open for appending: one ``<key>\\t<value>`` line per finished item."""

    def __init__(self, path):
        self.path = Path(path)
        self.file = open(self.path, "a")

    def read(self):
        return read_done(self.path)

    def keep(self, done):
        """Rewrite the list with only the items of ``done`` ({key: value})."""
        self.file.close()
        atomic_write(self.path, lambda t: t.write_text("".join(f"{k}\t{v}\n" for k, v in done.items())))
        self.file = open(self.path, "a")

    def add(self, items):
        """Append (key, value) pairs and flush them to the device."""
        self.file.write("".join(f"{k}\t{v}\n" for k, v in items))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()
