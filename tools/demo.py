#!/usr/bin/env python
"""`make demo`: the whole DCME pipeline on the embedded synthetic Cityscapes (generate, encode, train SegNet and
GoogLeNet, tune the decoding thresholds, evaluate), in a configuration that learns within minutes on 2 CPU cores (on
a CUDA build with a working GPU: at the paper's 340x680). Steps already done are skipped; report.md, figures/ and
logs/ land in --out. README, "The demo", gives the steps; docs/demo.md the choices with their measurements.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dcme_layers.core import paper
from dcme_layers.core.thresholds import parse_thresholds
from dcme_layers.data import synthetic
from dcme_layers.net import caffe_log
from dcme_layers.pipeline.tuning_grid import default_grid
from dcme_layers.util import cli
from dcme_layers.util.files import atomic_write
from dcme_layers.util.records import digest, read_record

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CAFFE = str(ROOT / ".venv" / "bin" / "caffe")

SEED = 1  # the default --seed
#: The CPU configuration's (DT, VT, ET) values: from the paper's scaled to 85x170 (2.5, 3, 3.75) to about its unscaled.
CPU_GRID = ((2.5, 5.0, 7.5, 10.0, 14.0), (3, 10, 20, 40, 80), (3.75, 7.5, 10.0, 15.0, 20.0))
#: Training frames the thresholds are tuned on (the first ones; as many as the val frames scored).
TUNE_FRAMES = 30
# CPU: a quarter of the paper's side and channels, so that a thousand iterations fit in minutes; Adam, whose step
# needs no lr tuned to the size; GoogLeNet's crops cut at the paper's 340x680, like its test-time crops.
CPU = dict(device="cpu", size=(85, 170), slim=4, frames=(100, 30), grid=CPU_GRID,
           segnet=dict(type="Adam", base_lr=1e-3, momentum=0.9, momentum2=0.999, lr_policy="step", stepsize=900,
                       gamma=0.1, batch_size=4, max_iter=1200),
           googlenet=dict(slim=4, size=paper.SIZE, fragments=0, mirror=False, type="Adam", base_lr=1e-3,
                          momentum2=0.999, lr_policy="step", stepsize=900, gamma=0.1, power=None, max_iter=1200))
GPU = dict(device="gpu", size=paper.SIZE, slim=1, frames=(12, 30), grid=None,
           segnet=dict(type="Adam", base_lr=1e-3, momentum=0.9, momentum2=0.999, batch_size=4, max_iter=2000),
           googlenet=dict(slim=1, size=paper.SIZE, fragments=0, mirror=False, max_iter=500))


def cuda_build(variant_text):
    """Whether .venv/.caffe_variant (KEY=value lines written by tools/setup_caffe.sh) names a CUDA build."""
    return any(line.strip() == "CUDA=1" for line in variant_text.splitlines())


def gpu_usable(variant_file=ROOT / ".venv" / ".caffe_variant", caffe=CAFFE):
    """A CUDA build of Caffe whose `caffe device_query -gpu 0` succeeds (a CPU build is never asked)."""
    try:
        if not cuda_build(Path(variant_file).read_text()):
            return False
        return subprocess.run([caffe, "device_query", "-gpu", "0"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def config(gpu, seed=SEED):
    """The demo's configuration: input size, SegNet and GoogLeNet solver settings and widths (slim), the grid of
    decoding thresholds searched on the training frames (given, or tuning_grid.default_grid: around the paper's SegNet
    values scaled to the size), the synthetic set (train, val frames), and where its data, solvers and snapshots go.
    ``seed`` sets every random stream the demo controls: the train LMDB's and the crops' order and both solvers'
    random_seed. A snapshot prefix ends in a digest of its net's settings, so that a changed configuration (or
    seed) trains anew instead of reusing the last one's weights."""
    from models.googlenet import net as googlenet

    c = dict(GPU if gpu else CPU, seed=seed)
    s = c["segnet"]
    c["segnet_solver"] = dict(s, snapshot=s["max_iter"], test_iter=None, display=5, average_loss=5, random_seed=seed)
    data_keys = ("slim", "size", "fragments", "mirror")                  # the crops and the net, not the solver
    g = {k: v for k, v in c["googlenet"].items() if k not in data_keys}  # on the paper's solver, batch 8
    c["googlenet_solver"] = dict(googlenet.SMOKE, **g, snapshot=g["max_iter"], random_seed=seed)
    h, w = c["size"]
    tag = f"demo_{h}x{w}"
    n, n_val = c["frames"]
    grid = c["grid"] or default_grid(c["size"])

    def prefix(model, slim, settings):
        key = digest(json.dumps([tag, n, slim, settings], sort_keys=True).encode())[:8]
        return f"models/{model}/{model}_{tag}{f'_slim{slim}' if slim > 1 else ''}_{key}"

    ch, cw = c["googlenet"]["size"]                                   # where the crops are cut (Classifier.size)
    c.update(data=f"{synthetic.ROOT}_train{n}_val{n_val}", tag=tag, grid=grid, encoded=f"data/lmdb_{tag}_seed{seed}",
             instances=f"data/instances_{tag}_crops{ch}x{cw}_fragments{c['googlenet']['fragments']}_seed{seed}",
             min_pixels=max(1, round(paper.MIN_PIXELS * ch * cw / (paper.SIZE[0] * paper.SIZE[1]))),
             segnet_prefix=prefix("segnet", c["slim"], c["segnet_solver"]),
             googlenet_prefix=prefix("googlenet", c["googlenet"]["slim"],
                                     [c["googlenet_solver"]] + [c["googlenet"][k] for k in data_keys[1:]]))
    return c


