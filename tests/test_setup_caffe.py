"""tools/setup_caffe.sh's source routes, run for real with `--source-only` (fetch, verify, patch, print the build
key; no compile) in a scratch cache: Debian's source package with every patch of dcme_layers/native (CUDA 13 and
cuDNN 9 included) applying cleanly, a BVLC tree or tarball checked by its content hash (a changed file is refused
with one line), the build key that depends on the source alone, the message of a failed Debian fetch; a broken .venv
made again, and a second `make setup` that rebuilds nothing."""
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import helpers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tools" / "setup_caffe.sh"
CACHE = Path(os.environ.get("DCME_CACHE", Path.home() / ".cache" / "dcme-caffe"))
VERSION = "1.0.0+git20180821.99bd997-8"
DSC = CACHE / "src" / f"caffe_{VERSION}.dsc"
ORIG = CACHE / "src" / "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
PATCHES = sorted((REPO / "dcme_layers" / "native" / "patches").glob("*.patch"))
BVLC_PATCHES = sorted((REPO / "dcme_layers" / "native" / "patches" / "bvlc").glob("*.patch"))

needs_source = pytest.mark.skipif(
    not DSC.exists(),
    reason=f"no cached Debian source in {CACHE / 'src'} (make setup fetches it unless Caffe is built from CAFFE_SRC)")


def setup_source(tmp_path, **env):
    """Run `tools/setup_caffe.sh --source-only` on a scratch cache; return (returncode, stdout + stderr)."""
    full = {k: v for k, v in os.environ.items() if k not in ("CAFFE_SRC", "DCME_APT_DIR")}
    full.update(DCME_CACHE=str(tmp_path / "cache"), **env)
    run = subprocess.run(["bash", str(SETUP), "--source-only"], cwd=REPO, env=full, capture_output=True, text=True,
                         timeout=600)
    return run.returncode, run.stdout + run.stderr


def built_tree(tmp_path, key):
    return tmp_path / "cache" / f"build-{key}" / "fresh"


def key_of(out):
    return out.split("build key: ")[1].split()[0]


@needs_source
def test_debian_source_takes_every_patch_and_keeps_the_build_key(tmp_path):
    rc, out = setup_source(tmp_path, CAFFE_SRC=str(DSC))
    assert rc == 0, out
    assert f"{len(PATCHES)} patches applied" in out
    key = key_of(out)
    assert key.startswith(f"caffe-deb-{VERSION}-py")
    tree = built_tree(tmp_path, key)
    # CUDA 13 (removed cudaDeviceProp fields), cuDNN 9 and the native layer are in the patched tree
    assert "cudaDevAttrClockRate" in (tree / "src/caffe/common.cpp").read_text()
    assert "cudnnGetConvolutionForwardAlgorithm(" not in (tree / "src/caffe/layers/cudnn_conv_layer.cpp").read_text()
    assert (tree / "src/caffe/layers/unpool_layer.cu").exists()
    # The same source from the default route (Debian's archive) has the same key: the key names the source and the
    # build, never the route, so a machine that built once finds its build without fetching again.
    # .venv's build (the variant the scratch run inherits) has this key exactly when it was built from this source.
    prefix = Path((REPO / ".venv" / ".caffe_prefix").read_text().strip())
    variant = dict(line.split("=", 1) for line in (REPO / ".venv" / ".caffe_variant").read_text().split())
    assert prefix.name.startswith(key + "-") == (variant["SRC_ID"] == f"deb-{VERSION}"), (prefix, key, variant)


@needs_source
def test_bvlc_tree_and_tarball_pass_the_content_hash(tmp_path):
    tree = tmp_path / "caffe-bvlc"
    with tarfile.open(ORIG) as tar:
        tar.extractall(tree)
    (tree / ".git").mkdir()  # a clone's .git does not count
    (tree / ".git" / "HEAD").write_text("99bd99795dcdf0b1d3086a8d67ab1782a8a08383\n")
    rc, out = setup_source(tmp_path, CAFFE_SRC=str(tree))
    assert rc == 0, out
    assert key_of(out).startswith("caffe-bvlc-99bd997-py")
    assert f"{len(PATCHES) + len(BVLC_PATCHES)} patches applied" in out
    fresh = built_tree(tmp_path, key_of(out))
    assert "cv::IMREAD_COLOR" in (fresh / "src/caffe/util/io.cpp").read_text()  # patches/bvlc: OpenCV 4
    # the tarball itself, in a fresh cache
    rc, out = setup_source(tmp_path / "tarball", CAFFE_SRC=str(ORIG))
    assert rc == 0, out


