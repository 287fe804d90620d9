"""Shared pytest fixtures and settings. Tests run from the repository root with the .venv from `make setup`;
tests/helpers.py holds the helpers the modules share and says how DCME_REQUIRE turns a skip into a failure."""
import os

import pytest
from hypothesis import HealthCheck, settings

import helpers

REPO = helpers.REPO
SAMPLE = helpers.SAMPLE

# "ci" (what `make test` selects): the same examples on every run; "dev": random ones. Health checks stay on in
# both, so a strategy that filters most of its examples away fails (filter_too_much).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
assert HealthCheck.filter_too_much not in settings.get_profile("ci").suppress_health_check
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_sessionstart(session):
    """What DCME_REQUIRE names is checked once, first: a missing one stops the run with one line."""
    unknown = sorted(helpers.REQUIRED - set(helpers.KNOWN))
    if unknown:
        pytest.exit(f"DCME_REQUIRE: unknown name {unknown[0]!r} (known: {', '.join(helpers.KNOWN)})", returncode=4)
    for what in sorted(helpers.REQUIRED):
        problem = helpers.PROBLEMS[what]()
        if problem:
            pytest.exit(f"required by DCME_REQUIRE but missing: {problem}", returncode=1)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def cityscapes_sample():
    """Root of the real Cityscapes sample (leftImg8bit/, gtFine/); skips the test when it is absent (fails when
    DCME_REQUIRE names sample)."""
    problem = helpers.sample_problem()
    if problem:
        helpers.lacking("sample", problem)
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory):
    """Root of a small synthetic Cityscapes (dcme_layers.data.synthetic, seed 0): train 3 + val 2 frames at 256x512 with
    leftImg8bit, gtFine (labelIds, instanceIds, polygons), disparity and camera. Generated once per session
    (about a second); shared by all tests, so treat it as read-only (copy it to modify it)."""
    from dcme_layers.data.synthetic import generate
    return generate(tmp_path_factory.mktemp("tiny_cityscapes"), {"train": 3, "val": 2}, size=(256, 512), seed=0)


# The tools that tests import (tools.demo, tools.make_prototxt) call dcme_layers.net.caffe_log.quiet() when imported,
# which sets GLOG_minloglevel=1 for the process and its children; the user may have set glog variables too. Tests
# that run `caffe train` read its INFO lines, so once the test modules are imported every GLOG_ variable goes.
def pytest_collection_finish(session):
    for name in [k for k in os.environ if k.startswith("GLOG_")]:
        del os.environ[name]