def describe(c):
    """One line on the two nets' training in configuration ``c``."""
    def solver(x):
        sched = f" /{1 / x['gamma']:g} at {x['stepsize']}" if x.get("lr_policy") == "step" else ""
        kind = x.get("type", "SGD")
        return f"{x['max_iter']} iterations of batch {x['batch_size']}, {kind} lr {x['base_lr']:g}{sched}"

    return (f"SegNet at {c['size'][0]}x{c['size'][1]}, {solver(c['segnet'])}, 1/{c['slim']} of the channels; GoogLeNet "
            f"(224x224 crops), {solver(c['googlenet_solver'])}, 1/{c['googlenet']['slim']} of the channels")


def step(title, cmd):
    print(f"\n[demo] {title}\n[demo] $ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        sys.exit(f"[demo] FAILED: {title} (exit {rc})")
    print(f"[demo] done in {time.time() - t0:.0f} s", flush=True)


def write_solvers(c, out):
    """The demo's nets and solvers (models/*/net.py) in out/solvers, the deploy nets for tools/evaluate.py --deploy
    and --classifier-deploy; returns {name: path}. A file is rewritten only when its text changes: tools/evaluate.py
    fingerprints the deploy nets, and a new mtime would redo the inference and the export of a re-run."""
    import models
    from models.googlenet import net as googlenet
    from models.segnet import net as segnet

    d = out / "solvers"
    d.mkdir(parents=True, exist_ok=True)
    slim, batch = c["googlenet"]["slim"], c["googlenet_solver"]["batch_size"]
    texts = dict(
        segnet_train=segnet.train(f"{c['encoded']}/train", f"{c['encoded']}/val", batch_size=c["segnet"]["batch_size"],
                                  slim=c["slim"]),
        segnet_deploy=segnet.deploy(slim=c["slim"]),
        segnet=models.solver(str(d / "segnet_train.prototxt"), c["segnet_prefix"], c["segnet_solver"]),
        googlenet_train=googlenet.train(f"{c['instances']}/train", None, batch_size=batch,
                                        mirror=c["googlenet"]["mirror"], slim=slim),
        googlenet_deploy=googlenet.deploy(slim=slim),
        googlenet=models.solver(str(d / "googlenet_train.prototxt"), c["googlenet_prefix"], c["googlenet_solver"]))
    files = {name: d / (f"{name}.prototxt" if "_" in name else f"{name}_solver.prototxt") for name in texts}
    for name, path in files.items():
        if not path.is_file() or path.read_text() != str(texts[name]):
            atomic_write(path, lambda t: t.write_text(str(texts[name])))
    return files


def train(name, solver, prefix, c, out):
    """`caffe train` unless the final snapshot exists: a progress bar, the full log in out/logs; returns the
    weights and the loss curve [(iteration, loss)] (read back from the log when training was skipped)."""
    iters = caffe_log.max_iter(solver)
    weights = ROOT / f"{prefix}_iter_{iters}.caffemodel"
    log = out / "logs" / f"train_{name}.log"
    if not weights.is_file():
        cmd = [CAFFE, "train", "-solver", str(solver)] + (["-gpu", "0"] if c["device"] == "gpu" else [])
        print(f"\n[demo] training {name}: {iters} iterations; full log: {log}\n[demo] $ {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc, curve = caffe_log.train(cmd, log, iters, desc=f"train {name}", cwd=ROOT)
        if rc != 0 or not weights.is_file():
            sys.exit(f"[demo] FAILED: training {name} (exit {rc}); log: {log}")
        print(f"[demo] done in {time.time() - t0:.0f} s", flush=True)
    curve = caffe_log.loss_curve(log.read_text(errors="replace"), final=True)[0] if log.is_file() else []
    return str(weights), curve


def bn_stats(weights, net, c):
    """SegNet's BatchNorm statistics recomputed over the training set (tools/compute_bn_stats.py, caffe-segnet's
    recipe) unless done: the moving averages BVLC's BatchNorm keeps lag behind weights that a short run with a large
    lr still changes quickly, and shift the whole map at test time. Returns the new weights."""
    out = weights.replace(".caffemodel", "_bnstats.caffemodel")
    if not (ROOT / out).is_file():
        step("recomputing SegNet's BatchNorm statistics over the training set",
             [PY, "tools/compute_bn_stats.py", "--weights", weights, "--net", str(net), "--lmdb",
              f"{c['encoded']}/train", "--out", out])
    return out


def other_settings(final, **want):
    """Whether a finished output records other values of ``want`` (its job would refuse to replace it: --force)."""
    record = read_record(final)
    return record is not None and any(record["settings"].get(k) != v for k, v in want.items())


def thresholds(c, deploy, weights, out):
    """The decoding thresholds (DT, VT, ET): SegNet's maps of the training frames (tools/infer.py), c["grid"]
    searched on the first TUNE_FRAMES with ground-truth classes (tools/tune_thresholds.py), each unless up to date."""
    maps, tuned = out / "train_vectors.h5", out / "tune"
    grid = [[float(x) for x in c["grid"][0]], [int(x) for x in c["grid"][1]], [float(x) for x in c["grid"][2]]]
    step("inferring SegNet's maps of the training frames (to pick the decoding thresholds)",
         [PY, "tools/infer.py", "--model", "segnet", "--split", "train", "--encoded", c["encoded"], "--deploy",
          str(deploy), "--weights", weights, "--out", str(maps)]
         + (["--force"] if other_settings(maps, weights=str((ROOT / weights).resolve())) else []))
    step(f"searching the decoding thresholds on {TUNE_FRAMES} training frames",
         [PY, "tools/tune_thresholds.py", "--predictions", str(maps), "--root", c["data"], "--split", "train",
          "--frames", str(TUNE_FRAMES), "--no-confirm", "--out", str(tuned)]
         + [x for name, g in zip(("--dt", "--vt", "--et"), grid) for x in (name, ",".join(f"{v:g}" for v in g))]
         + (["--force"] if other_settings(tuned, grid=grid) else []))
    return parse_thresholds((tuned / "best.txt").read_text().strip())


def prepare_data(c):
    """The synthetic set of configuration ``c``, its encoding at the demo's size and GoogLeNet's instance crops
    (tools/make_synthetic_cityscapes.py, encode_data.py, extract_instances.py; each skips what is up to date)."""
    data = c["data"]
    if not (ROOT / data / ".complete").exists():
        n, n_val = c["frames"]
        step("generating synthetic Cityscapes", [PY, "tools/make_synthetic_cityscapes.py", "--out", data,
                                                 "--train", str(n), "--val", str(n_val)])
    h, w = c["size"]
    step(f"encoding DCME vector maps at {h}x{w}",
         [PY, "tools/encode_data.py", "--root", data, "--out", c["encoded"], "--size", str(h), str(w),
          "--seed", str(c["seed"])])
    ch, cw = c["googlenet"]["size"]
    step(f"extracting instance crops at {ch}x{cw}",
         [PY, "tools/extract_instances.py", "--root", data, "--out", c["instances"], "--size", str(ch), str(cw),
          "--min-pixels", str(c["min_pixels"]), "--seed", str(c["seed"]), "--fragments",
          str(c["googlenet"]["fragments"])])


def append_report(report, c, gpu, curves, tuned, seconds):
    """Add the demo's own sections to ``report`` (report.md): the training of configuration ``c`` with the final
    smoothed losses of ``curves`` ({net: [(iteration, loss)]}) and the ``tuned`` thresholds (DT, VT, ET)."""
    dt, vt, et = tuned
    final = {name: curve[-1][1] if curve else float("nan") for name, curve in curves.items()}
    text = report.read_text()
    text += (f"\n## Training (the demo's configuration)\n\n![training loss](figures/training_loss.png)\n\n"
             f"On {'the GPU' if gpu else 'the CPU'}: {describe(c)}; SegNet's BatchNorm statistics recomputed over the "
             f"training set (solvers in solvers/, logs in logs/). Final smoothed losses: SegNet "
             f"{final['SegNet']:.4g}, GoogLeNet {final['GoogLeNet']:.4g}. Wall time of this run: {seconds:.0f} s.\n"
             f"\n## Decoding thresholds\n\n![AP over DT x VT on training frames](tune/heatmap.png)\n\n"
             f"DT={dt:g}, VT={vt}, ET={et:g}: the best AP of a {' x '.join(str(len(g)) for g in c['grid'])} grid "
             f"on the first {TUNE_FRAMES} training frames (SegNet's maps, ground-truth classes; tools/"
             f"tune_thresholds.py, table in tune/table.md). Frames the net was trained on: its maps there may be "
             f"better than on val (not measured).\n")
    atomic_write(report, lambda t: t.write_text(text))


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="default: out/demo, out/demo_seed<N> for another --seed")
    ap.add_argument("--cpu", action="store_true", help="the CPU configuration even on a CUDA build with a GPU")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="seed of every random stream: data and crop order, fillers, solvers (default %(default)s)")
    return ap


