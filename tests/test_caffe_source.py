"""tools/caffe_source.py: the deb-src stanza from apt's own Debian archive, source-tree hashing and root finding."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import caffe_source as cs

SCRIPT = Path(cs.__file__)

MIRROR = "http://mirror.example.org/debian"
KEY = "/usr/share/keyrings/example-mirror.gpg"
SECURITY = f"""Types: deb
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: {KEY}
"""
NODESOURCE = """Types: deb
URIs: https://node.example.com/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def apt_dir(tmp_path, sources_list=None, **listd):
    """An apt dir with an optional one-line sources.list and sources.list.d files (name=text, '_' for '.')."""
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if sources_list is not None:
        (d / "sources.list").write_text(sources_list)
    for name, text in listd.items():
        (d / "sources.list.d" / name.replace("_", ".").replace("~", "-")).write_text(text)
    return d


def fields(stanza):
    return dict(line.split(": ", 1) for line in stanza.splitlines() if line and not line.startswith("#"))


@pytest.mark.slow
def test_deb822_mirror_uri_and_signed_by(tmp_path):
    d = apt_dir(tmp_path, debian_sources=f"""# my mirror
Types: deb
URIs: {MIRROR}/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: {KEY}

""" + SECURITY)
    r = cli("debsrc", "--suite", "bullseye", "--apt-dir", d)
    assert r.returncode == 0, r.stderr
    assert fields(r.stdout) == {"Types": "deb-src", "URIs": MIRROR, "Suites": "bullseye", "Components": "main",
                                "Signed-By": KEY}
    assert r.stdout.startswith("# Written by dcme-caffe tools/setup_caffe.sh")
    assert f"# URI and keyring taken from {d / 'sources.list.d' / 'debian.sources'}." in r.stdout


def test_disabled_and_commented_stanzas_skipped(tmp_path):
    d = apt_dir(tmp_path, a_sources=f"""Types: deb
URIs: http://old.example.org/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
# URIs: http://commented.example.org/debian
URIs: {MIRROR}
Suites: stable-backports
Components: main
""")
    uri, signed_by, _ = cs.find_debian_entry(d)
    assert (uri, signed_by) == (MIRROR, cs.DEFAULT_KEYRING)


@pytest.mark.slow
def test_security_and_third_party_only_is_one_line_error(tmp_path):
    d = apt_dir(tmp_path, security_sources=SECURITY, nodesource_sources=NODESOURCE,
                google_list="deb [signed-by=/g.gpg] https://pkg.example.com/cloud-sdk cloud-sdk-bookworm main\n")
    r = cli("debsrc", "--suite", "bullseye", "--apt-dir", d)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("caffe_source: no Debian archive is configured")
    assert str(d / "sources.list") in r.stderr and f"{d / 'sources.list.d'}/*.sources" in r.stderr
    assert "CAFFE_SRC=" in r.stderr


@pytest.mark.slow
def test_missing_apt_dir_same_error(tmp_path):
    r = cli("debsrc", "--suite", "bullseye", "--apt-dir", tmp_path / "nope")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"caffe_source: no Debian archive is configured in {tmp_path / 'nope' / 'sources.list'}")


def test_one_line_with_signed_by_option(tmp_path):
    d = apt_dir(tmp_path, sources_list=f"""# comment
deb http://security.example.org/debian-security bookworm-security main
deb [arch=amd64 signed-by={KEY}] {MIRROR}/ bookworm main non-free-firmware  # trailing
""")
    assert cs.find_debian_entry(d)[:2] == (MIRROR, KEY)


def test_one_line_without_signed_by_uses_default_keyring(tmp_path):
    d = apt_dir(tmp_path, sources_list=f"deb-src {MIRROR} sid main\n")
    out = cs.debsrc_stanza("bullseye", d)
    assert fields(out)["Signed-By"] == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert fields(out)["URIs"] == MIRROR


def test_one_line_without_main_does_not_match(tmp_path):
    d = apt_dir(tmp_path, sources_list=f"deb {MIRROR} bookworm contrib\n")
    with pytest.raises(cs.SourceError):
        cs.find_debian_entry(d)


