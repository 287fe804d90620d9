"""External commands with their output in a log file, for the tools that drive binaries (tools/gpu_check.py): a
run with a timeout, a run stopped by SIGINT after a time limit, the GPU memory they use, the libraries they need,
and atomic copies of the files they write.

Standard library only: tools/gpu_check.py runs it on a GPU machine's bare python3.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dcme_layers.util.files import atomic_write

__all__ = ["GpuMemory", "copy_atomic", "find_library", "run_logged", "run_until"]


def copy_atomic(src, dst):
    """Copy ``src`` to ``dst`` through a temporary name beside it (files.atomic_write): ``dst`` is whole or absent."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def find_library(pattern, env_var):
    """The folder of a shared library ``pattern`` (e.g. libcudnn.so.9) that the machine provides: $``env_var``,
    else the first match in python3's nvidia wheels (site-packages/nvidia/...), else None."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    sites = subprocess.run([sys.executable, "-c", "import site, sys; print('\\n'.join(site.getsitepackages() + "
                            "[p for p in sys.path if p.endswith('site-packages')]))"],
                           capture_output=True, text=True).stdout.split()
    for site in sites:
        hits = sorted(glob.glob(os.path.join(site, "nvidia", "**", pattern), recursive=True))
        if hits:
            return os.path.dirname(hits[0])
    return None


def report(cmd, log, rc, started, note=""):
    """Print one line on a finished command: its name and first arguments, exit status, seconds, log file."""
    shown = " ".join([Path(cmd[0]).name] + [str(a).strip().splitlines()[0][:40] for a in cmd[1:3]])
    print(f"  {shown} ... rc {rc}{note}, {time.time() - started:.0f} s, log {Path(log).name}", flush=True)


def run_logged(cmd, log, cwd, env, timeout):
    """Run ``cmd`` with its output (stdout and stderr) in the file ``log``; exit status 124 after ``timeout``
    seconds. Returns (exit status, output)."""
    started = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        rc, text = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        text = e.stdout or ""
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        rc, text = 124, text + f"\n(timed out after {timeout} s)"
    Path(log).write_text(text)
    report(cmd, log, rc, started)
    return rc, text


def run_until(cmd, log, cwd, env, seconds, grace):
    """Run ``cmd`` with its output in the file ``log``; after ``seconds`` send it SIGINT (on which `caffe train`
    stops after the current iteration and snapshots) and give it ``grace`` seconds more before killing it.
    Returns (exit status, output, whether it was stopped)."""
    started, stopped = time.time(), False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                stopped = True
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait()
    report(cmd[:2], log, rc, started, f", stopped after {seconds} s" if stopped else "")
    return rc, Path(log).read_text(errors="replace"), stopped


class GpuMemory(threading.Thread):
    """Peak memory (GiB) in use on GPU 0 while running: nvidia-smi's memory.used every 0.1 s, minus the level
    before. ``start()``, run the command, then ``result()`` (None without nvidia-smi)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.base = self.used()
        self.peak, self.stop = self.base, threading.Event()

    @staticmethod
    def used():
        """MiB in use on GPU 0, or None."""
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, timeout=10).stdout
            return int(out.split()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def run(self):
        while not self.stop.wait(0.1):
            used = self.used()
            if used is not None and self.peak is not None:
                self.peak = max(self.peak, used)

    def result(self):
        self.stop.set()
        self.join()
        return None if self.base is None else round((self.peak - self.base) / 1024, 2)
