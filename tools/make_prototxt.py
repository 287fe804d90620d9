#!/usr/bin/env python
"""Write prototxt/ from the generators in models/*/net.py (each exposes generate() -> {file name: text}).

    .venv/bin/python tools/make_prototxt.py           # (re)write the files that changed
    .venv/bin/python tools/make_prototxt.py --check   # exit 1 listing the files that are stale or missing
    .venv/bin/python tools/make_prototxt.py segnet    # only the files of models/segnet/net.py
    .venv/bin/python tools/make_prototxt.py --python-unpool   # SegNet with the Python Unpool layer (a stock Caffe)
    .venv/bin/python tools/make_prototxt.py --googlenet-mirror   # GoogLeNet trains on randomly mirrored crops
"""
import argparse
import importlib
import inspect
import sys
from pathlib import Path

from dcme_layers.util import cli
from dcme_layers.util.files import atomic_write

REPO = Path(__file__).resolve().parents[1]


def generators(repo=REPO):
    """Names of the networks with a generator: models/<name>/net.py, sorted."""
    return sorted(p.parent.name for p in (repo / "models").glob("*/net.py"))


def generate_all(names=None, repo=REPO, **options):
    """{file name in prototxt/: text} from models/<name>/net.py for each of ``names`` (default: every one);
    ``options`` go to the generators that take them (``python_unpool``: SegNet; ``mirror``: GoogLeNet)."""
    files = {}
    for name in names or generators(repo):
        try:
            generate = importlib.import_module(f"models.{name}.net").generate
            params = inspect.signature(generate).parameters
            out = generate(**{k: v for k, v in options.items() if k in params})
        except Exception as e:
            raise RuntimeError(f"models/{name}/net.py: generate() failed: {type(e).__name__}: {e}") from e
        for fname, text in out.items():
            if fname in files:
                raise RuntimeError(f"models/{name}/net.py: {fname} is generated twice")
            files[fname] = text
    return files


def stale(files, out_dir):
    """File names whose committed text differs from the generated one (or that are missing)."""
    return [f for f, text in sorted(files.items())
            if not (out_dir / f).is_file() or (out_dir / f).read_text() != text]


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="networks (folders of models/) to generate; default: all")
    ap.add_argument("--out", type=Path, default=REPO / "prototxt", help="output folder (default: prototxt/)")
    ap.add_argument("--check", action="store_true", help="only check that the files are current; exit 1 if not")
    ap.add_argument("--python-unpool", action="store_true",
                    help="SegNet with the Python Unpool layer (dcme_layers.net.unpool) instead of the native one, for "
                         "a Caffe built without dcme-caffe's native layers (conda-forge's, a system one)")
    ap.add_argument("--googlenet-mirror", action="store_true",
                    help="GoogLeNet's train nets mirror the crops at random (BVLC's augmentation); the default "
                         "follows the paper, which uses no data augmentation")
    return ap


def run(args):
    unknown = sorted(set(args.names) - set(generators()))
    if unknown:
        print(f"make_prototxt: no generator models/{unknown[0]}/net.py (have: {' '.join(generators())})",
              file=sys.stderr)
        return 1
    files = generate_all(args.names, python_unpool=args.python_unpool, mirror=args.googlenet_mirror)
    changed = stale(files, args.out)
    if args.check:
        if changed:
            print(f"make_prototxt: stale in {args.out} (run tools/make_prototxt.py): {' '.join(changed)}",
                  file=sys.stderr)
            return 1
        print(f"{len(files)} files in {args.out} are current")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for f in changed:
        atomic_write(args.out / f, lambda tmp: tmp.write_text(files[f]))
        print(f"wrote {args.out / f}")
    print(f"{len(files)} files, {len(changed)} rewritten")
    return 0


def main(argv=None):
    return cli.run_tool("make_prototxt", parser, run, argv, errors=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
