#!/usr/bin/env bash
# `make setup`: the Python virtual environment (.venv) and a CPU-only BVLC Caffe with pycaffe and Python layers.
#
# Idempotent. A second run checks stamps and returns in seconds.
#   1. .venv from requirements.txt (re-installed only when requirements.txt changes).
#   2. Caffe: if `python -c "import caffe"` already works (a conda env from environment.yml, a system package),
#      that Caffe is used and nothing is built. Otherwise Debian's own caffe source package
#      ($CAFFE_DEB_VERSION, suite bullseye) is fetched with apt from a deb-src entry in
#      /etc/apt/sources.list.d/dcme-caffe-src.sources, its checksums verified against the .dsc (dpkg-source),
#      patched for protobuf 3.21, built out of tree against Debian 12's libraries and installed into
#      $DCME_CACHE/caffe-<version>-py<X.Y>-numpy<version> (default DCME_CACHE=~/.cache/dcme-caffe), reused after.
#   3. pycaffe and the repository on the venv's path (.pth), and `.venv/bin/caffe`, a wrapper that gives the
#      embedded interpreter pycaffe, the venv's site-packages and dcme_layers.
set -euo pipefail

# The whole script is one function, so bash parses it completely before running (safe to edit while it runs).
main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3}
CAFFE_DEB_VERSION=1.0.0+git20180821.99bd997-8
CACHE=${DCME_CACHE:-$HOME/.cache/dcme-caffe}
JOBS=${JOBS:-$(nproc)}
APT_PACKAGES="build-essential cmake dpkg-dev libboost-dev libboost-filesystem-dev libboost-system-dev
  libboost-thread-dev libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev libleveldb-dev liblmdb-dev
  libsnappy-dev libopenblas-dev libprotobuf-dev libprotoc-dev protobuf-compiler libopencv-dev"

