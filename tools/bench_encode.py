#!/usr/bin/env python
"""Benchmark of the DCME encoder (`make bench`): frames per second at 1024x2048 input, against a baseline that
only reads the same files (image, instanceIds, and the labelIds the encoder validates) and resizes them, in the same
run; peak memory per worker process.

Timings: one single-threaded process (like one encoder worker) runs every stage over all frames, best of 5
passes, stages interleaved, after a warm-up pass (files in the page cache). Memory: each stage once more in a
fresh process, its peak RSS. Target: DCME adds at most 30% on top of read + resize.
Dataset: --root (default data/cityscapes_synthetic when complete, else the default synthetic set generated into a
temporary folder).
"""
import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dcme_layers.core import paper
from dcme_layers.util import cli



def _runner(name, frames):
    """The per-frame function of one stage, and the items it runs over."""
    import cv2

    from dcme_layers.core.encoding import vector_map
    from dcme_layers.data import cityscapes as cs
    h, w = paper.SIZE
    if name == "baseline":  # read the frame's three files + resize, straight OpenCV
        def run(f):
            cv2.resize(cv2.imread(f.image, cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_AREA)
            cv2.resize(cv2.imread(f.instance_ids, cv2.IMREAD_UNCHANGED), (w, h), interpolation=cv2.INTER_NEAREST)
            cv2.imread(f.label_ids, cv2.IMREAD_UNCHANGED)  # read by the encoder to validate it (not resized)
        return run, frames
    if name == "encoder":  # read + validate ids and labelIds + resize + 8-class instance map + DCME vector map
        return (lambda f: cs.encode_frame(f, paper.SIZE)), frames
    if name == "encoder+datum":  # + the Datum serialization an encode_data worker does
        from dcme_layers.data import datum

        def run(f):
            img, vec, _ = cs.encode_frame(f, paper.SIZE)
            datum.image_datum(img), datum.float_datum(vec)
        return run, frames
    if name == "dcme":  # the DCME part alone, on ids already read and subsampled
        inputs = [cs.load_frame(f, paper.SIZE)[1] for f in frames]
        return (lambda ids: vector_map(cs.instance_map(ids))), inputs
    raise ValueError(name)


def _frames(root):
    from dcme_layers.data import cityscapes as cs
    return [f for s in cs.available_splits(root) for f in cs.list_frames(root, s)]


def _timings(stages, root, passes):
    """Best pass time of each stage; stages interleaved pass by pass so that load changes hit all alike."""
    import cv2
    cv2.setNumThreads(1)
    frames = _frames(root)
    runners = {s: _runner(s, frames) for s in stages}
    for run, items in runners.values():  # warm-up: page cache, imports
        for x in items:
            run(x)
    best = {s: float("inf") for s in stages}
    for _ in range(passes):
        for s, (run, items) in runners.items():
            t = time.perf_counter()
            for x in items:
                run(x)
            best[s] = min(best[s], time.perf_counter() - t)
    return len(frames), best


def _peak_rss(stage, root):
    """Peak resident memory (MiB) of a fresh worker process running one stage over all frames."""
    import cv2
    cv2.setNumThreads(1)
    run, items = _runner(stage, _frames(root))
    for x in items:
        run(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _end_to_end(root, workers):
    """tools/encode_data.py as a command (run before any other child process, so that the children's peak RSS
    is that of the encoder and its workers)."""
    import json
    import subprocess
    out = Path(tempfile.mkdtemp(prefix="bench_encode_lmdb_"))
    try:
        t = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).with_name("encode_data.py")), "--root", str(root),
                        "--out", str(out), "--workers", str(workers), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        n = sum(json.loads(m.read_text())["frames"] for m in out.glob("*/manifest.json"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return n, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="Cityscapes root at 1024x2048 (default: the synthetic set)")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="for the end-to-end row")
    return p


def run(a):
    tmp = None
    root = a.root
    if root is None:
        from dcme_layers.data import synthetic
        tmp = tempfile.mkdtemp(prefix="bench_encode_synthetic_")
        root = synthetic.existing_or_generate(synthetic.ROOT, tmp)
    try:
        import caffe  # noqa: F401
        have_caffe = True
    except ImportError:
        have_caffe = False
    stages = ["baseline", "encoder", "dcme"] + (["encoder+datum"] if have_caffe else [])
    rows = {}
    try:
        e2e = _end_to_end(root, a.workers) if have_caffe else None
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            n, times = pool.apply(_timings, (stages, str(root), a.passes))
        for s in stages:
            with ctx.Pool(1) as pool:
                rows[s] = (n, times[s], pool.apply(_peak_rss, (s, str(root))))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    n, base_t, _ = rows["baseline"]
    print(f"Encoder over {n} frames of {root} (1024x2048 -> {paper.SIZE[0]}x{paper.SIZE[1]}), one single-threaded "
          f"worker, best of {a.passes} passes.\n")
    print("| stage | frames/s | ms/frame | time vs read+resize | peak RSS per worker (MiB) |")
    print("|---|---:|---:|---:|---:|")
    labels = {"baseline": "read image, instanceIds, labelIds + resize (baseline)",
              "encoder": "encoder: read + check ids and labelIds + resize + DCME",
              "encoder+datum": "encoder + Datum serialization (encode_data worker)",
              "dcme": f"DCME only (instance map + vector map at {paper.SIZE[0]}x{paper.SIZE[1]})"}
    for s in stages:
        k, t, rss = rows[s]
        print(f"| {labels[s]} | {k / t:.1f} | {1000 * t / k:.1f} | {t / base_t:.2f} | {rss:.0f} |")
    if e2e:
        k, t, rss = e2e
        print(f"| end to end `encode_data` ({a.workers} workers, LMDB writes) | {k / t:.1f} | {1000 * t / k:.1f} | "
              f"- | {rss:.0f} (largest process) |")
    overhead = rows["encoder"][1] / base_t - 1
    verdict = "met" if overhead <= 0.30 else "NOT met"
    print(f"\nDCME and the checks on top of read + resize: {100 * overhead:.1f}% (target <= 30%: {verdict}).")
    if not have_caffe:
        print("(pycaffe not importable: Datum and end-to-end rows skipped)")
    return 0


def main(argv=None):
    return cli.run_tool("bench_encode", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
