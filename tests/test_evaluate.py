"""dcme_layers.pipeline.evaluate and tools/evaluate.py (`make evaluate`): a short end-to-end run, ground-truth maps
through the same path scored exactly as the oracle, a killed export resumed, bad and foreign blob files, vector maps
from a --predictions file, the confusion matrix."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

import helpers
from helpers import ENCODED_SIZE

caffe = helpers.import_caffe()

import models  # noqa: E402
from dcme_layers.data import cityscapes, lmdb_io
from dcme_layers.data.lmdb_io import encode_dataset
from dcme_layers.evaluation import cs_eval, visualize
from dcme_layers.net import inference
from dcme_layers.pipeline.evaluate import ground_truth_size
from dcme_layers.util import errors
from models.segnet import net as segnet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_evaluate(tiny_cityscapes, encoded, weights, out, *extra):
    cmd = [sys.executable, "tools/evaluate.py", "--model", "segnet", "--split", "val", "--root", str(tiny_cityscapes),
           "--encoded", str(encoded), "--out", str(out), "--weights", str(weights[0]),
           "--classifier-weights", str(weights[1]), "--thresholds", "2,4,3", "--workers", "1", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_end_to_end_report_has_all_four_metrics(tiny_cityscapes, encoded, weights, tmp_path):
    run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / "eval", "--oracle", "--figures", "1",
                       "--bootstrap", "7")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    rows = report["results"]
    assert [r["name"].split(",")[0] for r in rows] == [
        "DCME segnet (GoogLeNet classes)", "DCME segnet (ground-truth classes)",
        f"GT at {ENCODED_SIZE[0]}x{ENCODED_SIZE[1]}", f"GT at {ENCODED_SIZE[0]}x{ENCODED_SIZE[1]}"]
    for row in rows:  # the tiny set has disparity and camera files: every metric is a number
        for metric in ("AP", "AP50%", "AP100m", "AP50m"):
            assert isinstance(row[metric], float) and 0.0 <= row[metric] <= 1.0, (row["name"], metric)
        lo, hi = row["interval"]["AP"]
        assert lo <= hi and row["interval"]["resamples"] == 7
    assert rows[2]["AP"] > rows[1]["AP"]   # undecoded ground truth beats a 4-iteration SegNet
    md = (tmp_path / "eval" / "report.md").read_text()
    assert all(m in md for m in ("AP50%", "AP100m", "AP50m"))
    timing = re.search(r"Time per frame with GoogLeNet classes \(2 frames exported in this run\): decode (\d+) ms, "
                       r"classify (\d+) ms, export (\d+) ms \(and (\d+) ms reading the ground truth for the "
                       r"confusion matrix\)\.", md)
    assert timing and int(timing[2]) > 0      # GoogLeNet's forward passes take milliseconds on any CPU
    confusion = np.array(rows[0]["confusion"]["counts"])
    assert confusion.shape == (9, 8) and "## GoogLeNet's classes of the decoded instances" in md
    with h5py.File(tmp_path / "eval" / "pred_vectors.h5", "r") as f:
        assert f["vectors"].shape == (2, 2) + ENCODED_SIZE and np.isfinite(f["vectors"][...]).all()
    figures = list((tmp_path / "eval" / "figures").glob("*.png"))
    assert len(figures) == 1 and f"(figures/{figures[0].name})" in md
    assert cv2.imread(str(figures[0])).shape[1] == 2 * visualize.FIGURE_WIDTH + 4
    assert len(list((tmp_path / "eval").glob("pred-*/*_pred.txt"))) == 4   # GoogLeNet's and ground-truth classes

    # Rerunning into the same --out with other weights must not reuse the old blobs or predictions.
    other = tmp_path / "other.caffemodel"
    other.write_bytes(Path(weights[0]).read_bytes())
    run = run_evaluate(tiny_cityscapes, encoded, (other, weights[1]), tmp_path / "eval")
    assert run.returncode != 0 and "pred_vectors.h5: exists with other settings (weights:" in run.stderr, \
        run.stderr[-2000:]
    assert run.stderr.splitlines()[-1].startswith("evaluate: ") and "--force" in run.stderr.splitlines()[-1]


def test_ground_truth_size_from_the_header_and_one_line_for_bad_files(tiny_cityscapes, tmp_path):
    frame = cityscapes.list_frames(tiny_cityscapes, "val")[0]
    assert ground_truth_size(frame) == cityscapes.read_instance_ids(frame.instance_ids).shape
    junk = tmp_path / "junk_gtFine_instanceIds.png"
    junk.write_bytes(b"not a png")
    for path, says in ((junk, "cannot decode instanceIds PNG"), (tmp_path / "gone.png", "no such instanceIds file")):
        with pytest.raises(errors.DataError, match=f"^{path}: {says}"):
            ground_truth_size(frame._replace(instance_ids=str(path)))


@pytest.mark.slow
def test_nan_blob_foreign_and_truncated_blob_files(tiny_cityscapes, encoded, weights, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "pred_vectors.h5").write_bytes(b"somebody else's file")  # not written by tools/infer.py: never trusted
    run = run_evaluate(tiny_cityscapes, encoded, weights, out)
    assert run.returncode != 0
    assert run.stderr.splitlines()[-1] == (f"evaluate: {out / 'pred_vectors.h5'}: exists but has no "
                                           "pred_vectors.h5.job.json (not a blob file written by this version); "
                                           "use --force to replace it or choose another --out")

    blobs = inference.infer_split(REPO / "prototxt/segnet_deploy.prototxt", weights[0], encoded / "val",
                                  tmp_path / "real" / "pred_vectors.h5", "segnet", log=lambda *_: None)
    with h5py.File(tmp_path / "nan.h5", "w") as f:  # a diverged net's output is named, frame and file
        f["vectors"] = np.full((1, 2) + ENCODED_SIZE, np.nan, np.float32)
        f["frames"] = np.array(["synthval_000000_000019"], dtype=h5py.string_dtype())
        with pytest.raises(errors.InferenceError, match=r"nan.h5: frame 0 .*synthval_000000_000019.* NaN"):
            inference.read_blob(f, 0, tmp_path / "nan.h5")

    with open(blobs, "r+b") as f:  # truncated after the run: redone, not trusted
        f.truncate(blobs.stat().st_size // 2)
    run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / "real")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(truncated or replaced); redoing" in run.stdout
    with h5py.File(blobs, "r") as f:
        assert np.isfinite(f["vectors"][...]).all()


# --- exact end to end: ground-truth maps through the path `make evaluate` takes --------------------------------

GT_SIZE = (85, 170)                 # the tiny set's 256x512 at a third, as 1024x2048 -> 340x680
GT_THRESHOLDS = (2.5, 3, 3.75)      # the SegNet thresholds scaled to GT_SIZE
GT_CONFIG = "dt2.5-vt3-et3.75-vote"            # evaluate's prediction folders: pred-{GT_CONFIG}-<classes>
ORACLE_CONFIG = "cm-vote-dt2.5-vt3-et3.75-85x170-nearest"     # tools/oracle.py's CM/vote folder


@pytest.fixture(scope="module")
def gt_blobs(tiny_cityscapes, weights, tmp_path_factory):
    """(encoded folder, blob folder, frame names, maps): the blob folder holds pred_vectors.h5 as tools/infer.py
    writes it (a real inference of the tiny val set at GT_SIZE, with its job record) whose vectors were then replaced
    by the encoded ground-truth maps of the same frames, what a perfect SegNet outputs."""
    tmp = tmp_path_factory.mktemp("gt_blobs")
    encode_dataset(tiny_cityscapes, tmp / "encoded", ["val"], size=GT_SIZE, workers=1, progress=False)
    blobs = inference.infer_split(REPO / "prototxt/segnet_deploy.prototxt", weights[0], tmp / "encoded" / "val",
                                  tmp / "blobs" / "pred_vectors.h5", "segnet", log=lambda *_: None)
    truth = dict(lmdb_io.read_datum_lmdb(tmp / "encoded" / "val" / "vectors"))
    with h5py.File(blobs, "r+") as f:
        names = list(f["frames"].asstr()[...])
        maps = np.stack([truth[lmdb_io.frame_key(i, n)] for i, n in enumerate(names)])
        assert maps.shape == f["vectors"].shape and not np.array_equal(maps, f["vectors"][...])
        f["vectors"][...] = maps
    return tmp / "encoded", tmp / "blobs", names, maps


def run_gt_evaluate(tiny_cityscapes, gt_blobs, weights, out, *extra, env=None):
    """tools/evaluate.py into ``out`` (a copy of the ground-truth blob folder), as `make evaluate` runs it."""
    if not out.exists():
        shutil.copytree(gt_blobs[1], out)
    return helpers.run_tool("evaluate", "--model", "segnet", "--split", "val", "--root", tiny_cityscapes,
                            "--encoded", gt_blobs[0], "--out", out, "--weights", weights[0], "--thresholds",
                            ",".join(map(str, GT_THRESHOLDS)), "--workers", "1", "--bootstrap", "0",
                            "--figures", "0", *extra, timeout=900, env=env)


@pytest.fixture(scope="module")
def gt_evaluated(tiny_cityscapes, gt_blobs, weights, tmp_path_factory):
    """The ground-truth blobs scored by an uninterrupted `evaluate --oracle-classes`: its --out folder."""
    out = tmp_path_factory.mktemp("gt_evaluated") / "eval"
    r = run_gt_evaluate(tiny_cityscapes, gt_blobs, weights, out, "--oracle-classes")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "redoing" not in r.stdout           # the blob file was taken as it is, not inferred again
    return out


@pytest.mark.slow
def test_ground_truth_maps_through_evaluate_score_exactly_the_oracle_row(tiny_cityscapes, gt_blobs, gt_evaluated,
                                                                           tmp_path):
    """Ground-truth maps in pred_vectors.h5, scored by `make evaluate --oracle-classes`, give tools/oracle.py's
    CM/vote row exactly: every metric overall and per class, and the same exported files byte for byte."""
    with h5py.File(gt_evaluated / "pred_vectors.h5", "r") as f:
        np.testing.assert_array_equal(f["vectors"][...], gt_blobs[3])
    r = helpers.run_tool("oracle", "--root", tiny_cityscapes, "--split", "val", "--size", *GT_SIZE, "--thresholds",
                         ",".join(map(str, GT_THRESHOLDS)), "--anchor", "cm", "--method", "vote", "--no-full-res",
                         "--no-gt-subsampled", "--figures", "0", "--out", tmp_path / "oracle")
    assert r.returncode == 0, r.stderr[-3000:]
    (oracle_row,) = json.loads((tmp_path / "oracle" / "report.json").read_text())["results"]
    (row,) = json.loads((gt_evaluated / "report.json").read_text())["results"]
    assert row["name"].startswith("DCME segnet (ground-truth classes)") and row["frames"] == 2
    for metric in ("AP", "AP50%", "AP100m", "AP50m", "classes"):
        assert row[metric] == oracle_row[metric], metric
    assert row["AP"] > 0.5 and sum(c["AP"] is not None for c in row["classes"].values()) >= 3   # a real score
    ours = helpers.folder_files(gt_evaluated / f"pred-{GT_CONFIG}-oracle-classes")
    theirs = helpers.folder_files(tmp_path / "oracle" / ORACLE_CONFIG)
    assert ours == theirs and len(ours) > 10


@pytest.mark.slow
def test_exported_instances_and_classes_are_the_decoded_ones_frame_by_frame(tiny_cityscapes, gt_blobs, weights,
                                                                             tmp_path):
    """With GoogLeNet's classes and --max-instances 3: each frame's .txt and masks are the 3 best-scored instances
    decoded from that frame's own map, in their order, with the class and probability GoogLeNet gives each."""
    from PIL import Image

    from dcme_layers.core.decoding import decode
    from dcme_layers.evaluation.export import upsample_labels
    from dcme_layers.net.classify import Classifier

    n = 3
    out = tmp_path / "eval"
    r = run_gt_evaluate(tiny_cityscapes, gt_blobs, weights, out, "--classifier-weights", weights[1],
                        "--classifier-size", *GT_SIZE, "--max-instances", n)
    assert r.returncode == 0, r.stderr[-3000:]
    encoded, _, names, maps = gt_blobs
    pred = out / f"pred-{GT_CONFIG}-googlenet"
    assert sorted(p.name for p in pred.glob("*_pred.txt")) == sorted(f"{name}_pred.txt" for name in names)
    classifier = Classifier(REPO / "prototxt/googlenet_deploy.prototxt", weights[1], size=GT_SIZE)
    images = dict(lmdb_io.read_datum_lmdb(encoded / "val" / "images"))
    for i, name in enumerate(names):
        dec = decode(maps[i], *GT_THRESHOLDS)
        assert len(dec.scores) > n                                     # --max-instances has something to drop
        kept = np.sort(np.argsort(-dec.scores, kind="stable")[:n])     # the n best, in decoding order
        labels = np.zeros_like(dec.labels)
        for k, j in enumerate(kept, 1):
            labels[dec.labels == j + 1] = k
        image = np.ascontiguousarray(images[lmdb_io.frame_key(i, name)].transpose(1, 2, 0))
        ids, conf = classifier.classify(image, labels)
        confidence = conf * dec.scores[kept]
        lines = (pred / f"{name}_pred.txt").read_text().splitlines()
        assert lines == [f"masks/{name}_{k:03d}.png {ids[k - 1]} {confidence[k - 1]:.6g}" for k in range(1, n + 1)]
        full = upsample_labels(labels, (256, 512))
        for k in range(1, n + 1):
            mask = np.asarray(Image.open(pred / "masks" / f"{name}_{k:03d}.png").convert("L")) != 0
            assert np.array_equal(mask, full == k), (name, k)


