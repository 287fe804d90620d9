#!/usr/bin/env python
"""`make bench`: run every tools/bench_*.py in turn; each prints a Markdown table with its ratios and targets.

Benchmarks, not tests: nothing here fails on a slow machine. Usage: tools/bench.py [NAME ...] (e.g. encode nets).
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

from dcme_layers.util import cli

TOOLS = Path(__file__).resolve().parent


def parser():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all of tools/bench_*.py)")
    return ap


def run(args):
    scripts = sorted(TOOLS.glob("bench_*.py"))
    if args.names:
        scripts = [TOOLS / f"bench_{n}.py" for n in args.names]
        missing = [str(s) for s in scripts if not s.exists()]
        if missing:
            sys.exit(f"bench: no such benchmark: {', '.join(missing)}")
    failed = []
    for script in scripts:
        print(f"\n## {script.stem[len('bench_'):]}  ({script.relative_to(TOOLS.parent)})\n", flush=True)
        t0 = time.time()
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(script.name)
        print(f"\n({time.time() - t0:.0f} s)", flush=True)
    if failed:
        sys.exit(f"bench: failed: {', '.join(failed)}")


def main(argv=None):
    return cli.run_tool("bench", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
