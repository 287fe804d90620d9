"""Locate and fingerprint Caffe's source for tools/setup_caffe.sh (standard library only, Python >= 3.9; the script
runs it with the system python3 and the repository on PYTHONPATH, for dcme_layers.util.cli).

Commands:
  debsrc --suite S [--apt-dir D]  print a deb-src deb822 stanza built from the machine's own Debian archive entry
  tree-hash DIR                   print the sha256 of a source tree's content (skips top-level .git, .pc, debian)
  find-root DIR                   print the Caffe source root inside DIR (DIR itself or its single such subfolder)
Errors print one line on stderr and exit 1.
"""
import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

from dcme_layers.util import cli

OWN_FILE = "dcme-caffe-src.sources"  # the entry earlier versions of setup_caffe.sh added to the system's sources
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_RELEASES = "buster|bullseye|bookworm|trixie|forky|duke|sid|stable|oldstable|oldoldstable|testing|unstable"
DEBIAN_SUITE = re.compile(rf"^(?:{_RELEASES})(?:-(?:updates|backports|proposed-updates))?$")
TREE_SKIP = {".git", ".pc", "debian"}


class SourceError(Exception):
    """A one-line, user-facing failure."""


def parse_deb822(text):
    """Yield the enabled stanzas of a .sources file as {lowercase field: value}; multi-line values keep their lines."""
    stanzas, cur, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line.rstrip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    return [s for s in stanzas if s.get("enabled", "yes").strip().lower() != "no"]


def parse_one_line(text):
    """Return the entries of a one-line sources.list as dicts keyed like deb822 fields."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        kind, opts, uri, suite, comps = m.groups()
        entry = {"types": kind, "uris": uri, "suites": suite, "components": comps}
        for opt in (opts or "").split():
            name, _, value = opt.partition("=")
            if name.lower() == "signed-by":
                entry["signed-by"] = value.replace(",", " ")
        entries.append(entry)
    return entries


def source_files(apt_dir):
    """The apt source files in apt's order: sources.list, then sources.list.d/*.list and *.sources sorted by name."""
    apt_dir = Path(apt_dir)
    files = [apt_dir / "sources.list"]
    listd = apt_dir / "sources.list.d"
    if listd.is_dir():
        files += sorted(p for p in listd.iterdir() if p.suffix in (".list", ".sources") and p.name != OWN_FILE)
    return [p for p in files if p.is_file()]


def find_debian_entry(apt_dir):
    """Return (uri, signed_by, path) of the first Debian archive entry (main, a release suite, not -security)."""
    for path in source_files(apt_dir):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)
        for e in entries:
            types, suites = e.get("types", "").split(), e.get("suites", "").split()
            if not ({"deb", "deb-src"} & set(types)) or "main" not in e.get("components", "").split():
                continue
            if any(DEBIAN_SUITE.match(s) for s in suites) and e.get("uris", "").split():
                return e["uris"].split()[0].rstrip("/"), e.get("signed-by", "").rstrip() or DEFAULT_KEYRING, path
    raise SourceError(
        f"no Debian archive is configured in {Path(apt_dir) / 'sources.list'} or "
        f"{Path(apt_dir) / 'sources.list.d'}/*.sources (*.list); add your Debian mirror to apt's sources, or build "
        "from a Caffe source tree with CAFFE_SRC=/path (see README, \"Installing without Debian's bullseye source\")")


def debsrc_stanza(suite, apt_dir="/etc/apt"):
    """The deb822 text of a source-only entry for `suite` on the configured Debian archive."""
    uri, signed_by, path = find_debian_entry(apt_dir)
    return ("# Written by dcme-caffe tools/setup_caffe.sh for its own apt run (the system's sources are unchanged): "
            "source packages only, to build Caffe (not packaged for Debian 12).\n"
            f"# URI and keyring taken from {path}.\n"
            f"Types: deb-src\nURIs: {uri}\nSuites: {suite}\nComponents: main\n"
            f"Signed-By:{'' if signed_by.startswith(chr(10)) else ' '}{signed_by}\n")


def tree_hash(root):
    """sha256 hex of the sorted (type, relative POSIX path, content sha256 or link target) records under root."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root} is not a directory")
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in TREE_SKIP]
            filenames = [f for f in filenames if f not in TREE_SKIP]
        for name in dirnames + filenames:
            p = here / name
            rel = os.fsencode(p.relative_to(root).as_posix())
            if p.is_symlink():
                records.append(b"L\0" + rel + b"\0" + os.fsencode(os.readlink(p)))
            elif name in filenames and p.is_file():
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                records.append(b"F\0" + rel + b"\0" + h.hexdigest().encode())
    total = hashlib.sha256()
    for rec in sorted(records):
        total.update(rec + b"\n")
    return total.hexdigest()


def _is_caffe_root(d):
    return (d / "CMakeLists.txt").is_file() and (d / "src" / "caffe").is_dir()


def find_root(directory):
    """DIR if it is a Caffe source root, else its single subdirectory that is one (absolute path)."""
    d = Path(directory).absolute()
    if _is_caffe_root(d):
        return d
    subs = [s for s in sorted(d.iterdir()) if s.is_dir() and _is_caffe_root(s)] if d.is_dir() else []
    if len(subs) != 1:
        raise SourceError(f"{directory} holds no Caffe source tree (CMakeLists.txt and src/caffe/)"
                          if not subs else f"{directory} holds {len(subs)} Caffe source trees; expected one")
    return subs[0]


def parser():
    ap = argparse.ArgumentParser(prog="caffe_source", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("debsrc", help="print a deb-src stanza from the configured Debian archive")
    p.add_argument("--suite", required=True)
    p.add_argument("--apt-dir", default="/etc/apt")
    sub.add_parser("tree-hash", help="print a source tree's content hash").add_argument("dir")
    sub.add_parser("find-root", help="print the Caffe source root inside DIR").add_argument("dir")
    return ap


def run(args):
    if args.cmd == "debsrc":
        sys.stdout.write(debsrc_stanza(args.suite, args.apt_dir))
    elif args.cmd == "tree-hash":
        print(tree_hash(args.dir))
    else:
        print(find_root(args.dir))


def main(argv=None):
    """CLI entry point; returns the exit status."""
    return cli.run_tool("caffe_source", parser, run, argv, errors=(SourceError,))


if __name__ == "__main__":
    sys.exit(main())