# --- killed mid-run (SIGKILL) and resumed: the result of an uninterrupted run ----------------------------------


@pytest.mark.slow
def test_export_killed_mid_run_resumes_to_the_uninterrupted_result(tiny_cityscapes, gt_blobs, weights, gt_evaluated,
                                                                    tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(gt_blobs[1], out)
    pred = f"pred-{GT_CONFIG}-oracle-classes"
    args = ["--model", "segnet", "--split", "val", "--root", tiny_cityscapes, "--encoded", gt_blobs[0], "--out", out,
            "--weights", weights[0], "--thresholds", ",".join(map(str, GT_THRESHOLDS)), "--workers", "1",
            "--bootstrap", "0", "--figures", "0", "--oracle-classes"]
    assert helpers.kill_mid_run("evaluate", args, out / f"{pred}.partial" / "done.txt") == 1
    assert not (out / pred).exists()
    r = run_gt_evaluate(tiny_cityscapes, gt_blobs, weights, out, "--oracle-classes")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after 1 done" in r.stdout
    assert helpers.folder_files(out / pred) == helpers.folder_files(gt_evaluated / pred)
    rows = [json.loads((d / "report.json").read_text())["results"] for d in (out, gt_evaluated)]
    assert rows[0] == rows[1]


@pytest.mark.slow
def test_predictions_file_gives_the_same_report_as_inferring(tiny_cityscapes, encoded, weights, tmp_path):
    """--predictions scores vector maps computed elsewhere: tools/infer.py's file (moved, as from another machine)
    and Caffe's own HDF5Output file from `caffe test` of the same weights (no Python, as the GPU check's demo
    stage writes it) each give the report of the path that runs the deploy net."""
    common = ("--oracle", "--bootstrap", "5", "--figures", "0")
    run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / "normal", *common)
    assert run.returncode == 0, run.stderr[-3000:]
    moved = tmp_path / "elsewhere" / "pred.h5"
    moved.parent.mkdir()
    shutil.copy(tmp_path / "normal" / "pred_vectors.h5", moved)
    net = tmp_path / "hdf5_deploy.prototxt"
    net.write_text(str(models.hdf5_output_net("segnet", segnet.body, f"{encoded}/val/images", 2, "caffe.h5")))
    run = subprocess.run([str(REPO / ".venv/bin/caffe"), "test", "-model", str(net), "-weights", str(weights[0]),
                          "-iterations", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (tmp_path / "caffe.h5.frames.txt").write_text((encoded / "val" / "frames.txt").read_text())
    expected = json.loads((tmp_path / "normal" / "report.json").read_text())["results"]
    for name, pred in (("infer", moved), ("caffe", tmp_path / "caffe.h5")):
        run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / name, "--predictions", str(pred), *common)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads((tmp_path / name / "report.json").read_text())["results"] == expected, name
        assert f"predictions {pred}" in (tmp_path / name / "report.md").read_text()
    assert not (tmp_path / "infer" / "pred_vectors.h5").exists()        # infer's own format is read in place
    with h5py.File(tmp_path / "caffe" / "pred_vectors.h5", "r") as f:    # Caffe's becomes it, with its record
        assert [n.decode() for n in f["frames"][...]] == (encoded / "val" / "frames.txt").read_text().split()
    assert (tmp_path / "caffe" / "pred_vectors.h5.job.json").is_file()


@pytest.mark.slow
def test_bad_predictions_files_are_one_line(tiny_cityscapes, encoded, weights, clean_blobs, tmp_path):
    frames = (encoded / "val" / "frames.txt").read_text().split()

    def write(name, vectors, names=frames, caffe_format=False):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            f["data" if caffe_format else "vectors"] = vectors
            if caffe_format:
                f["label"] = np.zeros((len(vectors), 1, 1, 1), np.float32)
            else:
                f["frames"] = np.array(names, dtype=h5py.string_dtype())
        return path

    nan = clean_blobs.copy()
    nan[1, 0, 3, 4] = np.nan
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    cases = [
        (write("order.h5", clean_blobs[::-1], frames[::-1]),
         f"frame 0 is {frames[1]}, line 1 of {encoded / 'val' / 'frames.txt'} is {frames[0]}; score it with the "
         f"--encoded split it was predicted from, in its order"),
        (write("fewer.h5", clean_blobs[:1], frames[:1]), f"1 frames, {encoded / 'val' / 'frames.txt'} lists 2"),
        (write("shape.h5", clean_blobs[:, :, :-1]),
         f"vector maps of shape (2, 2, {ENCODED_SIZE[0] - 1}, {ENCODED_SIZE[1]})"),
        (write("nan.h5", nan), f"frame 1 ({frames[1]}) has NaN/inf in its predicted vector map"),
        (write("caffe.h5", clean_blobs, caffe_format=True),
         f"a Caffe HDF5Output file needs its frame names in {tmp_path / 'caffe.h5.frames.txt'}"),
        (junk, "not a readable HDF5 file"),
    ]
    for path, says in cases:
        with pytest.raises(errors.InferenceError) as e:
            inference.use_predictions(path, encoded / "val", tmp_path / "out" / "pred_vectors.h5")
        assert str(e.value).startswith(f"{path}: ") and says in str(e.value), str(e.value)
    run = run_evaluate(tiny_cityscapes, encoded, weights, tmp_path / "eval", "--predictions", str(cases[0][0]))
    assert run.returncode != 0 and run.stderr.splitlines() == [f"evaluate: {cases[0][0]}: {cases[0][1]}"], run.stderr
    assert not (tmp_path / "out").exists()


def test_confusion_matrix_rows_are_the_ground_truth():
    from cityscapesscripts.helpers.labels import name2label

    from dcme_layers.evaluation.report import format_confusion
    from dcme_layers.evaluation.labels import confusion_matrix

    person, car = name2label["person"].id, name2label["car"].id
    m = confusion_matrix([(person, person), (person, car), (0, car), (car, car)])
    names = list(cs_eval.CLASS_NAMES)
    assert m.shape == (9, 8) and m.sum() == 4
    assert m[names.index("person"), names.index("person")] == 1 and m[names.index("person"), names.index("car")] == 1
    assert m[8, names.index("car")] == 1 and m[names.index("car"), names.index("car")] == 1
    assert "| person (2) | 1 | 0 | 1 |" in format_confusion(m) and "| 50% |" in format_confusion(m)