def run(args):
    args.out = args.out or ("out/demo" if args.seed == SEED else f"out/demo_seed{args.seed}")
    out = ROOT / args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gpu = not args.cpu and gpu_usable()
    c = config(gpu, args.seed)
    print(f"[demo] {'GPU' if gpu else 'CPU'} configuration, seed {c['seed']}: {describe(c)}; thresholds tuned on "
          f"the first {TUNE_FRAMES} training frames", flush=True)
    prepare_data(c)
    solvers = write_solvers(c, out)
    segnet, segnet_curve = train("segnet", solvers["segnet"], c["segnet_prefix"], c, out)
    segnet = bn_stats(segnet, solvers["segnet_train"], c)
    googlenet, googlenet_curve = train("googlenet", solvers["googlenet"], c["googlenet_prefix"], c, out)
    curves = {"SegNet": segnet_curve, "GoogLeNet": googlenet_curve}
    caffe_log.plot_loss_curves(curves, out / "figures" / "training_loss.png")
    dt, vt, et = thresholds(c, solvers["segnet_deploy"], segnet, out)
    ch, cw = c["googlenet"]["size"]
    step("infer, decode, classify, export, evaluate (tools/evaluate.py, = make evaluate)",
         [PY, "tools/evaluate.py", "--model", "segnet", "--split", "val", "--root", c["data"], "--encoded",
          c["encoded"], "--out", args.out, "--deploy", str(solvers["segnet_deploy"]), "--weights", segnet,
          "--classifier-deploy", str(solvers["googlenet_deploy"]), "--classifier-weights", googlenet, "--oracle",
          "--classifier-size", str(ch), str(cw), "--force", "--thresholds", f"{dt:g},{vt},{et:g}"])
    append_report(out / "report.md", c, gpu, curves, (dt, vt, et), time.time() - t0)
    rows = json.loads((out / "report.json").read_text())["results"][:2]   # GoogLeNet's, then ground-truth classes
    print(f"\n[demo] finished in {time.time() - t0:.0f} s (seed {c['seed']}).")
    for r in rows:
        lo, hi = r["interval"]["AP"]
        print(f"[demo] {r['name']}: AP {100 * r['AP']:.1f} ({100 * r['interval']['level']:.0f}% interval "
              f"{100 * lo:.1f} to {100 * hi:.1f}, bootstrap over the {r['frames']} val frames)")
    print(f"[demo] report: {out / 'report.md'}; figures: {out / 'figures'} (training loss: figures/training_loss.png)")


def main(argv=None):
    return cli.run_tool("demo", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
