#!/usr/bin/env python3
"""The GPU check of the CUDA Caffe bundle (tools/gpu_check.sh; standard library only, any Python >= 3.8).

Unpacks gpu-bundle/bundle.tar.xz (`make gpu-bundle`) into a temporary folder, finds the libraries the bundle leaves
to the GPU machine (CUDA in /usr/local/cuda/lib64 or $CUDA_HOME/lib64; cuDNN and NCCL from python3's nvidia
wheels or $CUDNN_LIB / $NCCL_LIB), then runs, in order, each with its log in OUTDIR:
  1. caffe device_query
  2. test_dcme_layers: native Unpool on the GPU equals the CPU (forward, backward) and passes the gradient checks;
     Caffe's convolution and deconvolution tests, cuDNN ones included
  3. caffe time -gpu 0: SegNet batch 15 and FCN-8s batch 14 at 340x680, cuDNN (4 GiB and 1 GiB workspace) and
     Caffe's own kernels; peak GPU memory sampled with nvidia-smi; Unpool's share of the SegNet iteration
  4. caffe train -gpu 0: 30 iterations of each net on a fixed batch of two synthetic frames, with cuDNN and with
     Caffe's kernels; the loss must fall, and both engines' first losses (same weights) must agree
  5. the PyTorch peer (torch_peer.py) when torch imports: fp32 with and without cuDNN, for the ratios
and prints a table. OUTDIR gets gpu_check.json (every number) and gpu_check_logs.tar.gz (each step's output).
Exit 1 if a check fails.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME_ITERS = 10
NETS = ("segnet", "fcn8s")
# `caffe time` runs per net: (engine, CAFFE_CUDNN_WORKSPACE_MB or None for the default, 4 GiB).
TIME_RUNS = (("default", None), ("caffe", None), ("default", 1024))
# PyTorch peer configurations that each Caffe engine is compared with (torch_peer.py's mode, cudnn).
PEER_OF = {"default": ("fp32", True), "caffe": ("fp32", False)}
# Those two configurations of both nets, by torch_peer.py's own run() with the iterations its main uses.
# BATCHES is replaced by the bundle's batches ({"segnet": 15, "fcn8s": 14}).
PEER = """
import json, torch, torch_peer as p
print(torch.__version__, torch.cuda.get_device_name(), flush=True)
for name, batch in BATCHES.items():
    net = {"segnet": p.SegNet, "fcn8s": p.FCN8s}[name]
    for cudnn in (True, False):
        r = p.run(name, net, batch, "fp32", cudnn, iters=8 if cudnn else 2, warm=3 if cudnn else 1)
        print(json.dumps(r), flush=True)
"""


def find_lib(pattern, env_var):
    """The folder of a library the GPU machine provides: $env_var, else python3's nvidia wheels."""
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


