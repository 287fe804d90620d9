#!/usr/bin/env python
"""Benchmark: DCME decoding time per 340x680 frame vs encoding the same frame, and export + evaluation per frame.

Frames: the val split of data/cityscapes_synthetic when it exists (else 6 synthetic val frames generated in a
temporary folder) and, when present, the real Cityscapes sample (../shared/data/cityscapes_sample). For each frame
the instanceIds are subsampled to 340x680; encoding = encoding.vector_map (CM), decoding = decoding.decode with the
paper's thresholds on the ground-truth map and on noisy copies (Gaussian, sigma 1 px on instance pixels; and
a network-like one: sigma 1.5 px on instance pixels plus random vectors up to 30 px on 5% of the background). Times
are the median of 7 interleaved runs per frame, then the median over frames ("best-run ratio": the same with
the fastest run, what a busy machine does not distort). Targets: decoding a ground-truth map <= 0.5x encoding, the
network-like map <= 1x. Also: an untrained net's output (uniform random vectors, 1000+ instances), and the first
call's compile time in a fresh process with a cold and with a warm numba cache.

  .venv/bin/python tools/bench_decode.py [--root ROOT] [--frames N]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dcme_layers.core import paper
from dcme_layers.core.decoding import decode
from dcme_layers.core.encoding import vector_map
from dcme_layers.data import cityscapes, synthetic
from dcme_layers.evaluation import cs_eval, export, oracle
from dcme_layers.evaluation.oracle import noisy_map
from dcme_layers.util import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("DCME_CITYSCAPES_SAMPLE", REPO.parent / "shared" / "data" / "cityscapes_sample"))


ENCODE = "encode (vector_map, CM)"
NOISY = "noisy map (sigma 1.5 px + 5% background votes up to 30 px)"


def decode_times(frames, repeat=7):
    """{row name: [seconds per frame]} for encoding and the decoding variants. The variants run interleaved,
    round after round, so that a busy machine slows them alike; per frame the median of the rounds."""
    rng = np.random.default_rng(0)
    seg, fcn = tuple(paper.THRESHOLDS["segnet"]), tuple(paper.THRESHOLDS["fcn8s"])   # printed as (DT, VT, ET)
    rows = {}
    for f in frames:
        _, ids = cityscapes.subsample(cityscapes.read_image(f.image), cityscapes.read_instance_ids(f.instance_ids),
                                      paper.SIZE)
        inst = cityscapes.instance_map(ids)
        vmap = vector_map(inst)
        noisy = vmap + (rng.normal(0, 1.0, vmap.shape) * (inst > 0)).astype(np.float32)
        noisier = noisy_map(vmap, inst, rng)
        steps = {ENCODE: lambda: vector_map(inst),
                 f"decode GT map, segnet {seg}": lambda: decode(vmap, *seg),
                 f"decode GT map, fcn8s {fcn}": lambda: decode(vmap, *fcn),
                 f"decode noisy map (sigma 1 px), segnet {seg}": lambda: decode(noisy, *seg),
                 f"decode {NOISY}, segnet {seg}": lambda: decode(noisier, *seg),
                 f"decode GT map, watershed ablation, segnet {seg}": lambda: decode(vmap, *seg, method="watershed")}
        times = {k: [] for k in steps}
        for _ in range(repeat):
            for k, fn in steps.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        for k, ts in times.items():
            rows.setdefault(k, []).append((float(np.median(ts)), float(np.min(ts))))
    return rows


def export_eval_times(frames, tmp):
    """(export seconds per frame, evaluation seconds per frame) for the CM/vote oracle at 340x680."""
    t = time.perf_counter()
    for f in frames:
        o = oracle.oracle_predictions(f, paper.SIZE)
        export.export_frame(tmp, f.name, o.labels, o.label_ids, o.scores, o.size)
    exporting = (time.perf_counter() - t) / len(frames)
    t = time.perf_counter()
    cs_eval.evaluate(frames, tmp)
    return exporting, (time.perf_counter() - t) / len(frames)


def table(title, frames, tmp):
    rows = decode_times(frames)
    enc, enc_best = np.median(rows[ENCODE], axis=0)
    out = [f"### {title}: {len(frames)} frames, {paper.SIZE[0]}x{paper.SIZE[1]}", "",
           "| step (per frame) | median ms | ratio to encoding | best-run ratio | target |", "|---|---|---|---|---|"]
    for name, ts in rows.items():
        med, best = np.median(ts, axis=0)
        ground_truth = name.startswith("decode GT") and "watershed" not in name
        target = "<= 0.5" if ground_truth else "<= 1" if NOISY in name else ""
        out.append(f"| {name} | {1e3 * med:.2f} | {med / enc:.2f} | {best / enc_best:.2f} | {target} |")
    exporting, evaluation = export_eval_times(frames, tmp)
    out.append(f"| export (oracle CM/vote, full-res mask PNGs) | {1e3 * exporting:.0f} | {exporting / enc:.0f} | | |")
    out.append(f"| evaluation (cityscapesscripts matching + AP) | {1e3 * evaluation:.0f} | {evaluation / enc:.0f} | "
               "| |")
    return "\n".join(out)


def random_map_time(repeat=5):
    """(instances, median seconds) decoding uniform random vectors in +-6 px at 340x680 with SegNet's thresholds."""
    v = np.random.default_rng(0).uniform(-6, 6, (2,) + tuple(paper.SIZE)).astype(np.float32)
    th = paper.THRESHOLDS["segnet"]
    n = len(decode(v, *th).votes)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        decode(v, *th)
        times.append(time.perf_counter() - t)
    return n, float(np.median(times))


def first_call_times():
    """(cold, warm) seconds of importing the decoder and decoding a small map in a fresh process, with an empty
    numba cache and then with the cache that run left."""
    code = ("import time; t = time.perf_counter(); import numpy as np; from dcme_layers.core.decoding import decode; "
            "decode(np.zeros((2, 8, 8), np.float32), 10, 50, 15); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        return [float(subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, text=True,
                                     capture_output=True).stdout) for _ in range(2)]


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=synthetic.ROOT, help="Cityscapes root with a val split")
    ap.add_argument("--frames", type=int, default=6, help="frames per data set (default: %(default)s)")
    return ap


def run(a):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synthetic.existing_or_generate(a.root, tmp / "synthetic", {"val": a.frames}, split="val")
        sets = [("synthetic val", cityscapes.list_frames(root, "val")[:a.frames])]
        if (SAMPLE / "gtFine" / "train").is_dir():
            sets.append(("real Cityscapes sample", cityscapes.list_frames(SAMPLE, "train")[:a.frames]))
        for i, (title, frames) in enumerate(sets):
            print(table(title, frames, tmp / f"pred{i}"), end="\n\n", flush=True)
    n, seconds = random_map_time()
    cold, warm = first_call_times()
    print("| other | measured |\n|---|---|\n"
          f"| decode an untrained net's output (uniform random vectors in +-6 px, 340x680, segnet thresholds): "
          f"{n} instances | {1e3 * seconds:.0f} ms |\n"
          f"| first decode in a fresh process, import included: cold numba cache (compiles) | {cold:.1f} s |\n"
          f"| the same with a warm cache | {warm:.1f} s |", flush=True)


def main(argv=None):
    return cli.run_tool("bench_decode", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
