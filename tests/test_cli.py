"""dcme_layers.util.cli: the runner every tool goes through (glog quiet unless the user set it, one line and exit
status 1 on bad input) and the argument types (a negative count or a zero size is one usage line); every tools/*.py
uses it, imports no caffe before it runs, and the standard-library tools run on a bare python3."""
import argparse
import ast
import os
import subprocess
import sys

import pytest

import helpers
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError

TOOLS = sorted((helpers.REPO / "tools").glob("*.py"))


def parser():
    ap = argparse.ArgumentParser(prog="tool")
    ap.add_argument("--n", type=cli.positive, default=1)
    return ap


def test_runner_returns_the_status_and_prints_one_line_on_bad_input(capsys, monkeypatch):
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    assert cli.run_tool("tool", parser, lambda args: None, []) == 0
    assert os.environ["GLOG_minloglevel"] == cli.QUIET_LEVEL
    assert cli.run_tool("tool", parser, lambda args: args.n + 2, ["--n", "3"]) == 5

    def bad(args):
        raise DataError("x.png: cannot decode image")
    assert cli.run_tool("tool: error", parser, bad, []) == 1
    assert capsys.readouterr().err == "tool: error: x.png: cannot decode image\n"

    def full(args):
        raise OSError(28, "No space left on device")
    assert cli.run_tool("tool", parser, full, [], errors=(OSError,)) == 1
    assert capsys.readouterr().err == "tool: [Errno 28] No space left on device\n"
    with pytest.raises(OSError):
        cli.run_tool("tool", parser, full, [])        # not one of its errors: a traceback, as any bug
    with pytest.raises(SystemExit) as usage:
        cli.run_tool("tool", parser, bad, ["--n", "0"])
    assert usage.value.code == 2 and "argument --n: 0 must be >= 1" in capsys.readouterr().err


def test_the_error_line_comes_after_what_the_failure_left_open(capsys):
    """A progress bar that the failed run leaves open (alive in the traceback) prints its last state when it is
    released; the error line still comes last."""
    class Bar:
        def __del__(self):
            print("bar 1/2", file=sys.stderr)

    def run(args):
        bar = Bar()  # noqa: F841
        raise DataError("out/pred.h5: no space left on device")
    assert cli.run_tool("tool: error", parser, run, []) == 1
    assert capsys.readouterr().err.splitlines() == ["bar 1/2", "tool: error: out/pred.h5: no space left on device"]


def test_quiet_keeps_the_users_level(monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "0")
    assert cli.quiet() == "0" and os.environ["GLOG_minloglevel"] == "0"


def test_argument_types_refuse_out_of_range_values():
    assert cli.count("0") == 0 and cli.positive("2") == 2 and cli.non_negative("0.25") == 0.25
    for parse, text in ((cli.count, "-1"), (cli.positive, "0"), (cli.non_negative, "-0.1"), (cli.count, "one"),
                        (cli.non_negative, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.stem)
def test_every_tool_runs_through_the_runner(tool):
    """``main`` returns cli.run_tool(...), and nothing else of the module parses arguments or calls quiet()."""
    tree = ast.parse(tool.read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    call = main.body[-1].value
    assert isinstance(main.body[-1], ast.Return) and ast.unparse(call.func) == "cli.run_tool", tool
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not {c for c in calls if c.endswith(("parse_args", "quiet"))}, tool


@pytest.mark.slow
def test_importing_the_tools_imports_no_caffe_and_leaves_glog_alone():
    """The runner's quiet() comes first only if nothing the tools import at their top imports caffe."""
    code = ("import importlib, os, sys\n"
            f"for name in {[t.stem for t in TOOLS]!r}:\n"
            "    importlib.import_module('tools.' + name)\n"
            "print('caffe' in sys.modules, 'GLOG_minloglevel' in os.environ)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    run = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "False"]


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["gpu_check", "caffe_source"])
def test_standard_library_tools_run_on_a_bare_python(tool):
    """No site-packages (python -S): as on the GPU machine (tools/gpu_check.sh) and before the .venv exists
    (tools/setup_caffe.sh), with the repository on PYTHONPATH as those scripts put it."""
    run = subprocess.run([sys.executable, "-S", f"tools/{tool}.py", "--help"], cwd=helpers.REPO, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(helpers.REPO)))
    assert run.returncode == 0 and "usage:" in run.stdout, run.stderr[-2000:]


@pytest.mark.slow
def test_negative_counts_and_a_zero_size_are_refused(tiny_cityscapes, tmp_path):
    for tool, arg in (("oracle", "--limit"), ("oracle", "--figures"), ("evaluate", "--max-instances"),
                      ("evaluate", "--figures"), ("encode_data", "--workers")):
        r = helpers.run_tool(tool, arg, "-1")
        assert r.returncode == 2 and f"argument {arg}: -1 must be" in r.stderr.splitlines()[-1], (tool, r.stderr)
    r = helpers.run_tool("encode_data", "--root", tiny_cityscapes, "--out", tmp_path / "out", "--size", "0", "0")
    assert r.returncode == 2 and "argument --size: 0 must be >= 1" in r.stderr
    assert not (tmp_path / "out").exists()
