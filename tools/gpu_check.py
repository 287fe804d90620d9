#!/usr/bin/env python3
"""The GPU check of the CUDA Caffe bundle (tools/gpu_check.sh; standard library only, any Python >= 3.8).

Unpacks gpu-bundle/bundle.tar.xz (`make gpu-bundle`) into a temporary folder, finds the libraries the bundle leaves
to the GPU machine (CUDA in /usr/local/cuda/lib64 or $CUDA_HOME/lib64; cuDNN and NCCL from python3's nvidia
wheels or $CUDNN_LIB / $NCCL_LIB), then runs, in order, each with its log in OUTDIR:
  1. caffe device_query
  2. test_dcme_layers: native Unpool on the GPU equals the CPU (forward, backward) and passes the gradient checks;
     Caffe's convolution and deconvolution tests, cuDNN ones included
  3. caffe time -gpu 0: SegNet batch 15 and FCN-8s batch 14 at 340x680, cuDNN (4 GiB and 1 GiB workspace, and
     with CAFFE_CUDNN_ALLOW_TF32=1) and Caffe's own kernels; peak GPU memory sampled with nvidia-smi; Unpool's
     share of the SegNet iteration
  4. caffe train -gpu 0: 30 iterations of each net on a fixed batch of two synthetic frames, with cuDNN in fp32 and
     in TF32 and with Caffe's kernels; the loss must fall, cuDNN's and Caffe's first losses (same weights) must
     agree (FIRST_LOSS_TOLERANCE), and TF32's first loss must be within TF32_TOLERANCE of fp32's
  5. the PyTorch peer (torch_peer.py) when torch imports: fp32 with and without cuDNN and TF32, for the ratios
  6. with --demo SECONDS, the demo stage: `caffe train` of the demo's GPU configuration for at most SECONDS
     (SIGINT then: Caffe stops after the iteration and snapshots), the caffe-segnet BatchNorm statistics pass,
     and `caffe test` of the deploy net, whose HDF5Output file is the val predictions: OUTDIR/demo/predictions.h5
     with predictions.h5.frames.txt, for `tools/evaluate.py --predictions` on the build machine
and prints a table. OUTDIR gets gpu_check.json (every number) and gpu_check_logs.tar.gz (each step's output).
Exit 1 if a check fails. --cpu is the dry run of the demo stage on a CPU build's bundle (tests/test_gpu_tools.py):
no -gpu, and steps 1-5 are left out.
"""
import argparse
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
# `caffe time` runs per net: (engine, CAFFE_CUDNN_WORKSPACE_MB or None for the default, 4 GiB; TF32 allowed).
# TF32 (CAFFE_CUDNN_ALLOW_TF32=1) changes cuDNN's convolutions only, so it runs with the default (cuDNN) engine.
TIME_RUNS = (("default", None, False), ("default", None, True), ("caffe", None, False), ("default", 1024, False))
# `caffe train` runs per net: (engine, TF32 allowed); the key of each in gpu_check.json.
TRAIN_RUNS = {"default": ("default", False), "tf32": ("default", True), "caffe": ("caffe", False)}
# cuDNN's and Caffe's kernels in fp32 on the same weights and batch: their first losses agree to float rounding.
FIRST_LOSS_TOLERANCE = 1e-4
# TF32 rounds every convolution's inputs to a 10-bit mantissa (relative error up to 2^-11 = 4.9e-4 each); over the
# ~26 convolutions of a forward pass these errors add up, but the loss sums squares over every pixel, which averages
# them: a first loss more than 1% off fp32's would be a bug, not rounding.
TF32_TOLERANCE = 1e-2
# PyTorch peer configurations that each Caffe run is compared with (torch_peer.py's mode, cudnn).
PEER_OF = {"default": ("fp32", True), "tf32": ("tf32", True), "caffe": ("fp32", False)}
# Those configurations of both nets, by torch_peer.py's own run() with the iterations its main uses.
# BATCHES is replaced by the bundle's batches ({"segnet": 15, "fcn8s": 14}).
PEER = """
import json, torch, torch_peer as p
print(torch.__version__, torch.cuda.get_device_name(), flush=True)
for name, batch in BATCHES.items():
    net = {"segnet": p.SegNet, "fcn8s": p.FCN8s}[name]
    for mode, cudnn in (("fp32", True), ("tf32", True), ("fp32", False)):
        r = p.run(name, net, batch, mode, cudnn, iters=8 if cudnn else 2, warm=3 if cudnn else 1)
        print(json.dumps(r), flush=True)
"""
# A finished `caffe train -gpu 0` of the demo stage gets this long after SIGINT to snapshot and exit.
SNAPSHOT_GRACE_S = 120


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