def test_sources_list_wins_over_list_d(tmp_path):
    d = apt_dir(tmp_path, sources_list="deb http://first.example.org/debian bullseye main\n",
                a_list=f"deb {MIRROR} bookworm main\n",
                debian_sources=f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n")
    uri, _, path = cs.find_debian_entry(d)
    assert uri == "http://first.example.org/debian" and path == d / "sources.list"


def test_list_d_sorted_by_name(tmp_path):
    d = apt_dir(tmp_path, b_sources="Types: deb\nURIs: http://b.example.org/debian\nSuites: trixie\nComponents: main\n",
                a_list="deb http://a.example.org/debian trixie main\n")
    assert cs.find_debian_entry(d)[0] == "http://a.example.org/debian"


@pytest.mark.slow
def test_own_file_and_disabled_by_farm_ignored(tmp_path):
    d = apt_dir(tmp_path, **{
        "dcme~caffe~src_sources": f"Types: deb-src\nURIs: {MIRROR}\nSuites: bullseye\nComponents: main\n",
        "debian_sources_disabled~by~farm": f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n",
        "debian_list_save": f"deb {MIRROR} bookworm main\n",
        "nodesource_sources": NODESOURCE})
    assert (d / "sources.list.d" / "dcme-caffe-src.sources").is_file()
    r = cli("debsrc", "--suite", "bullseye", "--apt-dir", d)
    assert r.returncode == 1 and "no Debian archive" in r.stderr


def test_module_names_no_real_registry_host():
    text = SCRIPT.read_text()
    for host in ("debian.org", "pypi.org", "pythonhosted"):
        assert host not in text


def make_tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


TREE = {"CMakeLists.txt": b"project(Caffe)\n", "src/caffe/net.cpp": b"int x;\n",
        "include/caffe/net.hpp": b"#pragma once\n"}


@pytest.mark.slow
def test_tree_hash_ignores_vcs_packaging_empty_dirs_and_mtimes(tmp_path):
    a = make_tree(tmp_path / "a", TREE)
    b = make_tree(tmp_path / "b", {**TREE, ".git/HEAD": b"ref\n", "debian/rules": b"x\n", ".pc/applied": b"p\n"})
    (b / "empty" / "dir").mkdir(parents=True)
    os.utime(b / "CMakeLists.txt", (0, 0))
    (b / "src" / "caffe" / "net.cpp").chmod(0o755)
    r = cli("tree-hash", a)
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    assert r.stdout.strip() == cs.tree_hash(a) == cs.tree_hash(b)
    # a nested "debian" folder is content, only the top-level one is skipped
    make_tree(b, {"src/debian/x": b"y"})
    assert cs.tree_hash(a) != cs.tree_hash(b)


def test_tree_hash_changes_with_a_byte_or_a_rename(tmp_path):
    a = make_tree(tmp_path / "a", TREE)
    before = cs.tree_hash(a)
    (a / "src/caffe/net.cpp").write_bytes(b"int y;\n")
    changed = cs.tree_hash(a)
    assert changed != before
    (a / "src/caffe/net.cpp").rename(a / "src/caffe/net2.cpp")
    assert cs.tree_hash(a) not in (before, changed)


def test_tree_hash_link_differs_from_file_with_same_text(tmp_path):
    a = make_tree(tmp_path / "a", {"x": b"target"})
    b = tmp_path / "b"
    b.mkdir()
    (b / "x").symlink_to("target")
    assert cs.tree_hash(a) != cs.tree_hash(b)


@pytest.mark.slow
def test_tree_hash_not_a_directory(tmp_path):
    r = cli("tree-hash", tmp_path / "missing")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is not a directory" in r.stderr


@pytest.mark.slow
def test_find_root_flat_and_single_subfolder(tmp_path):
    flat = make_tree(tmp_path / "flat", TREE)
    assert cs.find_root(flat) == flat
    unpacked = tmp_path / "unpacked"
    make_tree(unpacked / "caffe-1.0", TREE)
    (unpacked / "notes").mkdir()
    r = cli("find-root", unpacked)
    assert r.returncode == 0 and r.stdout.strip() == str(unpacked / "caffe-1.0")


@pytest.mark.slow
def test_find_root_error(tmp_path):
    make_tree(tmp_path / "x", {"CMakeLists.txt": b"", "src/other/a.c": b""})
    r = cli("find-root", tmp_path / "x")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr == f"caffe_source: {tmp_path / 'x'} holds no Caffe source tree (CMakeLists.txt and src/caffe/)\n"
