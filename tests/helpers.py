"""Helpers shared by the test modules: what a test needs from the machine, the environment of the subprocesses it
starts, waiting on a job's own progress, a small disk in a private mount namespace, and the small inputs and readers
that several modules use (rectangle maps, instance-crop LMDBs).

What a test needs and a machine may lack is skipped with a reason, unless the comma-separated environment
variable DCME_REQUIRE names it: then it is a failure with one line saying what is missing. The names:

  caffe         pycaffe imports                       (`make test` requires it)
  caffe-binary  .venv/bin/caffe runs                  (`make test` requires it)
  sample        the real Cityscapes sample at SAMPLE  (only where the machine has ../shared/data)
  unshare       `unshare -r -m` (user and mount namespaces) for the full-disk tests
"""
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CAFFE_BIN = REPO / ".venv" / "bin" / "caffe"
# Eight real Cityscapes train frames, read in place (never copied into the project).
SAMPLE = Path(os.environ.get("DCME_CITYSCAPES_SAMPLE", REPO.parent / "shared" / "data" / "cityscapes_sample"))
REQUIRED = {x.strip() for x in os.environ.get("DCME_REQUIRE", "").split(",") if x.strip()}
KNOWN = ("caffe", "caffe-binary", "sample", "unshare")
# The size at which the `encoded` fixture (conftest.py) encodes the tiny synthetic set for the SegNet pipeline tests.
ENCODED_SIZE = (48, 96)