def parse_curve(text):
    """caffe train output (glog lines) -> ([(iteration, loss)], iterations per second between the first and the
    last of those lines by their glog timestamps, or None with fewer than two)."""
    points = re.findall(r"^I\d{4,8} (\d\d):(\d\d):([\d.]+) .*\] Iteration (\d+) \(.*?\), loss = ([-+.\deE]+|nan|inf)",
                        text, re.M)
    curve = [(int(it), float(loss)) for *_, it, loss in points]
    if len(points) < 2:
        return curve, None
    (h0, m0, s0, *_), (h1, m1, s1, *_) = points[0], points[-1]
    dt = (int(h1) - int(h0)) * 3600 + (int(m1) - int(m0)) * 60 + float(s1) - float(s0)
    dt += 86400 if dt < 0 else 0  # past midnight
    return curve, round((curve[-1][0] - curve[0][0]) / dt, 3) if dt > 0 else None


def run_for(cmd, log, cwd, env, seconds):
    """Run ``cmd`` (caffe train) with its output in ``log``; after ``seconds`` send it SIGINT, on which Caffe stops
    after the current iteration and snapshots, and give it SNAPSHOT_GRACE_S to exit. Returns (returncode, text,
    whether it was stopped)."""
    t, stopped = time.time(), False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                stopped = True
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=SNAPSHOT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait()
    text = Path(log).read_text(errors="replace")
    print(f"  {Path(cmd[0]).name} {cmd[1]} ... rc {rc}{', stopped after ' + str(seconds) + ' s' if stopped else ''}, "
          f"{time.time() - t:.0f} s, log {Path(log).name}", flush=True)
    return rc, text, stopped


