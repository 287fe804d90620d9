#!/usr/bin/env python
"""`make demo`: the whole DCME pipeline on the embedded synthetic Cityscapes, in a configuration that learns within
minutes on 2 CPU cores (on a CUDA build with a working GPU: at the paper's 340x680). README, "The demo", gives its
choices with their measurements.

1. generate the synthetic set (tools/make_synthetic_cityscapes.py)   -> data/cityscapes_synthetic_train<N>_val<M>
2. encode it at the demo's size, the train LMDB in the seed's order (tools/encode_data.py --size H W --seed)
                                                                       -> data/lmdb_demo_<H>x<W>_seed<S>
3. extract the ground-truth instance crops at GoogLeNet's size (tools/extract_instances.py --size --seed)
                                                                       -> data/instances_demo_<H>x<W>_crops..._seed<S>
4. train SegNet and GoogLeNet (on the CPU slim ones: a quarter of the channels; `caffe train` with the demo
   solvers written to --out/solvers; progress bar, full log in --out/logs), then recompute SegNet's BatchNorm
   statistics (tools/compute_bn_stats.py)
                          -> models/*/*_demo_<H>x<W>[_slim4]_<settings digest>_iter_N[_bnstats].caffemodel
5. pick the decoding thresholds: SegNet's maps of the first training frames (tools/infer.py), a grid of (DT, VT, ET)
   scored on them with ground-truth classes (tools/tune_thresholds.py)
                                                 -> --out/train_vectors.h5, --out/tune/ (best.txt, heatmap.png)
6. infer, decode, classify, export and score (tools/evaluate.py with the demo's own deploy nets, --oracle): the
   DCME row with GoogLeNet's classes and with ground-truth classes, each with its 90% bootstrap interval over the
   val frames, the classifier's confusion matrix, figures of 4 val frames, the oracle rows and the loss curves.
Everything lands in --out (default out/demo, out/demo_seed<S> for another --seed): report.md / report.json,
figures/, logs/. Steps already done are skipped, so a second run only re-scores (inference and export with
--force: out/demo is the demo's own, and its weights change whenever its configuration does). The paper's own
configuration stays `caffe train -solver prototxt/segnet_solver.prototxt` (340x680, SGD lr 1e-8, batch 15).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dcme_layers.net.caffe_log import quiet

quiet()  # before anything imports caffe: no glog INFO lines from the nets

from dcme_layers.core import paper
from dcme_layers.core.decoding import parse_thresholds
from dcme_layers.data import synthetic
from dcme_layers.net import caffe_log
from dcme_layers.pipeline.tuning import default_grid
from dcme_layers.util.files import atomic_write
from dcme_layers.util.resumable import digest, read_record

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CAFFE = str(ROOT / ".venv" / "bin" / "caffe")
DATA = synthetic.ROOT

# CPU: SegNet at a quarter of the paper's side (85x170) and a quarter of its channels, so that a thousand
# iterations fit in minutes; 100 training frames, since a net memorises the default set's 12. Adam scales each step
# by the gradient's RMS, so the sum-over-pixels EuclideanLoss needs no lr tuned to the size. The thresholds' grid
# runs from the paper's SegNet setting scaled to 85x170 up to about its unscaled values: this net's vectors are a
# few pixels off. GoogLeNet: a quarter of the channels, from scratch (no ImageNet weights offline), on crops cut at
# the paper's 340x680 like its test-time crops (Classifier.size), long enough to learn the minority classes.
#: The default --seed.
SEED = 1
#: The CPU configuration's (DT, VT, ET) values: from the paper's scaled to 85x170 (2.5, 3, 3.75) to about its unscaled.
CPU_GRID = ((2.5, 5.0, 7.5, 10.0, 14.0), (3, 10, 20, 40, 80), (3.75, 7.5, 10.0, 15.0, 20.0))
#: Training frames the thresholds are tuned on (the first ones; as many as the val frames scored).
TUNE_FRAMES = 30
CPU = dict(device="cpu", size=(85, 170), slim=4, frames=(100, 30), grid=CPU_GRID,
           segnet=dict(type="Adam", base_lr=1e-3, momentum=0.9, momentum2=0.999, lr_policy="step", stepsize=900,
                       gamma=0.1, batch_size=4, max_iter=1200),
           googlenet=dict(slim=4, size=paper.SIZE, fragments=0, mirror=False, type="Adam", base_lr=1e-3,
                          momentum2=0.999, lr_policy="step", stepsize=900, gamma=0.1, power=None, max_iter=1200))
GPU = dict(device="gpu", size=(340, 680), slim=1, frames=(12, 30), grid=None,
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
    decoding thresholds searched on the training frames (given, or tuning.default_grid: around the paper's SegNet
    values scaled to the size), the synthetic set (train, val frames),
    and where its data, solvers and snapshots go. ``seed`` sets every random stream the demo controls: the train
    LMDB's order (encode_data --seed), the crops' order (extract_instances --seed) and both solvers' random_seed
    (fillers, dropout). A snapshot prefix ends in a digest of its net's settings, so that a changed
    configuration (or seed) trains anew instead of reusing the last one's weights."""
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
    c.update(data=f"{DATA}_train{n}_val{n_val}", tag=tag, grid=grid, encoded=f"data/lmdb_{tag}_seed{seed}",
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
        return (f"{x['max_iter']} iterations of batch {x['batch_size']}, {x.get('type', 'SGD')} lr "
                f"{x['base_lr']:g}{sched}")

    h, w = c["size"]
    return (f"SegNet at {h}x{w}, {solver(c['segnet'])}, 1/{c['slim']} of the channels; GoogLeNet (224x224 crops), "
            f"{solver(c['googlenet_solver'])}, 1/{c['googlenet']['slim']} of the channels")


def step(title, cmd):
    print(f"\n[demo] {title}\n[demo] $ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        sys.exit(f"[demo] FAILED: {title} (exit {rc})")
    print(f"[demo] done in {time.time() - t0:.0f} s", flush=True)


def write_if_changed(path, text):
    """Write a deploy net unless it already holds ``text``: tools/evaluate.py fingerprints it (a new mtime would
    redo the inference and the export of a re-run)."""
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, lambda t: t.write_text(text))


def write_solvers(c, out):
    """The demo's train nets and solvers (generated with models/*/net.py) in out/solvers; returns their paths."""
    import models
    from models.googlenet import net as googlenet
    from models.segnet import net as segnet

    d = out / "solvers"
    d.mkdir(parents=True, exist_ok=True)
    s = c["segnet"]
    files = {}
    net = files["segnet_train"] = d / "segnet_train.prototxt"
    atomic_write(net, lambda t: t.write_text(str(segnet.train(f"{c['encoded']}/train", f"{c['encoded']}/val",
                                                              batch_size=s["batch_size"], slim=c["slim"]))))
    files["segnet_deploy"] = d / "segnet_deploy.prototxt"  # the same SegNet variant, for tools/evaluate.py --deploy
    write_if_changed(files["segnet_deploy"], str(segnet.deploy(slim=c["slim"])))
    files["segnet"] = d / "segnet_solver.prototxt"
    atomic_write(files["segnet"], lambda t: t.write_text(
        models.solver(str(net), c["segnet_prefix"], c["segnet_solver"])))
    slim, batch = c["googlenet"]["slim"], c["googlenet_solver"]["batch_size"]
    net = files["googlenet_train"] = d / "googlenet_train.prototxt"
    atomic_write(net, lambda t: t.write_text(str(googlenet.train(f"{c['instances']}/train", None, batch_size=batch,
                                                                     mirror=c["googlenet"]["mirror"], slim=slim))))
    files["googlenet_deploy"] = d / "googlenet_deploy.prototxt"         # for tools/evaluate.py --classifier-deploy
    write_if_changed(files["googlenet_deploy"], str(googlenet.deploy(slim=slim)))
    files["googlenet"] = d / "googlenet_solver.prototxt"
    atomic_write(files["googlenet"], lambda t: t.write_text(
        models.solver(str(net), c["googlenet_prefix"], c["googlenet_solver"])))
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
    curve = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            got = caffe_log.parse_train_line(line)
            if got and got[0] == "loss":
                curve.append(got[1:])
    return str(weights), curve


def bn_stats(weights, net, c):
    """SegNet's BatchNorm statistics recomputed over the training set (tools/compute_bn_stats.py, caffe-segnet's
    recipe) unless done: the moving averages BVLC's BatchNorm keeps (a window of ~1000 iterations) lag behind
    weights that a short run with a large lr still changes quickly, and at test time they shift the whole map
    (measured: background |V| ~3 px everywhere after 750 iterations). Returns the new weights."""
    out = weights.replace(".caffemodel", "_bnstats.caffemodel")
    if not (ROOT / out).is_file():
        step("recomputing SegNet's BatchNorm statistics over the training set",
             [PY, "tools/compute_bn_stats.py", "--weights", weights, "--net", str(net), "--lmdb",
              f"{c['encoded']}/train", "--out", out])
    return out


def other_settings(final, **want):
    """Whether a finished output records other values of the settings ``want`` (its job would refuse to replace
    it without --force)."""
    record = read_record(final)
    return record is not None and any(record["settings"].get(k) != v for k, v in want.items())


def thresholds(c, deploy, weights, out):
    """The decoding thresholds (DT, VT, ET): SegNet's maps of the training frames (tools/infer.py), the grid
    c["grid"] searched on the first TUNE_FRAMES with ground-truth classes (tools/tune_thresholds.py; no full-resolution
    pass: the val scoring follows). Both steps are skipped when up to date."""
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


def plot_losses(curves, path):
    """One panel per net: the smoothed training loss over the iterations (log scale), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 3.6))
    for ax, (name, curve) in zip(list(axes) if len(curves) > 1 else [axes], curves.items()):
        if curve:
            it, loss = zip(*curve)
            ax.plot(it, loss, marker=".")
        else:  # trained by an earlier run whose log is gone
            ax.text(0.5, 0.5, "no training log in logs/", ha="center", va="center", transform=ax.transAxes)
        ax.set_yscale("log")
        ax.set(title=f"{name} training loss", xlabel="iteration", ylabel="loss")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda t: fig.savefig(t, dpi=100, format="png"))
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="default: out/demo, out/demo_seed<N> for another --seed")
    ap.add_argument("--cpu", action="store_true", help="the CPU configuration even on a CUDA build with a GPU")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="seed of every random stream: data and crop order, fillers, solvers (default %(default)s)")
    args = ap.parse_args()
    args.out = args.out or ("out/demo" if args.seed == SEED else f"out/demo_seed{args.seed}")
    out = ROOT / args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gpu = not args.cpu and gpu_usable()
    c = config(gpu, args.seed)
    h, w = c["size"]
    print(f"[demo] {'GPU' if gpu else 'CPU'} configuration, seed {c['seed']}: {describe(c)}; thresholds tuned on "
          f"the first {TUNE_FRAMES} training frames", flush=True)
    data = c["data"]
    if not (ROOT / data / ".complete").exists():
        n, n_val = c["frames"]
        step("generating synthetic Cityscapes", [PY, "tools/make_synthetic_cityscapes.py", "--out", data,
                                                 "--train", str(n), "--val", str(n_val)])
    step(f"encoding DCME vector maps at {h}x{w}",
         [PY, "tools/encode_data.py", "--root", data, "--out", c["encoded"], "--size", str(h), str(w),
          "--seed", str(c["seed"])])
    ch, cw = c["googlenet"]["size"]
    step(f"extracting instance crops at {ch}x{cw}",
         [PY, "tools/extract_instances.py", "--root", data, "--out", c["instances"], "--size", str(ch), str(cw),
          "--min-pixels", str(c["min_pixels"]), "--seed", str(c["seed"]), "--fragments",
          str(c["googlenet"]["fragments"])])
    solvers = write_solvers(c, out)
    segnet, segnet_curve = train("segnet", solvers["segnet"], c["segnet_prefix"], c, out)
    segnet = bn_stats(segnet, solvers["segnet_train"], c)
    googlenet, googlenet_curve = train("googlenet", solvers["googlenet"], c["googlenet_prefix"], c, out)
    plot_losses({"SegNet": segnet_curve, "GoogLeNet": googlenet_curve}, out / "figures" / "training_loss.png")
    dt, vt, et = thresholds(c, solvers["segnet_deploy"], segnet, out)
    step("infer, decode, classify, export, evaluate (tools/evaluate.py, = make evaluate)",
         [PY, "tools/evaluate.py", "--model", "segnet", "--split", "val", "--root", data, "--encoded", c["encoded"],
          "--out", args.out, "--deploy", str(solvers["segnet_deploy"]), "--weights", segnet,
          "--classifier-deploy", str(solvers["googlenet_deploy"]), "--classifier-weights", googlenet, "--oracle",
          "--classifier-size", str(ch), str(cw),
          "--force", "--thresholds", f"{dt:g},{vt},{et:g}"])
    report = out / "report.md"
    text = report.read_text()
    text += (f"\n## Training (the demo's configuration)\n\n![training loss](figures/training_loss.png)\n\n"
             f"On {'the GPU' if gpu else 'the CPU'}: {describe(c)}; SegNet's BatchNorm statistics recomputed over the "
             f"training set (solvers in solvers/, logs in logs/). Final smoothed losses: SegNet "
             f"{segnet_curve[-1][1] if segnet_curve else float('nan'):.4g}, GoogLeNet "
             f"{googlenet_curve[-1][1] if googlenet_curve else float('nan'):.4g}. Wall time of this run: "
             f"{time.time() - t0:.0f} s.\n"
             f"\n## Decoding thresholds\n\n![AP over DT x VT on training frames](tune/heatmap.png)\n\n"
             f"DT={dt:g}, VT={vt}, ET={et:g}: the best AP of a {' x '.join(str(len(g)) for g in c['grid'])} grid "
             f"on the first {TUNE_FRAMES} training frames (SegNet's maps, ground-truth classes; tools/"
             f"tune_thresholds.py, table in tune/table.md). Frames the net was trained on: its maps there may be "
             f"better than on val (not measured).\n")
    atomic_write(report, lambda t: t.write_text(text))
    rows = json.loads((out / "report.json").read_text())["results"][:2]   # GoogLeNet's, then ground-truth classes
    print(f"\n[demo] finished in {time.time() - t0:.0f} s (seed {c['seed']}).")
    for r in rows:
        lo, hi = r["interval"]["AP"]
        print(f"[demo] {r['name']}: AP {100 * r['AP']:.1f} ({100 * r['interval']['level']:.0f}% interval "
              f"{100 * lo:.1f} to {100 * hi:.1f}, bootstrap over the {r['frames']} val frames)")
    print(f"[demo] report: {report}; figures: {out / 'figures'} (training loss: figures/training_loss.png)")


if __name__ == "__main__":
    main()