@needs_source
def test_changed_bvlc_tree_is_refused_with_one_line(tmp_path):
    tree = tmp_path / "caffe-bvlc"
    with tarfile.open(ORIG) as tar:
        tar.extractall(tree)
    layer = tree / "src/caffe/layers/pooling_layer.cpp"
    layer.write_text(layer.read_text().replace("max", "min", 1))
    rc, out = setup_source(tmp_path, CAFFE_SRC=str(tree))
    assert rc == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert f"{tree} is not BVLC Caffe at commit 99bd997" in lines[0] and "git -C" in lines[0]
    assert not list((tmp_path / "cache").glob("source-*/.verified"))  # nothing unverified is kept as the source


def test_failed_debian_fetch_names_the_other_route(tmp_path):
    """A mirror that does not answer (a closed port on loopback): the message gives the CAFFE_SRC commands."""
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "mirror.sources").write_text(
        "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\nComponents: main\n")
    rc, out = setup_source(tmp_path, DCME_APT_DIR=str(apt))
    assert rc == 1, out
    assert "could not be fetched" in out and "http://127.0.0.1:9/debian" in out
    assert "git clone https://github.com/BVLC/caffe.git" in out and "checkout 99bd997" in out
    assert "make setup CAFFE_SRC=" in out and ".dsc" in out
    assert not (tmp_path / "cache" / "src").exists()  # no half-fetched source is kept


def test_no_configured_debian_archive_is_one_line(tmp_path):
    apt = tmp_path / "apt"
    apt.mkdir()
    (apt / "sources.list").write_text("deb https://node.example.com/node_20.x nodistro main\n")
    rc, out = setup_source(tmp_path, DCME_APT_DIR=str(apt))
    assert rc == 1
    err = [line for line in out.splitlines() if line.startswith("caffe_source:")]
    assert len(err) == 1 and "no Debian archive is configured" in err[0] and "CAFFE_SRC" in err[0], out


def test_a_broken_venv_is_made_again_not_trusted(tmp_path):
    """A .venv left by a failed attempt (a python without pip, as `python3 -m venv` leaves it when python3-venv is
    missing) is deleted and created again by the venv step, which then installs requirements.txt."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tools" / "setup_caffe.sh").write_text(SETUP.read_text())
    (repo / "requirements.txt").write_text("# nothing to install\n")
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    (repo / ".venv" / "stale").write_text("from the failed attempt\n")
    assert subprocess.run([str(repo / ".venv" / "bin" / "python"), "-m", "pip", "--version"],
                          capture_output=True).returncode != 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    run = subprocess.run(["bash", str(repo / "tools" / "setup_caffe.sh"), "--venv-only"], cwd=repo, timeout=300,
                         env=dict(env, DCME_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1"), capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "not a working venv with pip" in run.stdout and "creating" in run.stdout
    assert not (repo / ".venv" / "stale").exists()
    assert subprocess.run([str(repo / ".venv" / "bin" / "python"), "-m", "pip", "--version"],
                          capture_output=True).returncode == 0
    # a working venv is kept as it is on the next run
    (repo / ".venv" / "kept").write_text("")
    again = subprocess.run(["bash", str(repo / "tools" / "setup_caffe.sh"), "--venv-only"], cwd=repo, timeout=300,
                           env=dict(env, DCME_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1"),
                           capture_output=True, text=True)
    assert again.returncode == 0 and (repo / ".venv" / "kept").exists(), again.stdout + again.stderr


@pytest.mark.usefixtures("caffe")
def test_setup_second_run_rebuilds_nothing():
    """`make setup` is idempotent: a warm run reuses the venv and the cached build."""
    import caffe as c

    # Built by tools/setup_caffe.sh: the prefix that .venv records holds its .complete stamp, written last.
    stamp = Path((REPO / ".venv" / ".caffe_prefix").read_text().strip()) / ".complete"
    assert stamp in [p / ".complete" for p in Path(c.__file__).resolve().parents]
    before = stamp.stat().st_mtime_ns
    run = subprocess.run(["make", "--no-print-directory", "setup"], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=helpers.clean_env())
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "ready:" in out
    for word in ("compiling", "building", "installing requirements", "creating"):
        assert word not in out, out
    assert stamp.stat().st_mtime_ns == before