def atomic_copy(src, dst):
    """Copy ``src`` to ``dst`` through a temporary name beside it: ``dst`` is whole or absent."""
    tmp = Path(dst).with_name(f".{Path(dst).name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", nargs="?", type=Path, help="default: $OUT, else out/gpu_check")
    ap.add_argument("--demo", type=float, metavar="SECONDS",
                    help="also the demo stage: train the demo's GPU configuration for at most SECONDS")
    ap.add_argument("--bundle", type=Path, default=REPO / "gpu-bundle", help="default: %(default)s")
    ap.add_argument("--keep-weights", action="store_true", help="copy the demo's caffemodels into OUTDIR/demo too")
    ap.add_argument("--cpu", action="store_true", help="dry run of the demo stage on a CPU build's bundle")
    args = ap.parse_args(argv)
    out = args.outdir or Path(os.environ.get("OUT") or REPO / "out" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    tarball = args.bundle / "bundle.tar.xz"
    if not tarball.exists():
        sys.exit(f"gpu_check: {tarball} not found; run `make gpu-bundle` on the build machine and bring gpu-bundle/")
    if args.cpu and args.demo is None:
        sys.exit("gpu_check: --cpu is the dry run of the demo stage; give --demo SECONDS too")
    work = Path(tempfile.mkdtemp(prefix="dcme-gpu-"))
    logs = work / "logs"
    logs.mkdir()
    t0 = time.time()
    with tarfile.open(tarball) as tar:
        tar.extractall(work)
    cuda = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")
    libs = [str(work / "lib"), cuda, find_lib("libcudnn.so.9", "CUDNN_LIB"), find_lib("libnccl.so.2", "NCCL_LIB")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([p for p in libs if p] + [os.environ.get("LD_LIBRARY_PATH", "")]),
               GLOG_logtostderr="1", GLOG_minloglevel="0")  # the INFO lines are what the checks parse
    caffe = str(work / "bin" / "caffe")
    manifest = json.loads((args.bundle / "MANIFEST.json").read_text())
    if args.demo is not None and "demo" not in manifest:
        sys.exit(f"gpu_check: {args.bundle} has no demo stage; run `make gpu-bundle` again and bring gpu-bundle/")
    res = dict(unpacked_s=round(time.time() - t0, 1), libraries=libs, batches=manifest["batches"], checks={}, time={},
               train={}, peer=[], device=None, unpool_tests_passed=0)
    missing = [l for l in subprocess.run(["ldd", caffe], env=env, capture_output=True, text=True).stdout.splitlines()
               if "not found" in l]
    if missing:
        sys.exit(f"gpu_check: the bundled caffe misses {'; '.join(m.strip() for m in missing)} (searched: {libs})")

    # An outer `timeout` (SIGTERM) still leaves the results so far and the logs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"gpu_check: stopped by SIGTERM after {time.time() - t0:.0f} s"))
    try:
        if not args.cpu:
            checks(caffe, work, env, logs, res)
        if args.demo is not None:
            demo_stage(caffe, work, env, logs, res, manifest["demo"], args.demo, out / "demo", args.keep_weights,
                       [] if args.cpu else ["-gpu", "0"])
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
        for engine, workspace_mb, tf32 in TIME_RUNS:
            key = f"{net}/{engine}" + (f"/ws{workspace_mb}" if workspace_mb else "") + ("/tf32" if tf32 else "")
            run_env = dict(env, CAFFE_CUDNN_ALLOW_TF32="1" if tf32 else "0")
            if workspace_mb:
                run_env["CAFFE_CUDNN_WORKSPACE_MB"] = str(workspace_mb)
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

    print("4. caffe train -gpu 0, 30 iterations on a fixed batch, cuDNN in fp32 and TF32, Caffe's kernels", flush=True)
    for net in NETS:
        for key, (engine, tf32) in TRAIN_RUNS.items():
            rc, text = run([caffe, "train", "-solver", f"nets/{net}_solver_{engine}.prototxt", "-gpu", "0"],
                           logs / f"train_{net}_{key}.log", work,
                           dict(env, CAFFE_CUDNN_ALLOW_TF32="1" if tf32 else "0"), timeout=150)
            losses = parse_losses(text)
            # falls: the last 5 iterations' losses are all below the first (same batch every iteration)
            falls = len(losses) >= 10 and max(losses[-5:]) < losses[0]
            res["train"][f"{net}/{key}"] = dict(losses=losses, first=losses[0] if losses else None,
                                                last=losses[-1] if losses else None)
            res["checks"][f"train {net} {key}: loss falls"] = rc == 0 and falls
        # the same weights and batch: one forward pass of each, against cuDNN's in fp32
        for key, tolerance, what in (("caffe", FIRST_LOSS_TOLERANCE, "cuDNN and Caffe's first loss agree"),
                                     ("tf32", TF32_TOLERANCE, "TF32's first loss is fp32's")):
            first = [res["train"][f"{net}/{k}"]["first"] for k in ("default", key)]
            if None not in first:
                diff = abs(first[1] - first[0]) / abs(first[0])
                res["train"][f"{net}/{key}_first_loss_rel_diff"] = diff
                res["checks"][f"train {net}: {what} (within {tolerance:g})"] = diff < tolerance

    peer = work / "torch_peer.py"
    if peer.exists() and subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"],
                                        capture_output=True).returncode == 0:
        print("5. PyTorch peer (fp32 with and without cuDNN, TF32)", flush=True)
        peer_code = PEER.replace("BATCHES", json.dumps(res["batches"]))
        rc, text = run([sys.executable, "-c", peer_code], logs / "torch_peer.log", work, os.environ, timeout=300)
        res["peer"] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    else:
        print("5. PyTorch peer: skipped (no torch with CUDA, or no torch_peer.py in the bundle)", flush=True)


