#!/usr/bin/env python
"""`make demo`: the whole DCME pipeline on the embedded synthetic Cityscapes, with the user's own commands.

1. generate the synthetic set (tools/make_synthetic_cityscapes.py)   -> data/cityscapes_synthetic
2. encode it at 340x680 (tools/encode_data.py, = make encode-data)   -> data/lmdb
3. extract the instance crops for the classifier (tools/extract_instances.py) -> data/instances
4. train SegNet and GoogLeNet briefly with the smoke solvers (`caffe train -solver prototxt/*_smoke_solver.prototxt`)
5. infer, decode, classify, export and score (tools/evaluate.py, = make evaluate), with the oracle rows
Everything lands in --out (default out/demo): report.md / report.json, figures/, logs/. Steps already done are
skipped, so a second run only re-scores.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

from dcme_layers.caffe_log import quiet

quiet()  # before anything imports caffe: no glog INFO lines from the nets

from dcme_layers.inference import newest_snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CAFFE = str(ROOT / ".venv" / "bin" / "caffe")


def step(title, cmd, log=None):
    print(f"\n[demo] {title}\n[demo] $ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    if log is None:
        rc = subprocess.call(cmd, cwd=ROOT)
    else:
        with open(log, "w") as f:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"[demo] FAILED: {title} (exit {rc})" + (f"; log: {log}" if log else ""))
    print(f"[demo] done in {time.time() - t0:.0f} s", flush=True)


def train(name, out):
    """`caffe train` with the smoke solver, unless its snapshot exists; returns the weights."""
    prefix = f"models/{name}/{name}_smoke"
    weights = newest_snapshot(str(ROOT / prefix))
    if weights is None:
        step(f"training {name} (smoke solver)", [CAFFE, "train", "-solver", f"prototxt/{name}_smoke_solver.prototxt"],
             log=out / "logs" / f"train_{name}.log")
        weights = newest_snapshot(str(ROOT / prefix))
    return weights


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo")
    args = ap.parse_args()
    out = ROOT / args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = "data/cityscapes_synthetic"
    if not (ROOT / data / ".complete").exists():
        step("generating synthetic Cityscapes", [PY, "tools/make_synthetic_cityscapes.py", "--out", data])
    step("encoding DCME vector maps (make encode-data)", [PY, "tools/encode_data.py", "--root", data, "--out", "data/lmdb"])
    step("extracting instance crops", [PY, "tools/extract_instances.py", "--root", data, "--out", "data/instances"])
    segnet = train("segnet", out)
    googlenet = train("googlenet", out)
    step("infer, decode, classify, export, evaluate (make evaluate)",
         [PY, "tools/evaluate.py", "--model", "segnet", "--split", "val", "--root", data, "--encoded", "data/lmdb",
          "--out", args.out, "--weights", segnet, "--classifier-weights", googlenet, "--oracle"])
    print(f"\n[demo] finished in {time.time() - t0:.0f} s. Report: {out / 'report.md'}; figures: {out / 'figures'}")


if __name__ == "__main__":
    main()
