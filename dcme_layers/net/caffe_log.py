"""What Caffe's glog output says, for the tools: the training progress of ``caffe train`` (a progress bar where the
demo trains, its loss curve and a figure of it) and the layer times of ``caffe time``. The tools keep glog's INFO
lines off the terminal (dcme_layers.util.cli.quiet); the ``caffe train`` runs here write them to a log file.

Standard library only at import (tqdm, matplotlib and caffe inside the functions that need them):
tools/gpu_check.py reads logs with it on a GPU machine's bare python3.
"""
import os
import re
import subprocess

__all__ = ["INFO_LINE", "loss_curve", "max_iter", "parse_time", "parse_train_line", "plot_loss_curves", "train"]

#: A glog INFO line: "I1126 14:07:57.647056 19225 solver.cpp:239] ..." (some glog versions print the year too).
INFO_LINE = re.compile(r"^I\d{4}(\d{4})? (\d\d):(\d\d):(\d\d\.\d+) +\d+ [^ \]]+:\d+\] ")

# The solver's display line: "Iteration 20 (1.2 iter/s, 16.6s/20 iters), loss = 1.23" while training, and
# "Iteration 300, loss = 1.2" (no rate) after the last iteration.
_LOSS = re.compile(r"\] Iteration (\d+)( \([^)]*\))?, loss = ([-+0-9.eEinfa]+)")
_LR = re.compile(r"\] Iteration (\d+), lr = ([-+0-9.eE]+)")
_DONE = re.compile(r"\] Optimization Done\.")


def parse_train_line(line):
    """What one line of ``caffe train``'s log says about progress: ``("loss", iteration, loss)`` for the solver's
    display line ("Iteration 20 (1.2 iter/s, 16.6s/20 iters), loss = 1.23", and "Iteration 300, loss = 1.2"
    after the last iteration; the loss is smoothed over the solver's ``average_loss``), ``("lr", iteration, lr)``
    for "Iteration 20, lr = 0.001", ``("done", None, None)`` for "Optimization Done.", else None."""
    m = _LOSS.search(line)
    if m:
        return "loss", int(m.group(1)), float(m.group(3))
    m = _LR.search(line)
    if m:
        return "lr", int(m.group(1)), float(m.group(2))
    if _DONE.search(line):
        return "done", None, None
    return None


def loss_curve(text, final=False):
    """The training loss in a ``caffe train`` log ``text`` (glog lines): ([(iteration, loss)] of the solver's
    display lines while training, with ``final`` also the one after the last iteration (it has no rate);
    iterations per second between the first and the last of those while training by their glog timestamps, None
    with fewer than two)."""
    curve, timed = [], []  # timed: (iteration, seconds of the day) of the display lines while training
    for line in text.splitlines():
        m = _LOSS.search(line)
        if m and (final or m.group(2)):
            curve.append((int(m.group(1)), float(m.group(3))))
        t = INFO_LINE.match(line)
        if m and m.group(2) and t:
            timed.append((int(m.group(1)), int(t.group(2)) * 3600 + int(t.group(3)) * 60 + float(t.group(4))))
    if len(timed) < 2:
        return curve, None
    (it0, s0), (it1, s1) = timed[0], timed[-1]
    dt = (s1 - s0) % 86400  # past midnight
    return curve, round((it1 - it0) / dt, 3) if dt > 0 else None


def parse_time(text, input_layer="data"):
    """``caffe time`` output -> {total_ms, forward_backward_ms, layers: {name: ms}}, or {} when absent.

    ``total_ms`` is Caffe's "Average Forward-Backward"; ``forward_backward_ms`` leaves out the forward pass of
    ``input_layer``: DummyData draws its gaussian input on the CPU and copies it to the GPU on every pass, work that
    a training step on a prefetched LMDB batch does not do."""
    m = re.search(r"Average Forward-Backward: ([\d.]+) ms", text)
    if not m:
        return {}
    layers = {}
    for name, ms in re.findall(r"\]\s+(\S+)\s+(?:forward|backward): ([-+.\deE]+) ms", text):
        layers[name] = layers.get(name, 0.0) + float(ms)
    total = float(m.group(1))
    return dict(total_ms=total, forward_backward_ms=round(total - layers.get(input_layer, 0.0), 3), layers=layers)


def max_iter(solver):
    """``max_iter`` of a solver prototxt."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    s = caffe_pb2.SolverParameter()
    with open(solver) as f:
        text_format.Parse(f.read(), s)
    return int(s.max_iter)


def train(cmd, log, total, desc="train", cwd=None, progress=True):
    """Run a ``caffe train`` command line with its full log (glog INFO included) written to ``log``, showing a tqdm
    bar over ``total`` iterations with the latest loss and the ETA. Returns (exit code, [(iteration, loss)])."""
    from tqdm import tqdm

    env = dict(os.environ, GLOG_minloglevel="0")   # the INFO lines carry the progress; they go to the file only
    curve = []
    with open(log, "w") as f, tqdm(total=total, desc=desc, unit="iter", disable=not progress) as bar:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        for line in proc.stdout:
            f.write(line)
            got = parse_train_line(line)
            if got is None or got[0] == "done":
                continue
            kind, it, value = got
            if kind == "loss":
                curve.append((it, value))
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            bar.update(min(it, total) - bar.n)
            f.flush()
        rc = proc.wait()
    return rc, curve


def plot_loss_curves(curves, path):
    """A PNG at ``path`` of one panel per net of ``curves`` ({title: [(iteration, loss)]}, see ``loss_curve``): the
    smoothed training loss over the iterations (log scale), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dcme_layers.util.files import atomic_write

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
