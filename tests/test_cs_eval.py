"""dcme_layers.evaluation.cs_eval with the real cityscapesscripts evaluator: exported ground truth scores 1, the same
scores as the official entry point, the distance metrics, bad predictions, the bootstrap interval; the report's
tables (evaluation.report)."""
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dcme_layers.data import cityscapes
from dcme_layers.evaluation import bootstrap, cs_eval, cs_match, distances, export, oracle, report
from dcme_layers.util import errors


@pytest.fixture(scope="module")
def val(tiny_cityscapes):
    return cityscapes.list_frames(tiny_cityscapes, "val")


@pytest.fixture(scope="module")
def gt_preds(val, tmp_path_factory):
    d = tmp_path_factory.mktemp("gt_preds")
    for f in val:
        export.export_ground_truth(d, f)
    return d


def test_exported_ground_truth_scores_ap_1(val, gt_preds):
    for f in val:
        lines = export.prediction_file(gt_preds, f.name).read_text().split("\n")
        n = len(np.unique(cityscapes.instance_map(cityscapes.read_instance_ids(f.instance_ids)))) - 1
        assert len(lines) == n
        for line in lines:                     # the evaluator's format: 3 fields, relative path, regular id
            path, label, conf = line.split(" ")
            assert not os.path.isabs(path) and int(label) in cityscapes.INSTANCE_LABEL_IDS and float(conf) == 1
            mask = cv2.imread(str(gt_preds / path), cv2.IMREAD_UNCHANGED)
            assert mask.shape == cv2.imread(f.instance_ids, cv2.IMREAD_UNCHANGED).shape
    r = cs_eval.evaluate(val, gt_preds, name="gt")
    assert r["distance_available"]
    for m in cs_eval.METRICS:
        assert r[m] == pytest.approx(1.0)
    assert set(r["classes"]) == set(cs_eval.CLASS_NAMES)
    assert r["classes"]["car"]["AP"] == pytest.approx(1.0)
    assert r["classes"]["train"]["AP"] is None         # no train in these frames: N/A, not a number


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the evaluator's deprecated np.in1d
def test_adapter_matches_the_official_entry_point(val, tmp_path, monkeypatch):
    """evaluate() == cityscapesscripts' evaluateImgLists (AP, AP50%, per class) on decoded predictions."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev

    pred = tmp_path / "pred"
    for f in val:
        o = oracle.oracle_predictions(f, (85, 170), thresholds=(2.5, 3, 3.75))
        export.export_frame(pred, f.name, o.labels, o.label_ids, o.scores, o.size)
    ours = cs_eval.evaluate(val, pred, distance=False)
    assert 0.2 < ours["AP"] < 1.0
    args = cs_match.evaluator_args(pred)
    args.gtInstancesFile = str(tmp_path / "gtInstances.json")
    monkeypatch.chdir(tmp_path)                         # it writes matches.json into the working directory
    official = ev.evaluateImgLists([str(export.prediction_file(pred, f.name)) for f in val],
                                   [f.instance_ids for f in val], args)
    assert official["averages"]["allAp"] == pytest.approx(ours["AP"])
    assert official["averages"]["allAp50%"] == pytest.approx(ours["AP50%"])
    for c in cs_eval.CLASS_NAMES:
        a, b = official["averages"]["classes"][c]["ap"], ours["classes"][c]["AP"]
        assert (b is None and np.isnan(a)) or a == pytest.approx(b)
    assert ours["AP100m"] is None and ours["AP50m"] is None
    # Parallel matching gives the identical result.
    assert cs_eval.evaluate(val, pred, distance=False, workers=2) == ours


def test_empty_frame_and_lower_confidence_ranking(val, gt_preds, tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(gt_preds, pred)
    f0 = val[0]
    export.export_frame(pred, f0.name, np.zeros((10, 20), np.int32), [], [], (256, 512))
    assert export.prediction_file(pred, f0.name).read_text() == ""
    r = cs_eval.evaluate(val, pred, distance=False)
    assert 0.0 < r["AP"] < 1.0


def test_prediction_only_on_void_scores_zero(val, tmp_path):
    """A car predicted only on the ego vehicle (void) while no car is matched: upstream IndexError -> AP 0."""
    pred = tmp_path / "pred"
    for f in val:
        ids = cityscapes.read_instance_ids(f.instance_ids)
        void = (ids == 1).astype(np.int32)              # ego vehicle, ignoreInEval
        assert void.any()
        export.export_frame(pred, f.name, void, [26], [0.9], ids.shape)
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev

    args = cs_match.evaluator_args(pred)
    matches = dict(cs_match.match_frame(export.prediction_file(pred, f.name), f.instance_ids,
                                        cs_match.instances_dict(f.instance_ids), args) for f in val)
    with pytest.raises(IndexError):
        ev.evaluateMatches(matches, args)
    r = cs_eval.evaluate(val, pred, distance=False)
    assert r["classes"]["car"]["AP"] == 0.0 and r["AP"] == 0.0


def test_distance_metrics_need_disparity(val, tmp_path):
    root = tmp_path / "root"                            # ground truth only: no disparity/, no camera/
    frames = []
    for f in val:
        dst = root / "gtFine" / "val" / f.city / Path(f.instance_ids).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f.instance_ids, dst)
        frames.append(f._replace(instance_ids=str(dst)))
        export.export_ground_truth(tmp_path / "pred", frames[-1])
    r = cs_eval.evaluate(frames, tmp_path / "pred")
    assert r["AP"] == pytest.approx(1.0)
    assert not r["distance_available"] and r["AP100m"] is None and r["AP50m"] is None
    with pytest.raises(errors.EvaluationError, match="disparity"):
        cs_eval.evaluate(frames, tmp_path / "pred", distance=True)
    md, js = report.write_report(r, tmp_path / "report", title="t")
    assert "| Method | AP | AP50% | AP100m | AP50m |" in md.read_text()
    assert "| 100.0 | 100.0 | N/A | N/A |" in md.read_text()
    doc = json.loads(js.read_text())
    assert doc["results"][0]["AP100m"] is None and doc["results"][0]["AP"] == pytest.approx(1.0)


# Three 40x40 cars (1600 pixels: over the 1000 that AP100m/AP50m ask for) at 20 m, 80 m and 120 m: depth = baseline
# * fx / d with baseline * fx = 240 and d = (p - 1) / 256, so disparity PNG values p = 3073, 769 and 513.
CARS = {26000: (slice(40, 80), slice(10, 50), 3073), 26001: (slice(40, 80), slice(100, 140), 769),
        26002: (slice(40, 80), slice(190, 230), 513)}


def _frame_with_cars_at_three_distances(root):
    name, city = "depth_000000_000019", "depth"
    ids = np.full((128, 256), 7, np.uint16)                       # road
    disparity = np.full((128, 256), 3073, np.uint16)
    for iid, (rows, cols, p) in CARS.items():
        ids[rows, cols], disparity[rows, cols] = iid, p
    paths = {sub: root / sub / "val" / city / f"{name}{suffix}" for sub, suffix in (
        ("leftImg8bit", cityscapes.IMAGE_SUFFIX), ("gtFine", cityscapes.INSTANCE_SUFFIX),
        ("labels", cityscapes.LABEL_SUFFIX), ("disparity", "_disparity.png"), ("camera", "_camera.json"))}
    paths["labels"] = root / "gtFine" / "val" / city / f"{name}{cityscapes.LABEL_SUFFIX}"
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(paths["leftImg8bit"]), np.full((128, 256, 3), 90, np.uint8))
    cv2.imwrite(str(paths["gtFine"]), ids)
    cv2.imwrite(str(paths["labels"]), cityscapes.class_map(ids))
    cv2.imwrite(str(paths["disparity"]), disparity)
    paths["camera"].write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 1200.0}}))
    (frame,) = cityscapes.list_frames(root, "val")
    return frame, ids


@pytest.mark.parametrize("classes, expect, upstream_raises", [
    # right on the near car, the two farther ones called person: car recall 1/3 over all three, 1/2 within 100 m,
    # 1 within 50 m (one score, no false positive: the evaluator's AP is the recall); person has no ground truth
    ((26, 24, 24), {"AP": 1 / 3, "AP50%": 1 / 3, "AP100m": 1 / 2, "AP50m": 1.0}, False),
    # the reverse: 2/3 over all, 1/2 within 100 m (the 120 m car's prediction is ignored, not a false positive);
    # within 50 m the near car is missed and the only car predictions lie on ignored far cars: upstream's IndexError,
    # scored 0 by the fallback's distance branch
    ((24, 26, 26), {"AP": 2 / 3, "AP50%": 2 / 3, "AP100m": 1 / 2, "AP50m": 0.0}, True),
])
def test_distance_metrics_on_near_and_far_cars_by_hand(tmp_path, classes, expect, upstream_raises):
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev

    frame, ids = _frame_with_cars_at_three_distances(tmp_path / "root")
    dist = distances.instance_distances(ids, *distances.side_files(frame.instance_ids))
    assert [round(dist[i][0], 6) for i in CARS] == [20.0, 80.0, 120.0] and all(dist[i][1] == 1.0 for i in CARS)
    labels = np.zeros(ids.shape, np.int32)
    for k, iid in enumerate(CARS, 1):
        labels[ids == iid] = k                                     # exact masks, one confidence for all
    export.export_frame(tmp_path / "pred", frame.name, labels, classes, [0.9] * 3, ids.shape)
    r = cs_eval.evaluate([frame], tmp_path / "pred")
    assert r["distance_available"]
    for metric, value in expect.items():
        assert r[metric] == pytest.approx(value, abs=1e-12), metric
        assert r["classes"]["car"][metric] == pytest.approx(value, abs=1e-12), metric
    assert all(v is None for v in r["classes"]["person"].values())  # no person in the ground truth: N/A
    args = cs_match.evaluator_args(tmp_path / "pred", True)
    matches = dict([cs_match.match_frame(export.prediction_file(tmp_path / "pred", frame.name), frame.instance_ids,
                                         cs_match.instances_dict(frame.instance_ids, True), args)])
    if upstream_raises:                                            # the case only the fallback scores
        with pytest.raises(IndexError):
            ev.evaluateMatches(matches, args)
    else:
        assert np.array_equal(ev.evaluateMatches(matches, args), cs_match.evaluate_matches(matches, args),
                              equal_nan=True)


def test_instance_distances(tmp_path):
    ids = np.zeros((4, 6), np.int32)
    ids[:, :3] = 26000
    ids[:, 3:] = 26001
    disp = np.zeros((4, 6), np.uint16)
    d = np.array([2.0, 4.0, 8.0])                      # disparities of columns 0..2 -> depth = 0.5 * 1000 / d
    disp[:, :3] = (d * 256 + 1).astype(np.uint16)
    disp[:2, 3:] = 256 * 10 + 1                         # 26001: half its pixels valid, depth 50 m
    cv2.imwrite(str(tmp_path / "d.png"), disp)
    (tmp_path / "c.json").write_text(json.dumps({"extrinsic": {"baseline": 0.5}, "intrinsic": {"fx": 1000.0}}))
    dist = distances.instance_distances(ids, tmp_path / "d.png", tmp_path / "c.json")
    assert dist[26000] == pytest.approx((125.0, 1.0))   # median of 250, 125, 62.5
    assert dist[26001] == pytest.approx((50.0, 0.5))
    with pytest.raises(errors.EvaluationError, match="missing.json: missing or bad camera"):
        distances.instance_distances(ids, tmp_path / "d.png", tmp_path / "missing.json")
    with pytest.raises(errors.EvaluationError, match="d.png"):
        distances.instance_distances(ids[:2], tmp_path / "d.png", tmp_path / "c.json")


def test_bad_predictions_raise_clear_errors(val, gt_preds, tmp_path):
    f = val[0]
    lab = np.zeros((8, 8), np.int32)
    lab[2:5, 2:5] = 1
    with pytest.raises(errors.EvaluationError, match="label id 7"):
        export.export_frame(tmp_path, f.name, lab, [7], [0.5], (16, 16))
    with pytest.raises(errors.EvaluationError, match="non-finite"):
        export.export_frame(tmp_path, f.name, lab, [26], [np.nan], (16, 16))
    with pytest.raises(errors.EvaluationError, match="1 instances but 2"):
        export.export_frame(tmp_path, f.name, lab, [26, 24], [0.5, 0.5], (16, 16))

    pred = tmp_path / "missing"
    pred.mkdir()
    with pytest.raises(errors.EvaluationError, match=f"{val[0].name}_pred.txt: missing"):
        cs_eval.evaluate(val, pred)

    pred = tmp_path / "orphan"
    shutil.copytree(gt_preds, pred)
    (pred / "synthval_000999_000019_pred.txt").write_text("")
    with pytest.raises(errors.EvaluationError, match="000999.*no ground truth"):
        cs_eval.evaluate(val, pred)

    pred = tmp_path / "lowres"                           # masks at the encoded resolution, not the ground truth's
    shutil.copytree(gt_preds, pred)
    export.export_frame(pred, f.name, lab, [26], [0.5], (85, 170))
    with pytest.raises(errors.EvaluationError, match="mask must be a 512x256"):
        cs_eval.evaluate(val, pred)

    pred = tmp_path / "badline"                          # the evaluator's own check, turned into an exception
    shutil.copytree(gt_preds, pred)
    txt = export.prediction_file(pred, f.name)
    txt.write_text(txt.read_text() + " ")            # a trailing space: 4 fields
    with pytest.raises(errors.EvaluationError, match="Invalid prediction file"):
        cs_eval.evaluate(val, pred)


def test_bootstrap_draws_frames_with_replacement(val, tmp_path):
    """Two frames: each draw is frame 0 twice, frame 1 twice, or both, so the interval's ends are the lowest and
    the highest of the frames' own APs and the pair's AP (a frame drawn twice scores as that frame alone)."""
    for f in val:
        o = oracle.oracle_predictions(f, (85, 170), thresholds=(2.5, 3, 3.75))
        for d in (tmp_path / "both", tmp_path / f.name):
            export.export_frame(d, f.name, o.labels, o.label_ids, o.scores, o.size)
    alone = [cs_eval.evaluate([f], tmp_path / f.name, distance=False)["AP"] for f in val]
    r = cs_eval.evaluate(val, tmp_path / "both", distance=False, bootstrap=40)
    assert alone[0] != pytest.approx(alone[1])
    lo, hi = r["interval"]["AP"]
    assert lo == pytest.approx(min(alone + [r["AP"]])) and hi == pytest.approx(max(alone + [r["AP"]]))
    assert r["interval"]["resamples"] == 40 and r["interval"]["level"] == bootstrap.LEVEL
    assert cs_eval.evaluate(val, tmp_path / "both", distance=False, bootstrap=40)["interval"] == r["interval"]
    assert "interval" not in cs_eval.evaluate(val, tmp_path / "both", distance=False)
    md = report.format_tables([r])
    assert f"{100 * r['AP']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in md
