"""dcme_layers.evaluation.oracle (decoded ground truth) and tools/oracle.py on the tiny synthetic set, with the real
evaluator; predictions made from another root are redone."""
import json

import cv2
import numpy as np
import pytest

import helpers
from dcme_layers.core.thresholds import scale_thresholds
from dcme_layers.data import cityscapes
from dcme_layers.evaluation import cs_eval, export, oracle

SMALL = (85, 170)      # the tiny set's 256x512 subsampled 3x, like 1024x2048 -> 340x680


def test_oracle_at_encoded_resolution_scores_strictly_lower_than_full_resolution(tiny_cityscapes, tmp_path):
    frames = cityscapes.list_frames(tiny_cityscapes, "val")
    th = scale_thresholds("segnet", SMALL)
    full = export.export_split(frames, tmp_path / "full", export.full_resolution_gt, progress=False)
    assert len(full) == len(frames)
    ap_full = cs_eval.evaluate(frames, tmp_path / "full")
    for f in frames:
        o = oracle.oracle_predictions(f, SMALL, "cm", "vote", th)
        assert o.labels.shape == SMALL and o.size == (256, 512)
        assert len(o.label_ids) == o.labels.max() and set(o.label_ids) <= set(cityscapes.INSTANCE_LABEL_IDS)
        export.export_frame(tmp_path / "small", f.name, o.labels, o.label_ids, o.scores, o.size)
    ap_small = cs_eval.evaluate(frames, tmp_path / "small")
    assert all(ap_full[m] == pytest.approx(1.0) for m in cs_eval.METRICS)   # the distances found every instance
    assert 0.1 < ap_small["AP"] < 1.0
    for m in ("AP100m", "AP50m"):   # the mean over the classes with ground truth of 1000+ pixels within the distance
        per_class = [c[m] for c in ap_small["classes"].values() if c[m] is not None]
        assert 0 < len(per_class) < sum(c["AP"] is not None for c in ap_small["classes"].values())
        assert ap_small[m] == pytest.approx(np.mean(per_class), abs=1e-12)


def run_cli(*args):
    return helpers.run_tool("oracle", *args)


@pytest.mark.slow
def test_oracle_cli_writes_the_ablation_report_and_figures(tiny_cityscapes, tmp_path, repo):
    out = tmp_path / "oracle"
    args = ["--root", tiny_cityscapes, "--split", "val", "--size", *SMALL, "--scale-thresholds",
            "--out", out, "--figures", 1]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"report: {out / 'report.md'}" in r.stdout
    doc = json.loads((out / "report.json").read_text())
    rows = {x["name"]: x for x in doc["results"]}
    assert len(rows) == 6                              # full res, subsampled GT, {cm, bbox} x {vote, watershed}
    for x in rows.values():
        assert all(0 < x[m] <= 1 for m in cs_eval.METRICS)                # disparity present: all four metrics
    assert all(rows["GT, full resolution"][m] == pytest.approx(1.0) for m in cs_eval.METRICS)
    cm_vote = rows["GT at 85x170, CM anchor, vote decoding"]
    assert cm_vote["AP"] < 1.0
    md = (out / "report.md").read_text()
    assert "| Method | AP | AP50% | AP100m | AP50m |" in md and "| GT at 85x170, BBOX anchor, watershed" in md
    figs = sorted((out / "figures").glob("*.png"))
    assert len(figs) == 4
    img = cv2.imread(str(figs[0]))
    assert img.shape == (85, 3 * 170 + 2 * 4, 3)
    # Resumable: a second run re-uses the exported masks and gives the same table.
    mask = next((out / "gt-full-res" / "masks").glob("*.png"))
    before = mask.stat().st_mtime_ns
    assert run_cli(*args).returncode == 0
    assert mask.stat().st_mtime_ns == before
    assert json.loads((out / "report.json").read_text())["results"] == doc["results"]


@pytest.mark.slow
def test_oracle_cli_bad_input_is_one_line(tiny_cityscapes, tmp_path):
    r = run_cli("--root", tiny_cityscapes, "--thresholds", "10,0,15", "--out", tmp_path)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "VT" in r.stderr
    r = run_cli("--root", tmp_path / "nowhere", "--out", tmp_path)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "nowhere" in r.stderr


@pytest.mark.slow
def test_oracle_does_not_reuse_predictions_of_another_root(tiny_cityscapes, tmp_path):
    """The same frame names under another root (here: every instance relabelled as one class) are redone."""
    other = helpers.copy_root(tiny_cityscapes, tmp_path / "other", ("val",))
    for f in cityscapes.list_frames(other, "val"):
        ids = cityscapes.read_instance_ids(f.instance_ids)
        ids = np.where(ids >= 24000, 26000 + ids % 1000, ids)  # every instance becomes a car
        cv2.imwrite(f.instance_ids, ids.astype(np.uint16))
        cv2.imwrite(f.label_ids, cityscapes.class_map(ids))
    args = ("--split", "val", "--out", tmp_path / "oracle", "--anchor", "cm", "--method", "vote", "--figures", "0",
            "--no-full-res")
    first = helpers.run_tool("oracle", "--root", tiny_cityscapes, *args)
    second = helpers.run_tool("oracle", "--root", other, *args)
    fresh = helpers.run_tool("oracle", "--root", other, *args[:3], tmp_path / "fresh", *args[4:])
    assert first.returncode == second.returncode == fresh.returncode == 0, second.stderr
    assert "changed since it was written; redoing it" in second.stdout
    rows = [[line for line in r.stdout.splitlines() if ": AP " in line] for r in (second, fresh)]
    assert rows[0] == rows[1]
