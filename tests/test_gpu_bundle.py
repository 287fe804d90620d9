"""tools/gpu_bundle.py (`make gpu-bundle`): the library packing of the bundle, whose packed binaries run from its own
lib/ alone."""
import os
import subprocess
from pathlib import Path

import pytest

import helpers

helpers.import_caffe()

from tools import gpu_bundle  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_packed_binaries_run_from_the_bundle_lib_alone(tmp_path):
    """gpu_bundle's packing on this machine's Caffe: every library ldd names is packed except the system and CUDA
    ones, and the packed gtest binary runs with only the bundle's lib/ on the library path."""
    prefix = Path((REPO / ".venv" / ".caffe_prefix").read_text().strip())
    kept, provided = gpu_bundle.pack_binaries(prefix, tmp_path / "stage")
    lib = tmp_path / "stage" / "lib"
    assert any(k.startswith("libcaffe.so") for k in kept) and any(k.startswith("libglog") for k in kept)
    assert not any(k.startswith(gpu_bundle.PROVIDED) for k in kept)
    assert any(p.startswith("libc.so") for p in provided)
    assert sorted(p.name for p in lib.iterdir()) == sorted(kept)
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib), GLOG_minloglevel="2")
    ldd = subprocess.run(["ldd", str(tmp_path / "stage" / "bin" / "caffe")], env=env, capture_output=True, text=True)
    assert "not found" not in ldd.stdout
    for line in ldd.stdout.splitlines():  # each non-system library resolves inside the bundle
        if "=>" in line and not line.split()[0].startswith(gpu_bundle.PROVIDED):
            assert str(lib) in line, line
    run = subprocess.run([str(tmp_path / "stage" / "bin" / "test_dcme_layers")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "PASSED" in run.stdout, run.stdout[-2000:]
