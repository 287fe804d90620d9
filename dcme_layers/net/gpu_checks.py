"""The steps of the GPU check (tools/gpu_check.py, which lists them) on the unpacked bundle: each runs the bundle's
caffe (or its gtest binary, or the PyTorch peer) and fills the results ``res`` (gpu_check.json) with its numbers
and its checks (name: passed).

Standard library only: tools/gpu_check.py runs it on a GPU machine's bare python3.
"""
import json
import os
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

from dcme_layers.net import caffe_log
from dcme_layers.util.commands import GpuMemory, copy_atomic, run_logged, run_until

__all__ = ["Caffe", "FIRST_LOSS_TOLERANCE", "NETS", "STEPS", "TF32_TOLERANCE", "TIME_RUNS", "TRAIN_RUNS",
           "TIME_ITERS", "demo_stage", "device_query", "time_nets", "torch_peer", "train_nets", "unpool_gtest"]

TIME_ITERS = 10
NETS = ("segnet", "fcn8s")
# `caffe time` runs per net: (engine, CAFFE_CUDNN_WORKSPACE_MB or None for the default, 4 GiB; TF32 allowed).
# TF32 (CAFFE_CUDNN_ALLOW_TF32=1) changes cuDNN's convolutions only, so it runs with the default (cuDNN) engine.
TIME_RUNS = (("default", None, False), ("default", None, True), ("caffe", None, False), ("default", 1024, False))
# `caffe train` runs per net: (engine, TF32 allowed); the key of each in gpu_check.json.
TRAIN_RUNS = {"default": ("default", False), "tf32": ("default", True), "caffe": ("caffe", False)}
# cuDNN's and Caffe's kernels in fp32 on the same weights and batch: their first losses agree to float rounding.
FIRST_LOSS_TOLERANCE = 1e-4
# TF32 rounds each convolution's inputs to a 10-bit mantissa, but the loss sums squares over every pixel, which
# averages those errors: a first loss more than 1% off fp32's would be a bug, not rounding.
TF32_TOLERANCE = 1e-2
# The PyTorch peer: fp32 and TF32 with cuDNN, fp32 without, for both nets, by torch_peer.py's own run() with the
# iterations its main uses.
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


class Caffe(namedtuple("Caffe", "binary work env logs")):
    """The bundle's caffe ``binary``, unpacked in ``work``, run in ``env`` with its logs in ``logs``."""

    def run(self, args, log, timeout, **env):
        """``caffe <args>`` in ``work`` with its output in ``logs``/``log`` and ``env`` added; (exit status, output)."""
        return run_logged([self.binary] + args, self.logs / log, self.work, dict(self.env, **env), timeout)


def device_query(caffe, res):
    """Step 1: `caffe device_query` names the GPU."""
    print("1. device query", flush=True)
    rc, text = caffe.run(["device_query", "-gpu", "0"], "device_query.log", timeout=60)
    m = re.search(r"Name:\s+(.+)", text)
    res["device"] = m.group(1).strip() if m else None
    res["checks"]["device_query"] = rc == 0


def unpool_gtest(caffe, res):
    """Step 2: the native layers' gtest binary, GPU against CPU."""
    print("2. native Unpool: GPU = CPU, gradient checks (gtest)", flush=True)
    rc, text = run_logged([str(caffe.work / "bin" / "test_dcme_layers")], caffe.logs / "test_dcme_layers.log",
                          caffe.work, caffe.env, timeout=120)
    m = re.search(r"\[  PASSED  \] (\d+) tests?", text)
    res["unpool_tests_passed"] = int(m.group(1)) if m else 0
    res["checks"]["unpool_gtest"] = rc == 0 and bool(m)


def time_nets(caffe, res):
    """Step 3: `caffe time` of each net in each of TIME_RUNS, with the peak GPU memory."""
    print(f"3. caffe time, {TIME_ITERS} iterations", flush=True)
    for net in NETS:
        for engine, workspace_mb, tf32 in TIME_RUNS:
            key = f"{net}/{engine}" + (f"/ws{workspace_mb}" if workspace_mb else "") + ("/tf32" if tf32 else "")
            env = dict(CAFFE_CUDNN_ALLOW_TF32="1" if tf32 else "0")
            if workspace_mb:
                env["CAFFE_CUDNN_WORKSPACE_MB"] = str(workspace_mb)
            sampler = GpuMemory()
            sampler.start()
            rc, text = caffe.run(["time", "-model", f"nets/{net}_time_{engine}.prototxt", "-gpu", "0", "-iterations",
                                  str(TIME_ITERS)], f"time_{key.replace('/', '_')}.log", timeout=180, **env)
            r = caffe_log.parse_time(text)
            r["peak_gib"] = sampler.result()
            if net == "segnet" and "layers" in r:
                unpool = sum(ms for name, ms in r["layers"].items() if name.startswith("upsample"))
                r["unpool_ms"] = round(unpool, 2)
                r["unpool_share"] = round(unpool / r["forward_backward_ms"], 4)
            r.pop("layers", None)
            res["time"][key] = r
            res["checks"][f"time {key}"] = rc == 0 and "forward_backward_ms" in r