def demo_stage(caffe, work, env, logs, res, demo, seconds, out, keep_weights, device):
    """Step 6 (see the module docstring): fills res["demo"] and its checks; the predictions go to ``out``."""
    print(f"6. demo stage: SegNet {demo['size'][0]}x{demo['size'][1]} on {demo['train_frames']} frames, at most "
          f"{demo['max_iter']} iterations or {seconds:g} s; BatchNorm statistics; caffe test of {demo['val_frames']} "
          f"val frames", flush=True)
    r = res["demo"] = dict(seconds_limit=seconds, **{k: demo[k] for k in ("size", "train_frames", "val_frames",
                                                                         "batch_size", "max_iter")})
    (work / "snapshots").mkdir(exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rc, text, stopped = run_for([caffe, "train", "-solver", "nets/demo_solver.prototxt"] + device,
                                logs / "demo_train.log", work, env, seconds)
    curve, rate = parse_curve(text)
    snapshots = re.findall(r"Snapshotting to binary proto file (\S+\.caffemodel)", text)
    done = re.search(r"_iter_(\d+)\.caffemodel$", snapshots[-1]) if snapshots else None
    r.update(iterations=int(done.group(1)) if done else None, stopped_by_time=stopped, iterations_per_s=rate,
             losses=curve, first_loss=curve[0][1] if curve else None, final_loss=curve[-1][1] if curve else None)
    res["checks"]["demo: trained and snapshotted"] = rc == 0 and bool(done)
    # smoothed (average_loss) losses: the last below the first
    res["checks"]["demo: loss falls"] = len(curve) >= 2 and curve[-1][1] < curve[0][1]
    if not done:
        return
    rc, text = run([caffe, "train", "-solver", "nets/demo_bnstats_solver.prototxt", "-weights", snapshots[-1]]
                   + device, logs / "demo_bnstats.log", work, env, timeout=600)
    stats = re.findall(r"Snapshotting to binary proto file (\S+\.caffemodel)", text)
    res["checks"]["demo: BatchNorm statistics"] = rc == 0 and bool(stats)
    if not stats:
        return
    rc, text = run([caffe, "test", "-model", "nets/demo_deploy.prototxt", "-weights", stats[-1], "-iterations", "1"]
                   + device, logs / "demo_test.log", work, env, timeout=600)
    pred = work / "predictions.h5"
    size = pred.stat().st_size if pred.is_file() else 0
    r["predictions_mib"] = round(size / 2 ** 20, 2)
    fits = 0 < size <= demo["predictions_limit_mib"] * 2 ** 20
    res["checks"][f"demo: caffe test wrote the predictions (at most {demo['predictions_limit_mib']} MiB)"] = \
        rc == 0 and fits
    if rc == 0 and fits:
        atomic_copy(work / "data" / "demo" / "val" / "frames.txt", out / "predictions.h5.frames.txt")
        atomic_copy(pred, out / "predictions.h5")
        r["predictions"] = str(out / "predictions.h5")
    if keep_weights:
        for weights in (snapshots[-1], stats[-1]):
            atomic_copy(work / weights, out / Path(weights).name)


def print_table(res):
    print(f"\n## GPU check on {res.get('device')}\n")
    print("| net, batch, 340x680 | Caffe engine | Caffe fwd+bwd s/iter (ms/img) | peak GPU GiB | PyTorch peer | "
          "s/iter | Caffe / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    batches = res["batches"]
    for key, r in res["time"].items():
        net, engine = key.split("/")[:2]
        mode, cudnn = PEER_OF["tf32" if key.endswith("/tf32") else engine]
        peer = next((p for p in res["peer"] if p.get("net") == net and p.get("mode") == mode
                     and p.get("cudnn") == cudnn and "s_per_iter" in p), None)
        s = r.get("forward_backward_ms", float("nan")) / 1000
        label = ("cuDNN" if engine == "default" else "CAFFE (no cuDNN)") + (
            f", {key.split('/ws')[1].split('/')[0]} MiB workspace" if "/ws" in key else "") + (
            ", TF32" if key.endswith("/tf32") else "")
        peer_label = f"{mode}, {'cuDNN' if cudnn else 'no cuDNN'}"
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
    d = res.get("demo")
    if d:
        print(f"demo: {d.get('iterations')} iterations of SegNet {d['size'][0]}x{d['size'][1]} batch "
              f"{d['batch_size']}{' (stopped by the time limit)' if d.get('stopped_by_time') else ''}, "
              f"{d.get('iterations_per_s')} iterations/s, loss {d.get('first_loss')} -> {d.get('final_loss')}; "
              f"predictions of {d['val_frames']} val frames: {d.get('predictions', 'none')} "
              f"({d.get('predictions_mib')} MiB)\n")


if __name__ == "__main__":
    sys.exit(main())