mkdir -p "$CACHE/logs"
say() { echo "[setup] $*"; }
fail() { # step, log
  echo "[setup] FAILED: $1. Read $2, fix the cause, then re-run 'make setup' (finished steps are kept)." >&2
  exit 1
}
run_logged() { # step log cmd...
  local step=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 || fail "$step" "$log"
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. virtual environment ------------------------------------------------------------------------------------
EXTERNAL_CAFFE=0
if [ ! -x "$VENV/bin/python" ] && "$PYTHON" -c "import caffe" >/dev/null 2>&1; then
  EXTERNAL_CAFFE=1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if [ $EXTERNAL_CAFFE = 1 ]; then
    run_logged "creating the venv" "$CACHE/logs/venv.log" "$PYTHON" -m venv --system-site-packages "$VENV"
    command -v "$PYTHON" >"$VENV/.external"
  else
    run_logged "creating the venv" "$CACHE/logs/venv.log" "$PYTHON" -m venv "$VENV"
  fi
fi
VPY=$VENV/bin/python
REQ_HASH=$(sha256sum "$ROOT/requirements.txt" | cut -c1-16)
if [ -f "$VENV/.external" ]; then
  # A conda env from environment.yml (or a system Caffe) supplies the packages: the venv sees them, pip adds nothing.
  say "using the packages of $(cat "$VENV/.external") (environment.yml); requirements.txt is not installed"
elif [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQ_HASH" ]; then
  say "installing requirements.txt into .venv (log: $CACHE/logs/pip.log)"
  run_logged "pip install -r requirements.txt" "$CACHE/logs/pip.log" \
    "$VPY" -m pip install --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$REQ_HASH" >"$VENV/.requirements"
fi
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
NPVER=$("$VPY" -c 'import numpy; print(numpy.__version__)')
PYLIBDIR=$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
echo "$ROOT" >"$SITE/dcme_caffe_repo.pth"

# --- 2. Caffe ------------------------------------------------------------------------------------------------------
rm -f "$SITE/dcme_caffe_pycaffe.pth"
if "$VPY" -c "import caffe" >/dev/null 2>&1; then
  CAFFE_PY=$("$VPY" -c 'import caffe, os; print(os.path.dirname(os.path.dirname(caffe.__file__)))')
  CAFFE_BIN=$(command -v caffe || true)
  [ "$CAFFE_BIN" = "$VENV/bin/caffe" ] && CAFFE_BIN=$(cat "$VENV/.caffe_bin" 2>/dev/null || true)
  CAFFE_LIB=""
  say "using the Caffe that python already imports: $CAFFE_PY"
else
  PREFIX=$CACHE/caffe-$CAFFE_DEB_VERSION-py$PYVER-numpy$NPVER
  if [ ! -f "$PREFIX/.complete" ]; then
    T0=$(date +%s)
    say "no importable Caffe: building Debian's caffe $CAFFE_DEB_VERSION (CPU_ONLY) into $PREFIX"
    missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $APT_PACKAGES 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
    n_known=$(dpkg-query -W -f='${Package}\n' $APT_PACKAGES 2>/dev/null | wc -l || true)
    if [ -n "$missing" ] || [ "$n_known" -lt "$(echo $APT_PACKAGES | wc -w)" ]; then
      say "installing Debian build dependencies (log: $CACHE/logs/apt.log)"
      as_root apt-get update -q >"$CACHE/logs/apt.log" 2>&1 || fail "apt-get update" "$CACHE/logs/apt.log"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PACKAGES \
        >>"$CACHE/logs/apt.log" 2>&1 || fail "apt-get install of the build dependencies" "$CACHE/logs/apt.log"
    fi
    SRC=$CACHE/src
    if [ ! -f "$SRC/caffe_$CAFFE_DEB_VERSION.dsc" ]; then
      say "fetching the caffe source package (log: $CACHE/logs/source.log)"
      as_root tee /etc/apt/sources.list.d/dcme-caffe-src.sources >/dev/null <<'EOF'
# Added by dcme-caffe tools/setup_caffe.sh: source packages only, to build Caffe (not packaged for Debian 12).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
      as_root apt-get update -q >"$CACHE/logs/source.log" 2>&1 || fail "apt-get update (deb-src bullseye)" "$CACHE/logs/source.log"
      rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
      (cd "$SRC.tmp" && apt-get source --download-only "caffe=$CAFFE_DEB_VERSION") >>"$CACHE/logs/source.log" 2>&1 \
        || fail "apt-get source caffe=$CAFFE_DEB_VERSION" "$CACHE/logs/source.log"
      rm -rf "$SRC" && mv "$SRC.tmp" "$SRC"
    fi
    WORK=$CACHE/work-$CAFFE_DEB_VERSION
    rm -rf "$WORK" && mkdir -p "$WORK"
    # dpkg-source verifies every file's size and checksums against the .dsc, then applies Debian's patches.
    run_logged "unpacking and verifying the source (checksums from the .dsc)" "$CACHE/logs/unpack.log" \
      dpkg-source --require-strong-checksums -x "$SRC/caffe_$CAFFE_DEB_VERSION.dsc" "$WORK/src"
    # protobuf 3.21: CodedInputStream::SetTotalBytesLimit takes one argument.
    sed -i 's/SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)/SetTotalBytesLimit(kProtoReadBytesLimit)/' \
      "$WORK/src/src/caffe/util/io.cpp"
    grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit)' "$WORK/src/src/caffe/util/io.cpp" \
      || fail "patching src/caffe/util/io.cpp for protobuf 3.21" "$WORK/src/src/caffe/util/io.cpp"
    say "configuring (log: $CACHE/logs/cmake.log)"
    run_logged "cmake configure" "$CACHE/logs/cmake.log" \
      cmake -S "$WORK/src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DBLAS=Open \
        -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=3 -DUSE_LMDB=ON -DUSE_OPENCV=ON \
        -DUSE_LEVELDB=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF \
        -DPYTHON_EXECUTABLE="$VPY" -DPYTHON_INCLUDE_DIR="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        -DPYTHON_LIBRARY="$PYLIBDIR/libpython$PYVER.so" \
        -DNUMPY_INCLUDE_DIR="$("$VPY" -c 'import numpy; print(numpy.get_include())')" \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_RPATH="$PREFIX/lib;$PYLIBDIR"
    say "compiling with $JOBS jobs, about 5 minutes on 2 cores (log: $CACHE/logs/build.log)"
    run_logged "compiling Caffe" "$CACHE/logs/build.log" cmake --build "$WORK/build" -j "$JOBS"
    # Installed in place (the rpaths name $PREFIX); only the .complete stamp, written last, marks it usable.
    rm -rf "$PREFIX"
    run_logged "installing Caffe" "$CACHE/logs/install.log" cmake --install "$WORK/build"
    rm -rf "$WORK"
    date -u +%FT%TZ >"$PREFIX/.complete"
    say "Caffe built in $(( $(date +%s) - T0 )) s"
  fi
  # Debian's patches install pycaffe under lib/python3/dist-packages; find it rather than assume.
  CAFFE_PY=$(dirname "$(dirname "$(find "$PREFIX" -path '*/caffe/__init__.py' -print -quit)")")
  CAFFE_BIN=$PREFIX/bin/caffe
  CAFFE_LIB=$PREFIX/lib
  echo "$CAFFE_PY" >"$SITE/dcme_caffe_pycaffe.pth"
fi

# --- 3. the `caffe` command in .venv/bin -----------------------------------------------------------------------------
if [ -n "${CAFFE_BIN:-}" ] && [ -x "$CAFFE_BIN" ]; then
  echo "$CAFFE_BIN" >"$VENV/.caffe_bin"
  # The caffe binary embeds the libpython it was linked with and does not see the venv. Its interpreter gets, through
  # PYTHONPATH, a sitecustomize that sets sys.path to the venv's own: the stdlib, the venv's site-packages, pycaffe
  # and the repository (dcme_layers), in that order. Putting site-packages itself on PYTHONPATH would put it before
  # the stdlib, where PyPI's old `typing` backport (a cityscapesscripts dependency) shadows the stdlib module.
  EMBED=$VENV/lib/dcme-caffe-embed
  mkdir -p "$EMBED"
  "$VPY" -c '
import sys
here, paths = sys.argv[1], [p for p in sys.path if p]
print("# Written by tools/setup_caffe.sh for .venv/bin/caffe: the embedded interpreter gets the venv sys.path.")
print("import os, sys")
print(f"_extra = [p for p in os.environ.get(\"PYTHONPATH\", \"\").split(os.pathsep) if p and p != {here!r}]")
print(f"sys.path[:] = _extra + {paths!r}")' "$EMBED" >"$EMBED/sitecustomize.py.tmp"
  mv "$EMBED/sitecustomize.py.tmp" "$EMBED/sitecustomize.py"
  cat >"$VENV/bin/caffe.tmp" <<EOF
#!/usr/bin/env bash
# Written by tools/setup_caffe.sh: $CAFFE_BIN with the venv's Python path ($EMBED/sitecustomize.py).
export PYTHONPATH="$EMBED\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="${CAFFE_LIB:+$CAFFE_LIB:}$PYLIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$CAFFE_BIN" "\$@"
EOF
  chmod +x "$VENV/bin/caffe.tmp" && mv "$VENV/bin/caffe.tmp" "$VENV/bin/caffe"
else
  say "warning: no caffe binary found next to the importable pycaffe; 'caffe train' is unavailable" >&2
fi

"$VPY" -c "import caffe, dcme_layers" 2>"$CACHE/logs/import.log" || fail "import caffe from .venv" "$CACHE/logs/import.log"
say "ready: $("$VPY" -c 'import caffe, os; print(os.path.dirname(caffe.__file__))'); caffe command: $VENV/bin/caffe"
}

main "$@"