def train_nets(caffe, res):
    """Step 4: `caffe train` of each net in each of TRAIN_RUNS; its loss falls, the first losses agree."""
    print("4. caffe train -gpu 0, 30 iterations on a fixed batch, cuDNN in fp32 and TF32, Caffe's kernels", flush=True)
    for net in NETS:
        for key, (engine, tf32) in TRAIN_RUNS.items():
            rc, text = caffe.run(["train", "-solver", f"nets/{net}_solver_{engine}.prototxt", "-gpu", "0"],
                                 f"train_{net}_{key}.log", timeout=150, CAFFE_CUDNN_ALLOW_TF32="1" if tf32 else "0")
            losses = [loss for _, loss in caffe_log.loss_curve(text)[0]]
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


def torch_peer(caffe, res):
    """Step 5: the PyTorch peer's times, when the bundle has torch_peer.py and python3 has torch with CUDA."""
    if not (caffe.work / "torch_peer.py").exists() or subprocess.run(
            [sys.executable, "-c", "import torch; assert torch.cuda.is_available()"], capture_output=True).returncode:
        print("5. PyTorch peer: skipped (no torch with CUDA, or no torch_peer.py in the bundle)", flush=True)
        return
    print("5. PyTorch peer (fp32 with and without cuDNN, TF32)", flush=True)
    peer_code = PEER.replace("BATCHES", json.dumps(res["batches"]))
    rc, text = run_logged([sys.executable, "-c", peer_code], caffe.logs / "torch_peer.log", caffe.work, os.environ,
                          timeout=300)
    res["peer"] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def demo_stage(caffe, res, demo, seconds, out, keep_weights, device):
    """Step 6, the demo stage (tools/gpu_check.py): fills res["demo"] and its checks; the predictions go to ``out``."""
    print(f"6. demo stage: SegNet {demo['size'][0]}x{demo['size'][1]} on {demo['train_frames']} frames, at most "
          f"{demo['max_iter']} iterations or {seconds:g} s; BatchNorm statistics; caffe test of {demo['val_frames']} "
          f"val frames", flush=True)
    r = res["demo"] = dict(seconds_limit=seconds, **{k: demo[k] for k in ("size", "train_frames", "val_frames",
                                                                         "batch_size", "max_iter")})
    (caffe.work / "snapshots").mkdir(exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rc, text, stopped = run_until([caffe.binary, "train", "-solver", "nets/demo_solver.prototxt"] + device,
                                  caffe.logs / "demo_train.log", caffe.work, caffe.env, seconds, SNAPSHOT_GRACE_S)
    curve, rate = caffe_log.loss_curve(text)
    snapshots = re.findall(r"Snapshotting to binary proto file (\S+\.caffemodel)", text)
    done = re.search(r"_iter_(\d+)\.caffemodel$", snapshots[-1]) if snapshots else None
    r.update(iterations=int(done.group(1)) if done else None, stopped_by_time=stopped, iterations_per_s=rate,
             losses=curve, first_loss=curve[0][1] if curve else None, final_loss=curve[-1][1] if curve else None)
    res["checks"]["demo: trained and snapshotted"] = rc == 0 and bool(done)
    # smoothed (average_loss) losses: the last below the first
    res["checks"]["demo: loss falls"] = len(curve) >= 2 and curve[-1][1] < curve[0][1]
    if not done:
        return
    rc, text = caffe.run(["train", "-solver", "nets/demo_bnstats_solver.prototxt", "-weights", snapshots[-1]]
                         + device, "demo_bnstats.log", timeout=600)
    stats = re.findall(r"Snapshotting to binary proto file (\S+\.caffemodel)", text)
    res["checks"]["demo: BatchNorm statistics"] = rc == 0 and bool(stats)
    if not stats:
        return
    rc, text = caffe.run(["test", "-model", "nets/demo_deploy.prototxt", "-weights", stats[-1], "-iterations", "1"]
                         + device, "demo_test.log", timeout=600)
    pred = caffe.work / "predictions.h5"
    size = pred.stat().st_size if pred.is_file() else 0
    r["predictions_mib"] = round(size / 2 ** 20, 2)
    fits = 0 < size <= demo["predictions_limit_mib"] * 2 ** 20
    res["checks"][f"demo: caffe test wrote the predictions (at most {demo['predictions_limit_mib']} MiB)"] = \
        rc == 0 and fits
    if rc == 0 and fits:
        copy_atomic(caffe.work / "data" / "demo" / "val" / "frames.txt", out / "predictions.h5.frames.txt")
        copy_atomic(pred, out / "predictions.h5")
        r["predictions"] = str(out / "predictions.h5")
    if keep_weights:
        for weights in (snapshots[-1], stats[-1]):
            copy_atomic(caffe.work / weights, out / Path(weights).name)


#: Steps 1-5, in order (the demo stage is asked for separately).
STEPS = (device_query, unpool_gtest, time_nets, train_nets, torch_peer)
