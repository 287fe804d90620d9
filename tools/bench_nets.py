#!/usr/bin/env python
"""Benchmark of the DCME regressors on this CPU: SegNet and FCN-8s at the paper's 340x680.

Prints a Markdown table with
- forward+backward seconds per 340x680 image (batch 1, after one warm-up iteration; a child process per net) and
  the seconds of a whole SGD iteration (plus the update: momentum, weight decay),
- the peak resident memory of that child (measured, batch 1) next to the estimate from the blob shapes,
- the estimated training memory at the paper's batch sizes (SegNet 15, FCN-8s 14) and the largest batch that fits
  in 24 GiB,
- the native Unpool layers' share of a SegNet iteration (target: under 10%), timed layer by layer.

Memory estimate (what Caffe allocates for `caffe train` in CPU mode): data + diff of every blob (split copies: diff
only; the inputs: no diff), a Python Unpool layer's cached int64 indices (the native one keeps none), each
convolution's im2col buffer (one image; none for 1x1 convolutions), parameters x 3 (weights, gradients, SGD
momentum history) and the LMDB Data layers' prefetch (4 batches of image + vector map, TRAIN and TEST nets). It is
affine in the batch size.

    .venv/bin/python tools/bench_nets.py [--iters 1] [--size 340 680]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dcme_layers.core import paper
from dcme_layers.util import cli

REPO = Path(__file__).resolve().parents[1]
NETS = ("segnet", "fcn8s")
GIB = 1024 ** 3
PREFETCH = 4  # DataParameter.prefetch default


def build(name, shape, tmp):
    import importlib

    import caffe
    mod = importlib.import_module(f"models.{name}.net")
    path = Path(tmp) / f"bench_{name}_{shape[0]}.prototxt"
    path.write_text(str(mod.deploy(shape, loss=True)))
    return caffe.Net(str(path), caffe.TRAIN), mod


def child(name, size, iters, tmp):
    """Run in a child process: time forward+backward and the SGD update at batch 1, time the Unpool layers, report
    the peak RSS of training (the solver's momentum history included)."""
    import caffe
    import numpy as np

    import models

    caffe.set_mode_cpu()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    build(name, (1, 3) + tuple(size), tmp)  # writes the prototxt
    solver_path = Path(tmp) / f"bench_{name}_solver.prototxt"
    solver_path.write_text(models.solver(str(Path(tmp) / f"bench_{name}_1.prototxt"), str(Path(tmp) / name),
                                         dict(base_lr=1e-12, momentum=0.9, max_iter=100, snapshot=0, test_iter=None,
                                              random_seed=0)))
    solver = caffe.get_solver(str(solver_path))
    net = solver.net
    rng = np.random.default_rng(0)
    net.blobs["data"].data[...] = rng.normal(0, 60, net.blobs["data"].data.shape)
    net.blobs["vectors"].data[...] = rng.normal(0, 20, net.blobs["vectors"].data.shape)
    solver.step(1)  # warm-up: first touch of every buffer, the momentum history
    t = time.perf_counter()
    for _ in range(iters):
        net.forward()
        net.backward()
    total = (time.perf_counter() - t) / iters
    # The native Unpool layers alone, forward and backward, on the blobs of that pass.
    unpool_s = 0.0
    for i in [i for i, name in enumerate(net._layer_names) if net.layers[i].type == "Unpool"]:
        t = time.perf_counter()
        for _ in range(iters):
            net._forward(i, i)
            net._backward(i, i)
        unpool_s += (time.perf_counter() - t) / iters
    t = time.perf_counter()
    solver.apply_update()  # the SGD update (momentum, weight decay) that follows forward+backward in an iteration
    step = total + time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": total, "unpool": unpool_s, "step": step, "rss_gib": (rss - rss0) * 1024 / GIB}))


def estimate_bytes(name, batch, size, tmp):
    """Training memory (bytes) for one batch size, from the blob shapes of the initialised net (see module doc)."""
    net, mod = build(name, (batch, 3) + tuple(size), tmp)
    proto = mod.deploy((batch, 3) + tuple(size), loss=True)
    inputs = {"data", "vectors"}
    total = 0
    for bname, blob in net.blobs.items():
        n = blob.count * 4
        total += n if "_split_" in bname else (n if bname in inputs else 2 * n)
    for layer in proto.layer:  # Unpool caches its indices as int64, one per pooled element
        if layer.type == "Python" and layer.python_param.layer == "Unpool":
            total += net.blobs[layer.bottom[1]].count * 8
    for layer in proto.layer:  # layers' own full-size buffers (BVLC): BatchNorm x_norm_ and temp_, in-place Scale's
        # copy of its input, MAX Pooling's argmax (one top), Dropout's mask, EuclideanLoss's difference
        count = net.blobs[layer.bottom[0]].count if layer.bottom else 0
        total += 4 * count * {"BatchNorm": 2, "Dropout": 1, "EuclideanLoss": 1}.get(layer.type, 0)
        if layer.type == "Scale" and layer.top[0] == layer.bottom[0]:
            total += 4 * count
        if layer.type == "Pooling" and len(layer.top) == 1:
            total += 4 * net.blobs[layer.top[0]].count
    for layer in proto.layer:  # im2col buffer per non-1x1 convolution, for one image
        if layer.type in ("Convolution", "Deconvolution"):
            cp = layer.convolution_param
            k = cp.kernel_size[0]
            if k == 1 and all(p == 0 for p in cp.pad) and all(s == 1 for s in cp.stride):
                continue
            bottom, top = net.blobs[layer.bottom[0]], net.blobs[layer.top[0]]
            group = cp.group or 1
            if layer.type == "Convolution":
                total += bottom.channels // group * k * k * top.height * top.width * 4
            else:
                total += top.channels // group * k * k * bottom.height * bottom.width * 4
    params = sum(b.count for blobs in net.params.values() for b in blobs)
    total += 3 * params * 4
    total += 2 * PREFETCH * batch * 5 * size[0] * size[1] * 4  # TRAIN and TEST Data layers: image + 2-ch vectors
    del net
    return total, params


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=1, help="timed iterations per net (after one warm-up)")
    ap.add_argument("--size", type=int, nargs=2, default=list(paper.SIZE), metavar=("H", "W"))
    ap.add_argument("--child", choices=NETS, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    return ap


def run(args):
    if args.child:
        child(args.child, args.size, args.iters, args.tmp)
        return 0
    import caffe
    caffe.set_mode_cpu()
    import models
    from models.fcn8s.net import PAPER as FCN_PAPER
    from models.segnet.net import PAPER as SEGNET_PAPER

    # the paper's batch in one pass (the solvers split it with iter_size to fit 24 GiB)
    paper_batch = {"segnet": models.paper_batch(SEGNET_PAPER), "fcn8s": models.paper_batch(FCN_PAPER)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in NETS:
            print(f"[bench_nets] {name}: forward+backward at {args.size[0]}x{args.size[1]} ...", file=sys.stderr)
            out = subprocess.run([sys.executable, __file__, "--child", name, "--iters", str(args.iters),
                                  "--size", *map(str, args.size), "--tmp", tmp], capture_output=True, text=True,
                                 cwd=REPO)
            if out.returncode != 0:
                print(f"bench_nets: {name} failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            e1, params = estimate_bytes(name, 1, args.size, tmp)
            e2, _ = estimate_bytes(name, 2, args.size, tmp)
            per_image, fixed = e2 - e1, 2 * e1 - e2
            b = paper_batch[name]
            rows.append(dict(name=name, r=r, e1=e1, params=params, paper_b=b, paper=fixed + b * per_image,
                             fits=int((24 * GIB - fixed) // per_image)))
    print(f"\n### DCME regressors on this CPU ({os.cpu_count()} cores), input {args.size[0]}x{args.size[1]}\n")
    print("| net | params | fwd+bwd s/image (batch 1) | SGD iteration s (batch 1) | peak RSS batch 1, measured | "
          "estimate batch 1 | estimate at paper batch | batch fitting 24 GiB | Unpool share |")
    print("|---|---|---|---|---|---|---|---|---|")
    seg = rows[0]["r"]["seconds"]
    for row in rows:
        r = row["r"]
        share = f"{100 * r['unpool'] / r['seconds']:.1f}% ({r['unpool']:.2f} s)" if row["name"] == "segnet" else "-"
        print(f"| {row['name']} | {row['params'] / 1e6:.1f} M | {r['seconds']:.2f} ({r['seconds'] / seg:.2f}x SegNet)"
              f" | {r['step']:.2f} | {r['rss_gib']:.2f} GiB | {row['e1'] / GIB:.2f} GiB | {row['paper'] / GIB:.1f} GiB "
              f"(batch {row['paper_b']} at once) | {row['fits']} | {share} |")
    s = rows[0]["r"]
    print(f"\nUnpooling share of a SegNet iteration: {100 * s['unpool'] / s['seconds']:.1f}% "
          f"(target < 10%: {'met' if s['unpool'] / s['seconds'] < 0.10 else 'NOT met'}).")
    return 0


def main(argv=None):
    return cli.run_tool("bench_nets", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