def lacking(what, reason):
    """Skip the calling test (or module) because the machine lacks ``what``; a failure if DCME_REQUIRE names it."""
    if what in REQUIRED:
        pytest.fail(f"{reason} (DCME_REQUIRE names {what})", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def caffe_problem():
    """Why pycaffe does not import (one line), or None."""
    try:
        import caffe  # noqa: F401
    except ImportError as e:
        return f"pycaffe does not import ({e}); run `make setup`"
    return None


def caffe_binary_problem():
    """Why .venv/bin/caffe does not run (one line), or None."""
    if not os.access(CAFFE_BIN, os.X_OK):
        return f"{CAFFE_BIN}: missing; run `make setup`"
    run = subprocess.run([str(CAFFE_BIN), "--version"], capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or "caffe version" not in run.stdout:
        return f"{CAFFE_BIN} --version fails (rc {run.returncode}): {(run.stderr.strip().splitlines() or [''])[-1]}"
    return None


def sample_problem():
    if not (SAMPLE / "gtFine" / "train").is_dir():
        return f"real Cityscapes sample not found at {SAMPLE} (set DCME_CITYSCAPES_SAMPLE)"
    return None


def unshare_problem():
    if not shutil.which("unshare"):
        return "needs `unshare` (util-linux) for a small tmpfs in a private mount namespace"
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        return "needs `unshare -r -m` (user and mount namespaces, refused on this machine) for a small tmpfs"
    return None


PROBLEMS = {"caffe": caffe_problem, "caffe-binary": caffe_binary_problem, "sample": sample_problem,
            "unshare": unshare_problem}


def import_caffe():
    """pycaffe, or a skip (a failure under DCME_REQUIRE=caffe) of the calling module or test."""
    problem = caffe_problem()
    if problem:
        lacking("caffe", problem)
    import caffe
    return caffe


def caffe_binary():
    """.venv/bin/caffe, or a skip (a failure under DCME_REQUIRE=caffe-binary)."""
    problem = caffe_binary_problem()
    if problem:
        lacking("caffe-binary", problem)
    return CAFFE_BIN


def need_unshare():
    problem = unshare_problem()
    if problem:
        lacking("unshare", problem)


def clean_env(**extra):
    """This process's environment without the user's glog settings (they change what Caffe prints), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    env.update(extra)
    return env


def run_tool(tool, *args, timeout=300, env=None):
    """tools/<tool>.py with ``args`` from the repository root, its output captured."""
    return subprocess.run([sys.executable, f"tools/{tool}.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env())


def done_lines(path):
    try:
        return Path(path).read_text().count("\n")
    except FileNotFoundError:
        return 0


def wait_for_done(proc, done, n=1, timeout=120):
    """Block until the job ``proc`` has marked ``n`` items done in its ``done`` file (resumable's done.txt);
    fails, without signalling it, if the job ends first or takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while done_lines(done) < n:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended (rc {proc.returncode}) before {n} items were done in {done}: "
                        f"{(err or '')[-1500:]}", pytrace=False)
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {n} done lines in {done} after {timeout} s", pytrace=False)
        time.sleep(0.02)


def in_small_disk(disk, size, script, timeout=600):
    """Run the Python ``script`` in a private mount namespace where ``disk`` is a tmpfs of ``size`` (e.g. "1300k");
    ``remount(size)`` inside the script gives it more room, ``tool(name, *args)`` runs tools/<name>.py. Returns the
    CompletedProcess; skips (fails under DCME_REQUIRE=unshare) where the namespaces are refused."""
    need_unshare()
    disk.mkdir(parents=True, exist_ok=True)
    prelude = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size={size}", "tmpfs", "{disk}"], check=True)
        def remount(size):
            subprocess.run(["mount", "-o", "remount,size=" + size, "{disk}"], check=True)
        def tool(name, *args):
            return subprocess.run([sys.executable, "tools/" + name + ".py", *map(str, args)], capture_output=True,
                                  text=True)
    """)
    return subprocess.run(["unshare", "-r", "-m", sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=clean_env(PYTHONPATH=str(REPO)))


def kill_mid_run(tool, args, done, delay=3.0, timeout=300):
    """Start tools/<tool>.py ``args`` with every item followed by ``delay`` seconds (resumable.ITEM_DELAY), SIGKILL
    it once it has marked its first item done in ``done``, and return the number of done lines it left."""
    proc = subprocess.Popen([sys.executable, f"tools/{tool}.py", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(DCME_TEST_ITEM_DELAY=str(delay)))
    try:
        wait_for_done(proc, done, 1, timeout)
    finally:
        proc.kill()
        proc.communicate()
    return done_lines(done)


def copy_root(src, dst, splits=("train", "val")):
    """A copy of the images and ground truth of ``splits`` of the Cityscapes-layout root ``src`` at ``dst``."""
    for split in splits:
        for sub in ("leftImg8bit", "gtFine"):
            shutil.copytree(src / sub / split, dst / sub / split)
    return dst


def folder_files(path):
    """{relative path: bytes} of every file under ``path`` but the job's own records (job.json, done.txt)."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("job.json", "done.txt")}


def read_lmdb(path):
    """[(key, label, CHW uint8 image)] of the Datum LMDB at ``path`` (the instance crops), in key order."""
    import lmdb
    from caffe.proto import caffe_pb2

    env = lmdb.open(str(path), readonly=True, lock=False)
    out = []
    with env.begin() as txn:
        for key, value in txn.cursor():
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            img = np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
            out.append((key.decode(), d.label, img))
    env.close()
    return out


def frame_and_id(key):
    """'<hash>_<frame>_<raw id>' -> (frame, raw id)."""
    name, iid = key.split("_", 1)[1].rsplit("_", 1)
    return name, int(iid)


def write_lmdb(path, crops, labels):
    """A Datum LMDB at ``path`` of the HWC BGR ``crops`` with their ``labels``, keys in their order."""
    import lmdb

    from dcme_layers.data import datum

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (c, label) in enumerate(zip(crops, labels)):
            txn.put(b"%08d" % i, datum.image_datum(c.transpose(2, 0, 1), label))
    env.close()


def separable_crops(n, seed=0):
    """n 224x224 BGR crops of 2 classes that differ in colour and texture (class 0 person: reddish stripes; class 2
    car: flat bluish), so a few iterations of SGD have something to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 * 2
    images = np.empty((n, 224, 224, 3), np.uint8)
    yy = np.arange(224)[:, None]
    for i, label in enumerate(labels):
        noise = rng.normal(0, 20, (224, 224, 3))
        if label == 0:
            base = np.where((yy // 16) % 2 == 0, 200, 60)[..., None] * np.array([0.3, 0.4, 1.0])
        else:
            base = np.full((224, 224, 1), 120) * np.array([1.0, 0.6, 0.3])
        images[i] = np.clip(base + noise, 0, 255)
    return images, labels


def rect_map(h, w, rects):
    """An (h, w) instanceIds map of cars 26001, 26002, ... filling the rectangles (y0, x0, y1, x1), in order."""
    m = np.zeros((h, w), np.int32)
    for k, (y0, x0, y1, x1) in enumerate(rects, 1):
        m[y0:y1, x0:x1] = 26000 + k
    return m


def noisy_rectangles(rng, h=120, w=200, background=0.05, reach=30.0):
    """Rectangles with N(0, 1.5 px) on their vectors and random votes (up to ``reach`` px) on a share of the
    background: a network-like noisy map whose background votes land mostly alone."""
    from dcme_layers.core.encoding import vector_map

    m = rect_map(h, w, [(10, 10, 40, 50), (60, 120, 100, 170), (70, 20, 95, 60), (15, 140, 30, 160)])
    v = vector_map(m) + (rng.normal(0, 1.5, (2, h, w)) * (m > 0)).astype(np.float32)
    ys, xs = np.nonzero((m == 0) & (rng.random((h, w)) < background))
    angle, length = rng.uniform(0, 2 * np.pi, len(ys)), rng.uniform(0, reach, len(ys))
    v[0, ys, xs], v[1, ys, xs] = length * np.cos(angle), length * np.sin(angle)
    return v
