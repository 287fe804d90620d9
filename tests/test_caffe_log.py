"""dcme_layers.net.caffe_log: the demo's progress parser and the loss curve on real `caffe train` log lines, the
glog INFO pattern, the tools' quiet glog, and the progress of a real `caffe train` run."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import ENCODED_SIZE

helpers.import_caffe()

import models  # noqa: E402
from dcme_layers.net import caffe_log  # noqa: E402
from dcme_layers.net.caffe_log import INFO_LINE, loss_curve, parse_train_line, plot_loss_curves  # noqa: E402
from models.segnet import net as segnet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Verbatim lines of real `caffe train` runs of this project's Caffe (SegNet smoke solver, GoogLeNet smoke solver,
# SegNet with Adam at 85x170), glog prefix included.
SEGNET = """\
I20261126 14:07:57.647056 19225 solver.cpp:239] Iteration 0 (0.00106988 iter/s, 33.532s/1 iters), loss = 2.9133e+07
I20261126 14:07:57.647310 19225 sgd_solver.cpp:112] Iteration 0, lr = 2e-08
I20261126 14:08:17.688045 19225 solver.cpp:239] Iteration 1 (0.0499002 iter/s, 20.04s/1 iters), loss = 9.3824e+07
I20261126 14:44:58.831758 29281 solver.cpp:239] Iteration 10 (0.190078 iter/s, 52.61s/10 iters), loss = 458177
I20261126 14:44:58.831845 29281 solver.cpp:258]     Train net output #0: loss = 499769 (* 1 = 499769 loss)
I20261126 14:44:58.831854 29281 sgd_solver.cpp:112] Iteration 10, lr = 0.001
I20261126 14:44:59.173491 29283 data_layer.cpp:73] Restarting data prefetching from start.
I20261126 14:46:25.403056 30393 solver.cpp:327] Iteration 3, loss = 56905.9
I20261126 14:46:25.403121 30393 solver.cpp:332] Optimization Done.
"""
GOOGLENET = """\
I20261126 14:10:59.751827 19735 solver.cpp:239] Iteration 5 (0.422761 iter/s, 11.827s/5 iters), loss = 3.68641
I20261126 14:10:59.752161 19735 solver.cpp:258]     Train net output #0: loss1/loss1 = 3.78201 (* 0.3 = 1.1346 loss)
I20261126 14:10:47.923849 19735 sgd_solver.cpp:112] Iteration 0, lr = 0.001
"""


def test_parser_reads_iteration_loss_and_lr_of_real_lines():
    got = [parse_train_line(line) for line in SEGNET.splitlines()]
    assert got == [("loss", 0, 2.9133e7), ("lr", 0, 2e-8), ("loss", 1, 9.3824e7), ("loss", 10, 458177.0), None,
                   ("lr", 10, 1e-3), None, ("loss", 3, 56905.9), ("done", None, None)]
    got = [parse_train_line(line) for line in GOOGLENET.splitlines()]
    assert got == [("loss", 5, 3.68641), None, ("lr", 0, 1e-3)]


def test_parser_ignores_other_lines_and_sees_the_end():
    assert parse_train_line("I20261126 14:12:01.000000 19735 solver.cpp:464] Snapshotting to binary proto file "
                            "models/segnet/segnet_smoke_iter_8.caffemodel") is None
    assert parse_train_line("I20261126 14:12:02.000000 19735 solver.cpp:327] Optimization Done.") == \
        ("done", None, None)
    assert parse_train_line("") is None
    assert parse_train_line("Iteration 3 of something else, lr = high") is None


def test_info_pattern_matches_glog_info_lines_only():
    for line in (SEGNET + GOOGLENET).splitlines():
        assert INFO_LINE.match(line), line
    assert INFO_LINE.match("I1126 14:07:23.530210 19225 caffe.cpp:197] Use CPU.")   # glog without the year
    assert not INFO_LINE.match("W1126 14:07:23.530210 19225 net.cpp:10] a warning")
    assert not INFO_LINE.match("infer segnet: 100%|##########| 2/2 [00:01<00:00,  1.9frame/s]")


@pytest.mark.slow
def test_tools_load_nets_without_glog_info_lines(encoded, weights, tmp_path):
    """tools/infer.py initialises SegNet (hundreds of glog INFO lines by default) and prints none of them; with
    GLOG_minloglevel=0 set by the user the same run prints them (so the pattern does match Caffe's lines)."""
    cmd = [sys.executable, "tools/infer.py", "--model", "segnet", "--split", "val", "--encoded", str(encoded),
           "--weights", str(weights[0])]
    run = subprocess.run(cmd + ["--out", str(tmp_path / "a.h5")], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=helpers.clean_env())
    assert run.returncode == 0, run.stderr[-2000:]
    info = [line for line in run.stderr.splitlines() if INFO_LINE.match(line)]
    assert not info, info[:3]
    assert (tmp_path / "a.h5").is_file()
    run = subprocess.run(cmd + ["--out", str(tmp_path / "b.h5")], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=helpers.clean_env(GLOG_minloglevel="0"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert sum(bool(INFO_LINE.match(line)) for line in run.stderr.splitlines()) > 100


@pytest.mark.slow
def test_demo_training_progress_from_real_caffe_train(encoded, tmp_path):
    """caffe_log.train runs the real `caffe train` binary: the full glog log lands in the file, the loss curve is
    parsed from it (one point per display line), and nothing of it reaches the terminal but the bar."""
    train = tmp_path / "train.prototxt"
    train.write_text(str(segnet.train(f"{encoded}/train", f"{encoded}/val", batch_size=1)))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(models.solver(str(train), str(tmp_path / "segnet"), dict(
        segnet.SMOKE, max_iter=3, snapshot=3, test_iter=None, display=1, average_loss=1,
        base_lr=segnet.SMOKE["base_lr"] * (340 * 680) / (ENCODED_SIZE[0] * ENCODED_SIZE[1]))))
    assert caffe_log.max_iter(solver) == 3
    log = tmp_path / "train.log"
    rc, curve = caffe_log.train([str(helpers.caffe_binary()), "train", "-solver", str(solver)], log, 3,
                                progress=False, cwd=REPO)
    assert rc == 0
    assert [it for it, _ in curve] == [0, 1, 2, 3]   # display 1; Caffe prints the last loss after the loop too
    assert all(np.isfinite(loss) and loss > 0 for _, loss in curve)
    text = log.read_text()
    assert "Optimization Done." in text and sum(bool(INFO_LINE.match(line)) for line in text.splitlines()) > 100
    assert (tmp_path / "segnet_iter_3.caffemodel").is_file()


def test_loss_curve_reads_the_display_lines_and_the_rate():
    curve, rate = loss_curve(SEGNET)
    assert curve == [(0, 2.9133e7), (1, 9.3824e7), (10, 458177.0)]   # not "Iteration 3, loss" after the last one
    assert rate == round(10 / (36 * 60 + 58.831758 - 57.647056), 3)  # iterations 0 to 10 by their timestamps
    curve, rate = loss_curve(SEGNET, final=True)
    assert curve[-1] == (3, 56905.9) and len(curve) == 4 and rate == loss_curve(SEGNET)[1]
    assert loss_curve(GOOGLENET) == ([(5, 3.68641)], None)            # one display line: no rate
    assert loss_curve("") == ([], None)


def test_loss_curve_rate_across_midnight():
    text = ("I1126 23:59:59.500000 7 solver.cpp:239] Iteration 0 (0 iter/s, 1s/1 iters), loss = 4\n"
            "I1127 00:00:01.500000 7 solver.cpp:239] Iteration 4 (2 iter/s, 2s/4 iters), loss = 2\n")
    assert loss_curve(text) == ([(0, 4.0), (4, 2.0)], 2.0)


def test_loss_figure_has_a_panel_per_net(tmp_path):
    import cv2

    path = tmp_path / "figures" / "training_loss.png"
    plot_loss_curves({"SegNet": loss_curve(SEGNET, final=True)[0], "GoogLeNet": []}, path)
    image = cv2.imread(str(path))
    assert image.shape[1] == 2 * 600 and not list(tmp_path.glob("figures/.*"))   # 6 inches a panel at 100 dpi
