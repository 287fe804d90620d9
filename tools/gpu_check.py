#!/usr/bin/env python3
"""The GPU check of the CUDA Caffe bundle (tools/gpu_check.sh; standard library only, any Python >= 3.8).

Unpacks gpu-bundle/bundle.tar.xz (`make gpu-bundle`) into a temporary folder, finds the libraries the bundle leaves
to the GPU machine (CUDA in /usr/local/cuda/lib64 or $CUDA_HOME/lib64; cuDNN and NCCL from python3's nvidia
wheels or $CUDNN_LIB / $NCCL_LIB), then runs, in order, each with its log in OUTDIR (dcme_layers.net.gpu_checks):
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
Exit 1 if a check fails. --cpu is the dry run of the demo stage on a CPU build's bundle (tests/test_gpu_check.py):
no -gpu, and steps 1-5 are left out. The dcme_layers modules it imports are standard library only;
tools/gpu_check.sh puts the repository on PYTHONPATH for them.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from dcme_layers.net import gpu_checks
from dcme_layers.util import cli
from dcme_layers.util.commands import find_library
from dcme_layers.util.errors import DcmeError

REPO = Path(__file__).resolve().parents[1]
# PyTorch peer configurations that each Caffe run is compared with (torch_peer.py's mode, cudnn).
PEER_OF = {"default": ("fp32", True), "tf32": ("tf32", True), "caffe": ("fp32", False)}


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", nargs="?", type=Path, help="default: $OUT, else out/gpu_check")
    ap.add_argument("--demo", type=float, metavar="SECONDS",
                    help="also the demo stage: train the demo's GPU configuration for at most SECONDS")
    ap.add_argument("--bundle", type=Path, default=REPO / "gpu-bundle", help="default: %(default)s")
    ap.add_argument("--keep-weights", action="store_true", help="copy the demo's caffemodels into OUTDIR/demo too")
    ap.add_argument("--cpu", action="store_true", help="dry run of the demo stage on a CPU build's bundle")
    return ap


def unpack(bundle, work):
    """Unpack ``bundle``/bundle.tar.xz into ``work``; returns its Caffe (the binary, the environment it runs in:
    the bundle's and the GPU machine's libraries, glog INFO lines on stderr for the steps to parse) and the library
    folders. Refuses a caffe that misses libraries."""
    with tarfile.open(bundle / "bundle.tar.xz") as tar:
        tar.extractall(work)
    cuda = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")
    libs = [str(work / "lib"), cuda, find_library("libcudnn.so.9", "CUDNN_LIB"),
            find_library("libnccl.so.2", "NCCL_LIB")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([p for p in libs if p] + [os.environ.get("LD_LIBRARY_PATH", "")]),
               GLOG_logtostderr="1", GLOG_minloglevel="0")
    caffe = gpu_checks.Caffe(str(work / "bin" / "caffe"), work, env, work / "logs")
    caffe.logs.mkdir()
    missing = [l for l in subprocess.run(["ldd", caffe.binary], env=env, capture_output=True, text=True).stdout
               .splitlines() if "not found" in l]
    if missing:
        raise DcmeError(f"the bundled caffe misses {'; '.join(m.strip() for m in missing)} (searched: {libs})")
    return caffe, libs


def finish(res, out, logs, started):
    """Write gpu_check.json and gpu_check_logs.tar.gz to ``out`` (also after a failed or stopped step)."""
    res["total_s"] = round(time.time() - started, 1)
    try:
        res["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                            "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        res["nvidia_smi"] = None
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    with tarfile.open(out / "gpu_check_logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="gpu_check_logs")


def run(args):
    out = args.outdir or Path(os.environ.get("OUT") or REPO / "out" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    if not (args.bundle / "bundle.tar.xz").exists():
        raise DcmeError(f"{args.bundle / 'bundle.tar.xz'} not found; run `make gpu-bundle` on the build machine and "
                        "bring gpu-bundle/")
    if args.cpu and args.demo is None:
        raise DcmeError("--cpu is the dry run of the demo stage; give --demo SECONDS too")
    started = time.time()
    caffe, libs = unpack(args.bundle, Path(tempfile.mkdtemp(prefix="dcme-gpu-")))
    manifest = json.loads((args.bundle / "MANIFEST.json").read_text())
    if args.demo is not None and "demo" not in manifest:
        raise DcmeError(f"{args.bundle} has no demo stage; run `make gpu-bundle` again and bring gpu-bundle/")
    res = dict(unpacked_s=round(time.time() - started, 1), libraries=libs, batches=manifest["batches"], checks={},
               time={}, train={}, peer=[], device=None, unpool_tests_passed=0)
    # An outer `timeout` (SIGTERM) still leaves the results so far and the logs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"gpu_check: stopped by SIGTERM after "
                                                      f"{time.time() - started:.0f} s"))
    try:
        for step in () if args.cpu else gpu_checks.STEPS:
            step(caffe, res)  # each fills res as it goes: a step that fails or hangs leaves the earlier results
        if args.demo is not None:
            gpu_checks.demo_stage(caffe, res, manifest["demo"], args.demo, out / "demo", args.keep_weights,
                                  [] if args.cpu else ["-gpu", "0"])
    finally:
        finish(res, out, caffe.logs, started)
        shutil.rmtree(caffe.work, ignore_errors=True)
    print_table(res)
    ok = all(res["checks"].values())
    print(("all checks passed" if ok else "FAILED: " + ", ".join(k for k, v in res["checks"].items() if not v))
          + f"; {res['total_s']:.0f} s; results in {out / 'gpu_check.json'}")
    return 0 if ok else 1


def print_table(res):
    """The results ``res`` as a Markdown table of the times beside the peer's, then the other checks' numbers."""
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


def main(argv=None):
    return cli.run_tool("gpu_check", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
