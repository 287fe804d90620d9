"""Helpers shared by the test modules: what a test needs from the machine, the environment of the subprocesses it
starts, waiting on a job's own progress, and a small disk in a private mount namespace.

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

import pytest

REPO = Path(__file__).resolve().parents[1]
CAFFE_BIN = REPO / ".venv" / "bin" / "caffe"
# Eight real Cityscapes train frames, read in place (never copied into the project).
SAMPLE = Path(os.environ.get("DCME_CITYSCAPES_SAMPLE", REPO.parent / "shared" / "data" / "cityscapes_sample"))
REQUIRED = {x.strip() for x in os.environ.get("DCME_REQUIRE", "").split(",") if x.strip()}
KNOWN = ("caffe", "caffe-binary", "sample", "unshare")


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


def folder_files(path):
    """{relative path: bytes} of every file under ``path`` but the job's own records (job.json, done.txt)."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("job.json", "done.txt")}
