"""The suite's own rules: what DCME_REQUIRE names fails with one line instead of skipping, a skip prints its reason
under -rs, `slow` is a registered marker that `make test-fast` leaves out, and the "ci" hypothesis profile draws the
same examples on every run and fails a strategy that filters most of its examples away. The pytest runs here are
of small test files, with this suite's conftest."""
import subprocess
import sys

import pytest

import helpers

NEEDS_SAMPLE = "def test_needs_sample(cityscapes_sample):\n    pass\n"


def run_pytest(tmp_path, source, *args, **env):
    """pytest -q -rs ``args`` on one test file holding ``source`` with this suite's conftest; DCME_REQUIRE and
    HYPOTHESIS_PROFILE only as given, the sample looked for in a folder that does not exist."""
    (tmp_path / "test_x.py").write_text(source)
    base = {k: v for k, v in helpers.clean_env().items() if k not in ("DCME_REQUIRE", "HYPOTHESIS_PROFILE")}
    base.update(PYTHONPATH=str(helpers.REPO / "tests"), DCME_CITYSCAPES_SAMPLE=str(tmp_path / "no_sample"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "conftest", "-p", "no:cacheprovider",
                           *args, "test_x.py"], cwd=tmp_path, env=base, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_missing_sample_is_a_printed_skip_and_a_failure_when_required(tmp_path):
    missing = f"real Cityscapes sample not found at {tmp_path / 'no_sample'} (set DCME_CITYSCAPES_SAMPLE)"
    r = run_pytest(tmp_path, NEEDS_SAMPLE)
    assert r.returncode == 0 and f"SKIPPED [1] test_x.py:1: {missing}" in r.stdout, r.stdout
    r = run_pytest(tmp_path, NEEDS_SAMPLE, DCME_REQUIRE="sample")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and f"required by DCME_REQUIRE but missing: {missing}" in out, out
    assert "passed" not in out and "skipped" not in out


@pytest.mark.slow
def test_an_unknown_required_name_stops_the_run(tmp_path):
    r = run_pytest(tmp_path, NEEDS_SAMPLE, DCME_REQUIRE="cafe")
    out = r.stdout + r.stderr
    assert r.returncode == 4 and "DCME_REQUIRE: unknown name 'cafe' (known: caffe, caffe-binary, sample, unshare)" \
        in out, out


SLOW_AND_FAST = """
import pytest

@pytest.mark.slow
def test_slow():
    pass

def test_fast():
    pass
"""


@pytest.mark.slow
def test_slow_is_a_registered_marker_that_make_test_fast_leaves_out(tmp_path):
    r = run_pytest(tmp_path, SLOW_AND_FAST, "-m", "not slow", "-W", "error::pytest.PytestUnknownMarkWarning")
    assert r.returncode == 0 and "1 passed, 1 deselected" in r.stdout, r.stdout + r.stderr


def test_lacking_skips_unless_required(monkeypatch):
    monkeypatch.setattr(helpers, "REQUIRED", {"caffe"})
    with pytest.raises(pytest.skip.Exception, match="^needs unshare -r -m here$"):
        helpers.lacking("unshare", "needs unshare -r -m here")
    monkeypatch.setattr(helpers, "REQUIRED", {"caffe", "unshare"})
    with pytest.raises(pytest.fail.Exception, match=r"^needs unshare -r -m here \(DCME_REQUIRE names unshare\)$"):
        helpers.lacking("unshare", "needs unshare -r -m here")


HYPOTHESIS = """
from hypothesis import given, strategies as st

@given(st.lists(st.integers(0, 10 ** 6), min_size=3, max_size=3))
def test_draws(xs):
    with open("drawn.txt", "a") as f:
        f.write(f"{xs}\\n")

@given(st.binary(min_size=4, max_size=4).filter(lambda b: b[:2] == b"\\x12\\x34"))
def test_filters_too_much(x):
    pass
"""


@pytest.mark.slow
def test_ci_profile_is_derandomized_and_fails_heavy_filtering(tmp_path):
    drawn = []
    for _ in range(2):
        r = run_pytest(tmp_path, HYPOTHESIS, HYPOTHESIS_PROFILE="ci")
        assert r.returncode == 1 and "1 failed, 1 passed" in r.stdout, r.stdout
        assert "FailedHealthCheck" in r.stdout and "filter_too_much" in r.stdout, r.stdout
        drawn.append((tmp_path / "drawn.txt").read_text())
        (tmp_path / "drawn.txt").unlink()
    assert drawn[0] == drawn[1] and drawn[0].count("\n") >= 50
