"""Shared pytest fixtures. Tests run from the repository root with the .venv from `make setup`."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Eight real Cityscapes train frames, read in place (never copied into the project).
SAMPLE = Path(os.environ.get("DCME_CITYSCAPES_SAMPLE", REPO.parent / "shared" / "data" / "cityscapes_sample"))


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def cityscapes_sample():
    """Root of the real Cityscapes sample (leftImg8bit/, gtFine/); skips the test when it is absent."""
    if not (SAMPLE / "gtFine" / "train").is_dir():
        pytest.skip(f"real Cityscapes sample not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory):
    """Root of a small synthetic Cityscapes (dcme_layers.synthetic, seed 0): train 3 + val 2 frames at 256x512 with
    leftImg8bit, gtFine (labelIds, instanceIds, polygons), disparity and camera. Generated once per session
    (about a second); shared by all tests, so treat it as read-only (copy it to modify it)."""
    from dcme_layers.synthetic import generate
    return generate(tmp_path_factory.mktemp("tiny_cityscapes"), {"train": 3, "val": 2}, size=(256, 512), seed=0)


# The tools that tests import (tools.demo, tools.make_prototxt) call dcme_layers.caffe_log.quiet() when imported,
# which sets GLOG_minloglevel=1 for the process and its children. Tests that run `caffe train` read its INFO lines,
# so once the test modules are imported the variable goes back to what it was.
_GLOG_LEVEL = os.environ.get("GLOG_minloglevel")


def pytest_collection_finish(session):
    if _GLOG_LEVEL is None:
        os.environ.pop("GLOG_minloglevel", None)
    else:
        os.environ["GLOG_minloglevel"] = _GLOG_LEVEL
