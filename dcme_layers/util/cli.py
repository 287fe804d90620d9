"""What every tool in tools/ shares: ``run_tool``, the runner each one's ``main`` goes through (quiet glog, parse
the arguments, run, one line on bad input), and argument types that argparse rejects with one usage line when out
of range (`--limit -1` would otherwise slice away the last frame).

Standard library only (with util.errors): tools/caffe_source.py and tools/gpu_check.py run it with a bare python3.
"""
import argparse
import os
import sys

from dcme_layers.util.errors import DcmeError

__all__ = ["QUIET_LEVEL", "count", "non_negative", "positive", "quiet", "run_tool"]

#: GLOG_minloglevel of the tools: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
QUIET_LEVEL = "1"


def quiet():
    """Silence Caffe's glog INFO lines (the whole NetParameter of every net it initialises) in this process and its
    children, unless GLOG_minloglevel is already set. glog reads it once, when pycaffe loads, so this must run
    before caffe is imported. Returns the level in force."""
    return os.environ.setdefault("GLOG_minloglevel", QUIET_LEVEL)


def run_tool(prefix, parser, run, argv=None, errors=()):
    """Run a tool: ``quiet()``, parse ``argv`` (default: the command line) with the ArgumentParser ``parser()``,
    then ``run(args)``, whose result is the exit status (None: 0). A DcmeError, or one of ``errors``, is printed as
    the one line ``<prefix>: <message>`` on stderr and gives exit status 1. Returns the exit status."""
    quiet()
    args = parser().parse_args(argv)
    try:
        status = run(args)
    except (DcmeError,) + tuple(errors) as e:
        line = f"{prefix}: {e}"
    else:
        return 0 if status is None else status
    # printed once the error is released: what its traceback kept open (a progress bar) has closed, the line is last
    print(line, file=sys.stderr)
    return 1


def _at_least(kind, low, what):
    """An argparse type: ``kind`` (int, float) of the text, refused unless at least ``low`` (``what`` says so)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be {what}")
        return value
    parse.__name__ = what.replace(" ", "_")
    return parse


#: A count (0 allowed): --limit, --figures, --max-instances.
count = _at_least(int, 0, ">= 0")
#: A positive count: --workers, --commit-every, --size.
positive = _at_least(int, 1, ">= 1")
#: A number that may be 0 but not negative: --margin.
non_negative = _at_least(float, 0, ">= 0")
