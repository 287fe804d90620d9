"""dcme_layers.pipeline.tuning and tools/tune_thresholds.py (`make tune`): a grid of decoding thresholds scored by
the real cityscapesscripts evaluator on the tiny synthetic set, with the oracle noise model and with an HDF5 file of
maps in tools/infer.py's layout."""
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest

from dcme_layers.core.decoding import decode
from dcme_layers.core.encoding import vector_map
from dcme_layers.core.thresholds import parse_thresholds
from dcme_layers.data import cityscapes
from dcme_layers.evaluation import cs_eval
from dcme_layers.evaluation.export import export_split
from dcme_layers.evaluation.labels import best_scored, ground_truth_classes, majority_label_ids
from dcme_layers.evaluation.oracle import noisy_map
from dcme_layers.pipeline import tuning, tuning_grid
from dcme_layers.util.files import png_size

SMALL = (64, 128)
GRID = ((2.0, 4.0), (2, 8), (3.0, 6.0))


def noisy_maps(frames, size, seed=0):
    """The oracle noise model's maps as Source documents them: default_rng([seed, crc32(frame name)])."""
    out = []
    for f in frames:
        inst = cityscapes.instance_map(cityscapes.subsample_ids(cityscapes.read_ground_truth(f), size))
        out.append((noisy_map(vector_map(inst), inst, np.random.default_rng([seed, zlib.crc32(f.name.encode())])),
                    inst))
    return out


def evaluator_ap(frames, maps, th, out):
    """AP of one setting through make evaluate's path: decode, ground-truth classes, export at full resolution,
    cs_eval.evaluate."""
    by_name = {f.name: m for f, m in zip(frames, maps)}

    def predict(frame):
        vmap, inst = by_name[frame.name]
        dec = decode(vmap, *th)
        labels, scores = best_scored(dec.labels, dec.scores, tuning.TuneOptions.max_instances)
        labels, label_ids, scores = ground_truth_classes(labels, scores, majority_label_ids(labels, inst))
        return labels, label_ids, scores, png_size(frame.instance_ids)

    export_split(frames, out, predict, progress=False, log=lambda *a: None)
    return cs_eval.evaluate(frames, out, distance=False)["AP"]


def test_oracle_noise_grid_best_setting_scores_what_make_evaluate_scores(tiny_cityscapes, tmp_path):
    frames = cityscapes.list_frames(tiny_cityscapes, "val")
    best = tuning.tune(frames, tuning.Source(None, SMALL), GRID, tmp_path / "tune",
                       tuning.TuneOptions(workers=2, progress=False), split="val")
    assert len(best["table"]) == 8 and best["thresholds"] in {r["thresholds"] for r in best["table"]}
    assert best["AP"] == max(r["AP"] for r in best["table"])
    maps = noisy_maps(frames, SMALL)
    th = parse_thresholds(best["thresholds"])
    assert best["full_resolution"]["AP"] == evaluator_ap(frames, maps, th, tmp_path / "full")   # exact
    assert (tmp_path / "tune" / "best.txt").read_text().strip() == best["thresholds"]
    rows = (tmp_path / "tune" / "table.csv").read_text().splitlines()
    assert rows[0] == "DT,VT,ET,AP,AP50%" and len(rows) == 9
    assert png_size(tmp_path / "tune" / "heatmap.png")
    again = tuning.tune(frames, tuning.Source(None, SMALL), GRID, tmp_path / "tune",
                        tuning.TuneOptions(progress=False), split="val")           # up to date: read back
    assert again == best


def test_at_the_ground_truths_size_every_setting_is_the_evaluators_ap(tiny_cityscapes, tmp_path):
    frames = cityscapes.list_frames(tiny_cityscapes, "val")
    size = png_size(frames[0].instance_ids)
    grid = ((8.0,), (30, 200), (12.0,))
    got = tuning.tune(frames, tuning.Source(None, size), grid, tmp_path / "tune",
                      tuning.TuneOptions(confirm=False, progress=False))
    maps = noisy_maps(frames, size)
    for i, row in enumerate(got["table"]):
        assert row["AP"] == evaluator_ap(frames, maps, parse_thresholds(row["thresholds"]), tmp_path / f"e{i}")
    assert got["table"][0]["AP"] != got["table"][1]["AP"]     # the settings do differ


def write_predictions(path, names, maps):
    with h5py.File(path, "w") as f:
        f["vectors"] = np.stack(maps).astype(np.float32)
        f["frames"] = np.array(names, dtype=h5py.string_dtype())


@pytest.mark.slow
def test_predictions_file_and_a_bad_one(tiny_cityscapes, tmp_path, repo):
    frames = cityscapes.list_frames(tiny_cityscapes, "val")
    h5 = tmp_path / "pred_vectors.h5"
    write_predictions(h5, [f.name for f in frames], [m for m, _ in noisy_maps(frames, SMALL)])
    got, size = tuning.prediction_frames(h5, tiny_cityscapes, "val")
    assert [f.name for f in got] == [f.name for f in frames] and size == SMALL
    grid = ((2.0,), (2, 8), (3.0,))
    options = tuning.TuneOptions(confirm=False, progress=False)
    from_file = tuning.tune(got, tuning.Source(h5, size), grid, tmp_path / "a", options)
    from_noise = tuning.tune(frames, tuning.Source(None, SMALL), grid, tmp_path / "b", options)
    assert from_file["table"] == from_noise["table"]          # the same maps score the same

    bad = tmp_path / "bad.h5"
    write_predictions(bad, ["nowhere_000000_000019"], [np.zeros((2, *SMALL), np.float32)])
    run = subprocess.run([sys.executable, "tools/tune_thresholds.py", "--predictions", str(bad), "--root",
                          str(tiny_cityscapes), "--split", "val", "--out", str(tmp_path / "c")],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and str(bad) in run.stderr
    assert "nowhere_000000_000019 has no ground truth" in run.stderr
    assert not (tmp_path / "c").exists()


def test_default_grid_is_centred_on_the_papers_setting():
    dts, vts, ets = tuning_grid.default_grid((340, 680))
    assert (dts[2], vts[2], ets[2]) == (10, 50, 15)
    assert dts == (5, 7.07, 10, 14.1, 20) and vts == (12, 25, 50, 100, 200) and ets[0] == 7.5 and ets[-1] == 30
    dts, vts, ets = tuning_grid.default_grid((85, 170))                   # scaled: (2.5, 3, 3.75) in the middle
    assert (dts[2], vts[2], ets[2]) == (2.5, 3, 3.75) and min(vts) >= 1
    with pytest.raises(ValueError, match="VT"):
        tuning_grid.settings_of((1.0,), (0,), (1.0,))
