"""The disk under an output: free space, full-disk errors of any writer, and writes synced to the device."""
import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from dcme_layers.util.errors import DataError

__all__ = ["RESERVE", "free_bytes", "is_disk_full", "full_disk_raises", "fsync_file", "write_synced"]

#: Free space kept in reserve: a write that would leave less stops before it starts.
RESERVE = 1 << 20


def free_bytes(path):
    """Bytes free on the file system of ``path`` (a folder, or a file whose folder exists)."""
    path = Path(path)
    return shutil.disk_usage(path if path.is_dir() else path.parent).free


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


@contextmanager
def full_disk_raises(make_error, where):
    """Context manager around writes below the folder ``where``: an error of theirs that comes from a full disk
    (is_disk_full) is replaced by ``make_error()``; DataErrors and Ctrl-C pass through."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, DataError) and is_disk_full(error, where):
            raise make_error() from None
        raise


def fsync_file(path):
    """Flush a closed file's data to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path, text):
    """Write ``text`` to ``path`` and flush it to the device."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