class MemorySampler(threading.Thread):
    """Peak GPU memory (GiB) in use while running: nvidia-smi memory.used every 0.1 s, minus the level before."""

    def __init__(self):
        super().__init__(daemon=True)
        self.base = self._used()
        self.peak, self.stop = self.base, threading.Event()

    @staticmethod
    def _used():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, timeout=10).stdout
            return int(out.split()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def run(self):
        while not self.stop.wait(0.1):
            used = self._used()
            if used is not None and self.peak is not None:
                self.peak = max(self.peak, used)

    def result(self):
        self.stop.set()
        self.join()
        return None if self.base is None else round((self.peak - self.base) / 1024, 2)


def run(cmd, log, cwd, env, timeout):
    """Run ``cmd`` with its output in ``log``; return (returncode, text)."""
    t = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        rc, text = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        text = e.stdout or ""
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        rc, text = 124, text + f"\n(timed out after {timeout} s)"
    log.write_text(text)
    shown = " ".join([Path(cmd[0]).name] + [str(a).strip().splitlines()[0][:40] for a in cmd[1:3]])
    print(f"  {shown} ... rc {rc}, {time.time() - t:.0f} s, log {log.name}", flush=True)
    return rc, text


def parse_time(text, input_layer="data"):
    """caffe time output -> {total_ms, forward_backward_ms, layers: {name: ms}}, or {} when absent.

    ``total_ms`` is Caffe's "Average Forward-Backward"; ``forward_backward_ms`` leaves out the forward pass of
    ``input_layer``: DummyData draws its gaussian input on the CPU and copies it to the GPU on every pass (about a
    quarter of a SegNet iteration on an H100), work that a training step on a prefetched LMDB batch does not do
    and that the PyTorch peer does once, outside its timing."""
    m = re.search(r"Average Forward-Backward: ([\d.]+) ms", text)
    if not m:
        return {}
    layers = {}
    for name, ms in re.findall(r"\]\s+(\S+)\s+(?:forward|backward): ([-+.\deE]+) ms", text):
        layers[name] = layers.get(name, 0.0) + float(ms)
    total = float(m.group(1))
    return dict(total_ms=total, forward_backward_ms=round(total - layers.get(input_layer, 0.0), 3), layers=layers)


def parse_losses(text):
    return [float(x) for x in re.findall(r"Iteration \d+ \(.*?\), loss = ([-+.\deE]+|nan|inf)", text)]


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT") or REPO / "out" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    tarball = REPO / "gpu-bundle" / "bundle.tar.xz"
    if not tarball.exists():
        sys.exit(f"gpu_check: {tarball} not found; run `make gpu-bundle` on the build machine and bring gpu-bundle/")
    work = Path(tempfile.mkdtemp(prefix="dcme-gpu-"))
    logs = work / "logs"
    logs.mkdir()
    t0 = time.time()
    with tarfile.open(tarball) as tar:
        tar.extractall(work)
    cuda = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")
    libs = [str(work / "lib"), cuda, find_lib("libcudnn.so.9", "CUDNN_LIB"), find_lib("libnccl.so.2", "NCCL_LIB")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([p for p in libs if p] + [os.environ.get("LD_LIBRARY_PATH", "")]),
               GLOG_logtostderr="1")
    caffe = str(work / "bin" / "caffe")
    manifest = json.loads((REPO / "gpu-bundle" / "MANIFEST.json").read_text())
    res = dict(unpacked_s=round(time.time() - t0, 1), libraries=libs, batches=manifest["batches"], checks={}, time={},
               train={}, peer=[], device=None, unpool_tests_passed=0)
    missing = [l for l in subprocess.run(["ldd", caffe], env=env, capture_output=True, text=True).stdout.splitlines()
               if "not found" in l]
    if missing:
        sys.exit(f"gpu_check: the bundled caffe misses {'; '.join(m.strip() for m in missing)} (searched: {libs})")

    # An outer `timeout` (SIGTERM) still leaves the results so far and the logs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"gpu_check: stopped by SIGTERM after {time.time() - t0:.0f} s"))
    try:
        checks(caffe, work, env, logs, res)
    finally:
        res["total_s"] = round(time.time() - t0, 1)
        try:
            res["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                                "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        except OSError:
            res["nvidia_smi"] = None
        (out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
        with tarfile.open(out / "gpu_check_logs.tar.gz", "w:gz") as tar:
            tar.add(logs, arcname="gpu_check_logs")
        shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    ok = all(res["checks"].values())
    print(("all checks passed" if ok else "FAILED: " + ", ".join(k for k, v in res["checks"].items() if not v))
          + f"; {res['total_s']:.0f} s; results in {out / 'gpu_check.json'}")
    return 0 if ok else 1


def checks(caffe, work, env, logs, res):
    """Steps 1-5; fills ``res`` as it goes (so a step that fails or hangs leaves the earlier results)."""
    print("1. device query", flush=True)
    rc, text = run([caffe, "device_query", "-gpu", "0"], logs / "device_query.log", work, env, timeout=60)
    m = re.search(r"Name:\s+(.+)", text)
    res["device"] = m.group(1).strip() if m else None
    res["checks"]["device_query"] = rc == 0

    print("2. native Unpool: GPU = CPU, gradient checks (gtest)", flush=True)
    rc, text = run([str(work / "bin" / "test_dcme_layers")], logs / "test_dcme_layers.log", work, env, timeout=120)
    m = re.search(r"\[  PASSED  \] (\d+) tests?", text)
    res["unpool_tests_passed"] = int(m.group(1)) if m else 0
    res["checks"]["unpool_gtest"] = rc == 0 and bool(m)

    print(f"3. caffe time, {TIME_ITERS} iterations", flush=True)
    for net in NETS:
        for engine, workspace_mb in TIME_RUNS:
            key = f"{net}/{engine}" + (f"/ws{workspace_mb}" if workspace_mb else "")
            run_env = dict(env, CAFFE_CUDNN_WORKSPACE_MB=str(workspace_mb)) if workspace_mb else env
            sampler = MemorySampler()
            sampler.start()
            rc, text = run([caffe, "time", "-model", f"nets/{net}_time_{engine}.prototxt", "-gpu", "0",
                            "-iterations", str(TIME_ITERS)], logs / f"time_{key.replace('/', '_')}.log", work,
                           run_env, timeout=180)
            r = parse_time(text)
            r["peak_gib"] = sampler.result()
            if net == "segnet" and "layers" in r:
                unpool = sum(ms for name, ms in r["layers"].items() if name.startswith("upsample"))
                r["unpool_ms"] = round(unpool, 2)
                r["unpool_share"] = round(unpool / r["forward_backward_ms"], 4)
            r.pop("layers", None)
            res["time"][key] = r
            res["checks"][f"time {key}"] = rc == 0 and "forward_backward_ms" in r

    print("4. caffe train -gpu 0, 30 iterations on a fixed batch, cuDNN and Caffe's kernels", flush=True)
    for net in NETS:
        for engine in ("default", "caffe"):
            rc, text = run([caffe, "train", "-solver", f"nets/{net}_solver_{engine}.prototxt", "-gpu", "0"],
                           logs / f"train_{net}_{engine}.log", work, env, timeout=150)
            losses = parse_losses(text)
            # falls: the last 5 iterations' losses are all below the first (same batch every iteration)
            falls = len(losses) >= 10 and max(losses[-5:]) < losses[0]
            res["train"][f"{net}/{engine}"] = dict(losses=losses, first=losses[0] if losses else None,
                                                   last=losses[-1] if losses else None)
            res["checks"][f"train {net} {engine}: loss falls"] = rc == 0 and falls
        first = [res["train"][f"{net}/{e}"]["first"] for e in ("default", "caffe")]
        if None not in first:  # the same weights and batch: one forward pass of each engine
            diff = abs(first[0] - first[1]) / abs(first[1])
            res["train"][f"{net}/first_loss_rel_diff"] = diff
            res["checks"][f"train {net}: cuDNN and Caffe's first loss agree"] = diff < 1e-4

    peer = work / "torch_peer.py"
    if peer.exists() and subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                                        capture_output=True).returncode == 0:
        print("5. PyTorch peer (fp32, with and without cuDNN)", flush=True)
        peer_code = PEER.replace("BATCHES", json.dumps(res["batches"]))
        rc, text = run([sys.executable, "-c", peer_code], logs / "torch_peer.log", work, os.environ, timeout=300)
        res["peer"] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    else:
        print("5. PyTorch peer: skipped (no torch with CUDA, or no torch_peer.py in the bundle)", flush=True)


def print_table(res):
    print(f"\n## GPU check on {res.get('device')}\n")
    print("| net, batch, 340x680 | Caffe engine | Caffe fwd+bwd s/iter (ms/img) | peak GPU GiB | PyTorch peer | "
          "s/iter | Caffe / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    batches = res["batches"]
    for key, r in res["time"].items():
        net, engine = key.split("/")[:2]
        mode, cudnn = PEER_OF[engine]
        peer = next((p for p in res["peer"] if p.get("net") == net and p.get("mode") == mode
                     and p.get("cudnn") == cudnn and "s_per_iter" in p), None)
        s = r.get("forward_backward_ms", float("nan")) / 1000
        label = ("cuDNN" if engine == "default" else "CAFFE (no cuDNN)") + (
            f", {key.split('/ws')[1]} MiB workspace" if "/ws" in key else "")
        peer_label = f"fp32, {'cuDNN' if cudnn else 'no cuDNN'}"
        ratio = f"{s / peer['s_per_iter']:.2f}x" if peer else "n/a"
        print(f"| {net}, {batches[net]} | {label} | {s:.3f} ({1000 * s / batches[net]:.1f}) | {r.get('peak_gib')} | "
              f"{peer_label} | {peer['s_per_iter'] if peer else 'n/a'} | {ratio} |")
    for key, r in res["time"].items():
        if "unpool_share" in r:
            print(f"\nUnpool ({key}): {r['unpool_ms']} ms of {r['forward_backward_ms']:.1f} ms = "
                  f"{100 * r['unpool_share']:.2f}% of the iteration")
    for key, t in res["train"].items():
        if isinstance(t, dict):
            print(f"train {key}: loss {t['first']} -> {t['last']} over {len(t['losses'])} iterations")
        else:
            print(f"train {key}: {t:.2e}")
    print(f"native Unpool gtest: {res['unpool_tests_passed']} tests passed\n")


if __name__ == "__main__":
    sys.exit(main())
