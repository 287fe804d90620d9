"""Caffe's glog output in the project's tools: silenced where a tool loads nets, turned into a progress bar where
the demo trains.

- ``quiet()``: every net Caffe initialises logs hundreds of glog INFO lines (the whole NetParameter, every blob's
  shape) to stderr. The tools call ``quiet()`` before anything imports caffe: glog reads ``GLOG_minloglevel`` once,
  when pycaffe loads it, so set later it has no effect. Level 1 keeps WARNING, ERROR and FATAL lines. A value the
  user set in the environment wins, and child processes inherit it. The user's own ``caffe train`` keeps its INFO
  lines (Caffe's convention); so does the demo's, into a log file (``train``).
- ``parse_train_line`` / ``train``: the iteration, loss and learning rate from ``caffe train``'s log lines, shown
  as a tqdm bar (iteration, loss, ETA) while the full log goes to a file.
"""
import os
import re
import subprocess

#: GLOG_minloglevel of the tools: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
QUIET_LEVEL = "1"
#: A glog INFO line: "I1126 14:07:57.647056 19225 solver.cpp:239] ..." (some glog versions print the year too).
INFO_LINE = re.compile(r"^I\d{4}(\d{4})? \d\d:\d\d:\d\d\.\d+ +\d+ [^ \]]+:\d+\] ")

_LOSS = re.compile(r"\] Iteration (\d+)(?: \([^)]*\))?, loss = ([-+0-9.eEinfa]+)")
_LR = re.compile(r"\] Iteration (\d+), lr = ([-+0-9.eE]+)")
_DONE = re.compile(r"\] Optimization Done\.")


def quiet():
    """Silence Caffe's glog INFO lines in this process and its children (unless GLOG_minloglevel is already set).
    Call it before caffe (or a module importing caffe, e.g. ``models``) is imported. Returns the level in force."""
    return os.environ.setdefault("GLOG_minloglevel", QUIET_LEVEL)


def parse_train_line(line):
    """What one line of ``caffe train``'s log says about progress: ``("loss", iteration, loss)`` for the solver's
    display line ("Iteration 20 (1.2 iter/s, 16.6s/20 iters), loss = 1.23", and "Iteration 300, loss = 1.2"
    after the last iteration; the loss is smoothed over the solver's ``average_loss``), ``("lr", iteration, lr)``
    for "Iteration 20, lr = 0.001", ``("done", None, None)`` for "Optimization Done.", else None."""
    m = _LOSS.search(line)
    if m:
        return "loss", int(m.group(1)), float(m.group(2))
    m = _LR.search(line)
    if m:
        return "lr", int(m.group(1)), float(m.group(2))
    if _DONE.search(line):
        return "done", None, None
    return None


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
