"""The numba decorator of the decoding kernels (``voting``, ``extraction``): compiled once, cached beside the Caffe
build (tools/setup_caffe.sh's DCME_CACHE) outside the repository; NUMBA_CACHE_DIR, when set, wins."""
import os
from pathlib import Path

import numba

__all__ = ["kernel"]

if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(Path(os.environ.get("DCME_CACHE") or Path.home() / ".cache" / "dcme-caffe") / "numba")

#: ``@kernel``: numba's ``njit`` with an on-disk cache (keyed by the kernel's source file) and the GIL released.
kernel = numba.njit(cache=True, nogil=True)
