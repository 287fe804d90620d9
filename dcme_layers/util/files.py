"""Atomic file writes and PNG headers. OpenCV is imported by ``write_png`` alone: the rest is standard library, for
the tools that run on a bare python3 (util.commands)."""
import os
from pathlib import Path

from dcme_layers.util.errors import DataError

__all__ = ["atomic_write", "write_png", "png_size"]


def atomic_write(path, write, suffix=None):
    """Write `path` atomically: `write(tmp)` fills a temporary file in the same folder (a Path named
    `.<stem>.tmp-<pid><suffix>`, `suffix` defaulting to `path`'s own, so e.g. cv2.imwrite sees the right
    extension), which then replaces `path` (os.replace). The temporary file is removed if anything fails.
    The folder must exist. Returns `path` as a Path."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix if suffix is None else suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_png(path, img, error=DataError):
    """Write a uint8 image (H, W) or (H, W, 3) BGR as PNG at `path` atomically (``atomic_write``), creating its
    folder. An image OpenCV cannot encode raises `error` ("<path>: cannot write PNG"). Returns `path` as a Path."""
    import cv2
    import numpy as np

    def write(tmp):
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
        if not ok:
            raise error(f"{path}: cannot write PNG")
        tmp.write_bytes(buf.tobytes())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


def png_size(path):
    """(H, W) from a PNG's header, None if it is not a PNG (reads 24 bytes)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
