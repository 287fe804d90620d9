"""dcme_layers.util.cli: the tools' count arguments refuse a negative count or a zero size with one usage line."""
import pytest

import helpers

pytestmark = pytest.mark.slow


def test_negative_counts_and_a_zero_size_are_refused(tiny_cityscapes, tmp_path):
    for tool, arg in (("oracle", "--limit"), ("oracle", "--figures"), ("evaluate", "--max-instances"),
                      ("evaluate", "--figures"), ("encode_data", "--workers")):
        r = helpers.run_tool(tool, arg, "-1")
        assert r.returncode == 2 and f"argument {arg}: -1 must be" in r.stderr.splitlines()[-1], (tool, r.stderr)
    r = helpers.run_tool("encode_data", "--root", tiny_cityscapes, "--out", tmp_path / "out", "--size", "0", "0")
    assert r.returncode == 2 and "argument --size: 0 must be >= 1" in r.stderr
    assert not (tmp_path / "out").exists()
