#!/usr/bin/env bash
# `make setup`: the Python virtual environment (.venv) and BVLC Caffe with pycaffe, Python layers and the project's
# native layers (dcme_layers/native: Unpool), CPU-only by default, or with CUDA.
#
#   make setup                          CPU build (what CI uses), or the variant .venv already points at
#   make setup CUDA=1 [CUDNN=1]         CUDA 13 build (NCCL for -gpu all; CUDNN=1 adds cuDNN 9), .venv points at it
#   make setup CUDA=0                   back to the CPU build (both stay cached)
#   make setup CAFFE_SRC=/path          build from a BVLC tree at 99bd997 (git clone or tarball) or a Debian .dsc
#   bash tools/setup_caffe.sh --source-only   fetch, verify and patch the source, print its build key, stop
#   bash tools/setup_caffe.sh --venv-only     step 1 alone: a working .venv with requirements.txt, stop
#
# Variables: CUDA_ARCH ("90", "80 90": the GPU architectures; default the visible GPU's, else $DEFAULT_CUDA_ARCHS),
# CUDA_HOME (a CUDA 13 toolkit; default /usr/local/cuda, else the toolchain is installed from PyPI into the cache),
# DCME_CACHE (default ~/.cache/dcme-caffe), JOBS (default nproc), DCME_APT_DIR (apt configuration to take the
# Debian archive from, default /etc/apt).
#
# Idempotent: a second run checks stamps and returns in seconds.
#   1. .venv from requirements.txt (re-installed only when requirements.txt changes). Debian's python3-venv and
#      python3-dev come first when the Python lacks them (minimal images); a .venv that is not a working venv
#      with pip (left by a failed attempt) is deleted and made again, never trusted.
#   2. Caffe: a venv made from a Python that already imports caffe (conda, environment.yml) uses that Caffe.
#      Otherwise the source is, by route:
#      - Debian (default): the caffe source package $CAFFE_DEB_VERSION from the bullseye suite of the machine's own
#        configured Debian archive (URI and keyring read from apt's sources by tools/caffe_source.py), fetched with
#        apt into the cache (apt's state kept in the cache too: the system's sources are not changed), its
#        checksums verified against the .dsc by dpkg-source, which applies Debian's patches;
#      - CAFFE_SRC: a BVLC tree whose content hash must be $BVLC_TREE_SHA256 (commit 99bd997; a git clone, GitHub's
#        tarball and Debian's .orig.tar.gz all pass), or a Debian .dsc (as above, from local files).
#      The verified source is kept in the cache, so a machine that built once never fetches again. The project's
#      patches (dcme_layers/native/patches: protobuf 3.21, CUDA 13, cuDNN 9; patches/bvlc only for a BVLC tree)
#      and native layers are applied to a copy, built out of tree (kept for incremental rebuilds) and installed into
#      $DCME_CACHE/caffe-<source>-py<X.Y>-numpy<version>-<variant>-<hash of dcme_layers/native>.
#   3. pycaffe and the repository on the venv's path (.pth), and `.venv/bin/caffe`, a wrapper that gives the
#      embedded interpreter pycaffe, the venv's site-packages and dcme_layers.
set -euo pipefail

# The whole script is one function, so bash parses it completely before running (safe to edit while it runs).
main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
NATIVE=$ROOT/dcme_layers/native
PYTHON=${PYTHON:-python3}
CACHE=${DCME_CACHE:-$HOME/.cache/dcme-caffe}
JOBS=${JOBS:-$(nproc)}
SOURCE_ONLY=0
VENV_ONLY=0
[ "${1:-}" = "--source-only" ] && SOURCE_ONLY=1
[ "${1:-}" = "--venv-only" ] && VENV_ONLY=1
CAFFE_DEB_VERSION=${CAFFE_DEB_VERSION:-1.0.0+git20180821.99bd997-8}
CAFFE_DEB_SUITE=bullseye
BVLC_COMMIT=99bd997
# tools/caffe_source.py tree-hash of BVLC/caffe at 99bd997 (= Debian's caffe_1.0.0+git20180821.99bd997.orig.tar.gz).
BVLC_TREE_SHA256=0dfe9bdda75f9948fd52773267b74fc964b6beedcf2efd68aa03ceeeb32f79f2
APT_PACKAGES="build-essential cmake dpkg-dev libboost-dev libboost-filesystem-dev libboost-system-dev
  libboost-thread-dev libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev libleveldb-dev liblmdb-dev
  libsnappy-dev libopenblas-dev libprotobuf-dev libprotoc-dev protobuf-compiler libopencv-dev"
# CUDA 13.0 toolchain from PyPI (one release: nvcc and the runtime of CUDA 13.0 Update 2; drivers 580 and newer).
CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35"
CUDNN_WHEEL="nvidia-cudnn-cu13==9.12.0.46"
NCCL_WHEEL="nvidia-nccl-cu13==2.27.7"
# Without a visible GPU: Turing, Ampere (A100, RTX 30), Ada (RTX 40, L4), Hopper (H100/H200), Blackwell (B200, RTX
# 50), plus PTX of the newest for later GPUs. nvcc 13 accepts compute_75 and newer only.
DEFAULT_CUDA_ARCHS="75 80 86 89 90 100 120"

mkdir -p "$CACHE/logs"
say() { echo "[setup] $*"; }
fail() { # step, log
  echo "[setup] FAILED: $1. Read $2, fix the cause, then re-run 'make setup' (finished steps are kept)." >&2
  exit 1
}
die() { echo "[setup] $*" >&2; exit 1; }
run_logged() { # step log cmd...
  local step=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 || fail "$step" "$log"
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
srctool() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 "$ROOT/tools/caffe_source.py" "$@"; }

# --- 1. virtual environment ------------------------------------------------------------------------------------
# What creating the venv and building pycaffe need from Debian (python3 alone on minimal images).
VENV_PACKAGES=""
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || VENV_PACKAGES=" python3-venv"
"$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  >/dev/null 2>&1 || VENV_PACKAGES="$VENV_PACKAGES python3-dev"
if [ -n "$VENV_PACKAGES" ]; then
  say "installing Debian's$VENV_PACKAGES for $PYTHON (log: $CACHE/logs/apt-python.log)"
  { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends $VENV_PACKAGES; } >"$CACHE/logs/apt-python.log" 2>&1 \
    || fail "apt-get install of$VENV_PACKAGES" "$CACHE/logs/apt-python.log"
fi
if [ -e "$VENV" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  say "$VENV is not a working venv with pip (left by a failed attempt?): making it again"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  if "$PYTHON" -c "import caffe" >/dev/null 2>&1; then
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
[ $VENV_ONLY = 0 ] || { say "venv ready: $VENV"; return 0; }
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
NPVER=$("$VPY" -c 'import numpy; print(numpy.__version__)')
PYLIBDIR=$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
echo "$ROOT" >"$SITE/dcme_caffe_repo.pth"

# --- 2. Caffe ------------------------------------------------------------------------------------------------------
# The variant: CUDA / CUDNN / CUDA_ARCH from the command line, else what .venv points at now (so `make test` after
# `make setup CUDA=1` keeps the GPU build), else CPU.
# .venv/.caffe_variant holds KEY=value lines: CUDA, CUDNN, CUDA_ARCH and SRC_ID (the source route).
remembered() { sed -n "s/^$1=//p" "$VENV/.caffe_variant" 2>/dev/null || true; }
CUDA=${CUDA:-$(remembered CUDA)}
CUDA=${CUDA:-0}
CUDNN=${CUDNN:-$( [ "$CUDA" = 1 ] && remembered CUDNN || true)}
CUDNN=${CUDNN:-0}
CUDA_ARCH=${CUDA_ARCH:-$( [ "$CUDA" = 1 ] && remembered CUDA_ARCH || true)}
[ "$CUDA" = 1 ] || CUDNN=0

if [ -f "$VENV/.external" ] && [ $SOURCE_ONLY = 0 ]; then
  CAFFE_PY=$("$VPY" -c 'import caffe, os; print(os.path.dirname(os.path.dirname(caffe.__file__)))')
  CAFFE_BIN=$(command -v caffe || true)
  [ "$CAFFE_BIN" = "$VENV/bin/caffe" ] && CAFFE_BIN=$(cat "$VENV/.caffe_bin" 2>/dev/null || true)
  CAFFE_LIB=""
  say "using the Caffe that python already imports: $CAFFE_PY (its native layers are its own: see README)"
  rm -f "$SITE/dcme_caffe_pycaffe.pth"
else
  # -- 2a. source identity and build key (no fetch needed to compute them). Without CAFFE_SRC: the source .venv
  # was built from (its verified copy is in the cache), else Debian's.
  if [ -z "${CAFFE_SRC:-}" ]; then
    SRC_ID=$(remembered SRC_ID)
    SRC_ID=${SRC_ID:-deb-$CAFFE_DEB_VERSION}
  elif [ -f "$CAFFE_SRC" ] && [[ "$CAFFE_SRC" == *.dsc ]]; then
    SRC_ID=deb-$(sed -n 's/^Version: *//p' "$CAFFE_SRC" | head -n 1)
  elif [ -e "$CAFFE_SRC" ]; then
    SRC_ID=bvlc-$BVLC_COMMIT
  else
    die "CAFFE_SRC=$CAFFE_SRC does not exist; give a BVLC Caffe tree or tarball at commit $BVLC_COMMIT, or a Debian .dsc"
  fi
  if [ "$CUDA" = 1 ]; then
    if [ -z "${CUDA_ARCH:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
      CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d '.' | sort -u | xargs || true)
    fi
    CUDA_ARCH=${CUDA_ARCH:-$DEFAULT_CUDA_ARCHS}
    VARIANT=cuda13-sm$(echo "$CUDA_ARCH" | tr ' ' '_')$( [ "$CUDNN" = 1 ] && echo -cudnn9)
  else
    VARIANT=cpu
  fi
  # The native layers and patches are part of the build: their content hash names the install folder.
  NATIVE_HASH=$(cd "$NATIVE" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
  KEY=caffe-$SRC_ID-py$PYVER-numpy$NPVER-$VARIANT
  PREFIX=$CACHE/$KEY-$NATIVE_HASH
  BUILD=$CACHE/build-$KEY              # source copy + build tree, kept: a change in dcme_layers/native rebuilds little
  SOURCE=$CACHE/source-$SRC_ID         # the verified source (Debian's patches applied for a deb source)

  if [ ! -f "$PREFIX/.complete" ] || [ $SOURCE_ONLY = 1 ]; then
    T0=$(date +%s)
    [ $SOURCE_ONLY = 1 ] || say "building Caffe ($SRC_ID, $VARIANT) into $PREFIX"
    # -- 2b. Debian's build dependencies
    # Earlier versions of this script added a deb-src entry to the system's apt sources (the source fetch now keeps
    # apt's state in the cache); it would break `apt-get update` once bullseye leaves the archive.
    if grep -qs '^# Added by dcme-caffe' /etc/apt/sources.list.d/dcme-caffe-src.sources; then
      as_root rm -f /etc/apt/sources.list.d/dcme-caffe-src.sources
    fi
    missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $APT_PACKAGES 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
    n_known=$(dpkg-query -W -f='${Package}\n' $APT_PACKAGES 2>/dev/null | wc -l || true)
    if [ -n "$missing" ] || [ "$n_known" -lt "$(echo $APT_PACKAGES | wc -w)" ]; then
      say "installing Debian build dependencies (log: $CACHE/logs/apt.log)"
      as_root apt-get update -q >"$CACHE/logs/apt.log" 2>&1 || fail "apt-get update" "$CACHE/logs/apt.log"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PACKAGES \
        >>"$CACHE/logs/apt.log" 2>&1 || fail "apt-get install of the build dependencies" "$CACHE/logs/apt.log"
    fi
    # -- 2c. the verified source, once
    if [ ! -f "$SOURCE/.verified" ]; then
      rm -rf "$SOURCE.tmp" && mkdir -p "$SOURCE.tmp"
      if [ -z "${CAFFE_SRC:-}" ] && [ "$SRC_ID" != "deb-$CAFFE_DEB_VERSION" ]; then
        die "this .venv was built from the $SRC_ID source, which is no longer in $SOURCE: give it again with" \
            "CAFFE_SRC=/path, or delete the SRC_ID line of .venv/.caffe_variant to build from Debian's source"
      fi
      if [ "${SRC_ID#deb-}" != "$SRC_ID" ]; then
        DSC=${CAFFE_SRC:-}
        if [ -z "$DSC" ]; then
          DSC=$CACHE/src/caffe_$CAFFE_DEB_VERSION.dsc
          [ -f "$DSC" ] || fetch_debian_source
        fi
        # dpkg-source verifies every file's size and checksums against the .dsc, then applies Debian's patches.
        run_logged "unpacking and verifying $DSC (checksums from the .dsc)" "$CACHE/logs/unpack.log" \
          dpkg-source --require-strong-checksums -x "$DSC" "$SOURCE.tmp/tree"
        check_tree_hash "$SOURCE.tmp/tree" "$DSC" skip-debian-patches
      else
        if [ -d "$CAFFE_SRC" ]; then
          TREE=$(srctool find-root "$CAFFE_SRC") || exit 1
        else
          mkdir -p "$SOURCE.tmp/unpack"
          tar -xf "$CAFFE_SRC" -C "$SOURCE.tmp/unpack" 2>"$CACHE/logs/unpack.log" \
            || die "CAFFE_SRC=$CAFFE_SRC: cannot unpack it as a tarball (log: $CACHE/logs/unpack.log)"
          TREE=$(srctool find-root "$SOURCE.tmp/unpack") || exit 1
        fi
        mkdir -p "$SOURCE.tmp/tree"
        tar -C "$TREE" --exclude=./.git -cf - . | tar -C "$SOURCE.tmp/tree" -xf -
        rm -rf "$SOURCE.tmp/unpack"
        check_tree_hash "$SOURCE.tmp/tree" "$CAFFE_SRC"
      fi
      echo "$SRC_ID" >"$SOURCE.tmp/.verified"
      rm -rf "$SOURCE" && mv "$SOURCE.tmp" "$SOURCE"
    fi
    # -- 2d. the patched copy: Debian's (or BVLC's) tree + patches/bvlc (BVLC tree only) + patches + native layers
    rm -rf "$BUILD/fresh" && mkdir -p "$BUILD"
    cp -a "$SOURCE/tree" "$BUILD/fresh"
    PATCHES=$(ls "$NATIVE"/patches/*.patch)
    [ "$SRC_ID" = "bvlc-$BVLC_COMMIT" ] && PATCHES="$(ls "$NATIVE"/patches/bvlc/*.patch) $PATCHES"
    for p in $PATCHES; do
      patch -d "$BUILD/fresh" -p1 --forward --batch -s <"$p" >"$CACHE/logs/patch.log" 2>&1 \
        || fail "applying ${p#$ROOT/} to the $SRC_ID source (does it match commit $BVLC_COMMIT?)" "$CACHE/logs/patch.log"
    done
    cp -r "$NATIVE/include" "$NATIVE/src" "$BUILD/fresh/"
    if [ $SOURCE_ONLY = 1 ]; then
      say "source $SRC_ID verified, $(echo $PATCHES | wc -w) patches applied: $BUILD/fresh"
      say "build key: $KEY (installs into $PREFIX)"
      return 0
    fi
    # Update the kept tree file by file: unchanged files keep their mtime, so make recompiles only what changed.
    sync_tree "$BUILD/fresh" "$BUILD/src"
    rm -rf "$BUILD/fresh"
    # -- 2e. configure and build
    CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=3
      -DUSE_LMDB=ON -DUSE_OPENCV=ON -DUSE_LEVELDB=ON -DBUILD_docs=OFF -DBUILD_matlab=OFF
      -DPYTHON_EXECUTABLE="$VPY" -DPYTHON_INCLUDE_DIR="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
      -DPYTHON_LIBRARY="$PYLIBDIR/libpython$PYVER.so" -DBoost_PYTHON_VERSION="$PYVER"
      -DNUMPY_INCLUDE_DIR="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
      -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_RPATH="$PREFIX/lib;$PYLIBDIR"
      -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON)
    if [ "$CUDA" = 1 ]; then
      cuda_toolchain
      CMAKE_ARGS+=(-DCPU_ONLY=OFF -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" -DCUDA_ARCH_NAME=Manual
        -DCUDA_ARCH_BIN="$CUDA_ARCH" -DCUDA_ARCH_PTX="$(echo "$CUDA_ARCH" | awk '{print (NF > 1 ? $NF : "")}')"
        -DUSE_NCCL=ON -DNCCL_INCLUDE_DIR="$NCCL_DIR/include" -DNCCL_LIBRARIES="$NCCL_DIR/lib/libnccl.so.2")
      if [ "$CUDNN" = 1 ]; then
        CMAKE_ARGS+=(-DUSE_CUDNN=ON -DCUDNN_INCLUDE="$CUDNN_DIR/include" -DCUDNN_LIBRARY="$CUDNN_DIR/lib/libcudnn.so.9")
      else
        CMAKE_ARGS+=(-DUSE_CUDNN=OFF)
      fi
    else
      CMAKE_ARGS+=(-DCPU_ONLY=ON)
    fi
    say "configuring (log: $CACHE/logs/cmake.log)"
    run_logged "cmake configure" "$CACHE/logs/cmake.log" cmake -S "$BUILD/src" -B "$BUILD/build" "${CMAKE_ARGS[@]}"
    if [ "$CUDA" = 1 ]; then
      say "compiling with $JOBS jobs for sm_${CUDA_ARCH// /, sm_}: about 9 minutes on 2 cores for one architecture, longer for more (log: $CACHE/logs/build.log)"
    else
      say "compiling with $JOBS jobs, about 4 minutes on 2 cores (log: $CACHE/logs/build.log)"
    fi
    run_logged "compiling Caffe" "$CACHE/logs/build.log" cmake --build "$BUILD/build" -j "$JOBS"
    # Installed in place (the rpaths name $PREFIX); only the .complete stamp, written last, marks it usable.
    rm -rf "$PREFIX"
    run_logged "installing Caffe" "$CACHE/logs/install.log" cmake --install "$BUILD/build"
    date -u +%FT%TZ >"$PREFIX/.complete"
    # Earlier installs of this variant (other dcme_layers/native hashes) are superseded.
    for old in "$CACHE/$KEY"-????????????; do [ "$old" = "$PREFIX" ] || rm -rf "$old"; done  # (12-digit hashes)
    say "Caffe built in $(( $(date +%s) - T0 )) s"
  fi
  # Debian's patches install pycaffe under lib/python3/dist-packages, BVLC's under python/; find it.
  CAFFE_PY=$(dirname "$(dirname "$(find "$PREFIX" -path '*/caffe/__init__.py' -print -quit)")")
  CAFFE_BIN=$PREFIX/bin/caffe
  CAFFE_LIB=$PREFIX/lib
  echo "$CAFFE_PY" >"$SITE/dcme_caffe_pycaffe.pth.tmp" && mv "$SITE/dcme_caffe_pycaffe.pth.tmp" "$SITE/dcme_caffe_pycaffe.pth"
  printf 'CUDA=%s\nCUDNN=%s\nCUDA_ARCH=%s\nSRC_ID=%s\n' "$CUDA" "$CUDNN" "${CUDA_ARCH:-}" "$SRC_ID" \
    >"$VENV/.caffe_variant.tmp" && mv "$VENV/.caffe_variant.tmp" "$VENV/.caffe_variant"
  echo "$PREFIX" >"$VENV/.caffe_prefix"
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
  # A CPU-only build given -gpu would abort in C++ (Caffe::SetDevice: "Cannot use GPU in CPU-only Caffe"); the
  # wrapper of the project's CPU build refuses it first with one line saying which build to make.
  NO_GPU=""
  [ "$CUDA" = 1 ] || [ -f "$VENV/.external" ] || NO_GPU='for a in "$@"; do case "$a" in -gpu|-gpu=*|--gpu|--gpu=*)
  echo "caffe: -gpu needs the CUDA build of Caffe, and .venv has the CPU-only one (.venv/.caffe_variant: CUDA=0); build it with \`make setup CUDA=1 CUDNN=1\` (README, \"Training on a GPU\"), or drop -gpu" >&2; exit 2;; esac; done'
  cat >"$VENV/bin/caffe.tmp" <<EOF
#!/usr/bin/env bash
# Written by tools/setup_caffe.sh: $CAFFE_BIN with the venv's Python path ($EMBED/sitecustomize.py).
$NO_GPU
export PYTHONPATH="$EMBED\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="${CAFFE_LIB:+$CAFFE_LIB:}$PYLIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$CAFFE_BIN" "\$@"
EOF
  chmod +x "$VENV/bin/caffe.tmp" && mv "$VENV/bin/caffe.tmp" "$VENV/bin/caffe"
else
  say "warning: no caffe binary found next to the importable pycaffe; 'caffe train' is unavailable" >&2
fi

"$VPY" -c "import caffe, dcme_layers" 2>"$CACHE/logs/import.log" || fail "import caffe from .venv" "$CACHE/logs/import.log"
say "ready: $("$VPY" -c 'import caffe, os; print(os.path.dirname(caffe.__file__))') ($([ "$CUDA" = 1 ] && echo "CUDA, sm_${CUDA_ARCH// /, sm_}$([ "$CUDNN" = 1 ] && echo ", cuDNN")" || echo CPU)); caffe command: $VENV/bin/caffe"
}

# Fetch Debian's caffe source package into $CACHE/src with apt, from the bullseye suite of the machine's own Debian
# archive. apt runs on a source list and state of its own in the cache: the system's sources are not touched, and no
# root is needed. On failure: one message with the other route.
fetch_debian_source() {
  local apt=$CACHE/apt log=$CACHE/logs/source.log
  say "fetching Debian's caffe source $CAFFE_DEB_VERSION (log: $log)"
  mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial"
  srctool debsrc --suite "$CAFFE_DEB_SUITE" --apt-dir "${DCME_APT_DIR:-/etc/apt}" >"$apt/sources.list.d/caffe.sources.tmp" \
    || exit 1
  mv "$apt/sources.list.d/caffe.sources.tmp" "$apt/sources.list.d/caffe.sources"
  local opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt/sources.list.d"
              -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -o Debug::NoLocking=1)
  rm -rf "$CACHE/src.tmp" && mkdir -p "$CACHE/src.tmp"
  # apt-get update reports an unreachable archive as "Err:"/"W: Failed to fetch" lines; apt-get source then fails.
  if ! { apt-get "${opts[@]}" update -q >"$log" 2>&1 && ! grep -qE '^(Err:|E:|W: Failed to fetch)' "$log" &&
         (cd "$CACHE/src.tmp" && apt-get "${opts[@]}" source --download-only "caffe=$CAFFE_DEB_VERSION") >>"$log" 2>&1; }
  then
    cat >&2 <<EOF
[setup] FAILED: Debian's caffe source $CAFFE_DEB_VERSION could not be fetched from the $CAFFE_DEB_SUITE suite of
[setup] $(sed -n 's/^URIs: //p' "$apt/sources.list.d/caffe.sources") (log: $log). Bullseye may have left that archive.
[setup] Build from BVLC's source at commit $BVLC_COMMIT instead (its content hash is checked):
[setup]   git clone https://github.com/BVLC/caffe.git ~/caffe-bvlc && git -C ~/caffe-bvlc checkout $BVLC_COMMIT
[setup]   make setup CAFFE_SRC=~/caffe-bvlc
[setup] or with Debian's files from a Debian snapshot archive (caffe_$CAFFE_DEB_VERSION.dsc and the tarballs it names):
[setup]   make setup CAFFE_SRC=/path/to/caffe_$CAFFE_DEB_VERSION.dsc
EOF
    exit 1
  fi
  rm -rf "$CACHE/src" && mv "$CACHE/src.tmp" "$CACHE/src"
}

# check_tree_hash TREE ORIGIN [skip-debian-patches]: the tree's content must be BVLC 99bd997's. A Debian tree has its
# patches applied: its pristine content is checked from a copy with Debian's series reversed.
check_tree_hash() {
  local tree=$1 origin=$2 got
  if [ "${3:-}" = skip-debian-patches ]; then
    local pristine=$tree.pristine
    rm -rf "$pristine" && cp -a "$tree" "$pristine"
    tac "$pristine/debian/patches/series" | grep -v '^\s*#' | while read -r p; do
      [ -n "$p" ] && patch -d "$pristine" -p1 -R --batch -s <"$pristine/debian/patches/$p" >/dev/null
    done
    got=$(srctool tree-hash "$pristine")
    rm -rf "$pristine"
  else
    got=$(srctool tree-hash "$tree")
  fi
  if [ "$got" != "$BVLC_TREE_SHA256" ]; then
    die "$origin is not BVLC Caffe at commit $BVLC_COMMIT (content hash $got, expected $BVLC_TREE_SHA256)." \
        "Use an unmodified tree: git -C <clone> checkout $BVLC_COMMIT && git -C <clone> status shows what changed."
  fi
}

# sync_tree NEW OLD: make OLD equal to NEW, copying only the files whose content differs (mtimes of the rest kept).
sync_tree() {
  local new=$1 old=$2
  if [ ! -d "$old" ]; then mv "$new" "$old"; return; fi
  (cd "$new" && find . -type f) | while read -r f; do
    cmp -s "$new/$f" "$old/$f" || { mkdir -p "$(dirname "$old/$f")"; cp -p "$new/$f" "$old/$f"; touch "$old/$f"; }
  done
  (cd "$old" && find . -type f) | while read -r f; do [ -e "$new/$f" ] || rm -f "$old/$f"; done
}

# cuda_toolchain: sets CUDA_ROOT (a CUDA 13 root for CMake's FindCUDA: bin/nvcc, include, lib64 with unversioned
# library links), CUDNN_DIR and NCCL_DIR. nvcc comes from $CUDA_HOME or /usr/local/cuda when it is CUDA 13 or newer,
# else from PyPI's wheels; cuBLAS and cuRAND from the toolkit when it has them, else from PyPI; cuDNN and NCCL
# from PyPI. Wheels are installed once into the cache (pip uses the machine's own index configuration).
cuda_toolchain() {
  local toolkit=${CUDA_HOME:-/usr/local/cuda} wheels=$CACHE/cuda13-wheels ver need
  ver=$("$toolkit/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p' || true)
  need="$CUDNN_WHEEL $NCCL_WHEEL"
  if [ "${ver:-0}" -ge 13 ]; then
    for lib in cublas curand; do
      ls "$toolkit"/lib64/lib$lib.so* >/dev/null 2>&1 || need="$need $(echo $CUDA_WHEELS | tr ' ' '\n' | grep -E "^nvidia-$lib==")"
    done
  else
    [ -z "$ver" ] || say "$toolkit has nvcc $ver; CUDA 13 comes from PyPI instead"
    toolkit=""
    need="$need $CUDA_WHEELS"
  fi
  local stamp
  stamp=$(echo $need | tr ' ' '\n' | sort | sha256sum | cut -c1-12)
  if [ ! -f "$wheels-$stamp/.complete" ]; then
    say "installing the CUDA 13 wheels from PyPI into $wheels-$stamp (log: $CACHE/logs/cuda-wheels.log)"
    rm -rf "$wheels-$stamp.tmp"
    run_logged "pip install of the CUDA 13 wheels ($need)" "$CACHE/logs/cuda-wheels.log" \
      "$VPY" -m pip install --disable-pip-version-check --no-deps --no-compile --target "$wheels-$stamp.tmp" $need
    touch "$wheels-$stamp.tmp/.complete" && mv "$wheels-$stamp.tmp" "$wheels-$stamp"
  fi
  wheels=$wheels-$stamp/nvidia
  [ -n "$toolkit" ] || toolkit=$wheels/cu13
  CUDNN_DIR=$wheels/cudnn
  NCCL_DIR=$wheels/nccl
  CUDA_ROOT=$CACHE/cuda13-root-$stamp
  if [ ! -f "$CUDA_ROOT/.complete" ] || [ "$(cat "$CUDA_ROOT/.complete")" != "$toolkit" ]; then
    rm -rf "$CUDA_ROOT" && mkdir -p "$CUDA_ROOT/include" "$CUDA_ROOT/lib64"
    ln -s "$toolkit/bin" "$CUDA_ROOT/bin"
    [ -d "$toolkit/nvvm" ] && ln -s "$toolkit/nvvm" "$CUDA_ROOT/nvvm"
    # The toolkit's headers and libraries first, then the wheels' (cuBLAS, cuRAND where the toolkit lacks them).
    local d f
    for d in "$toolkit" "$wheels/cu13"; do
      for f in "$d"/include/* "$d"/lib64/* "$d"/lib/*; do
        [ -e "$f" ] || continue
        case $f in */include/*) dest=$CUDA_ROOT/include ;; *) dest=$CUDA_ROOT/lib64 ;; esac
        [ -e "$dest/$(basename "$f")" ] || ln -s "$f" "$dest/"
      done
    done
    # The wheels ship no unversioned .so links, and CMake's FindCUDA looks for them.
    for f in "$CUDA_ROOT"/lib64/lib*.so.*; do
      local base=${f%%.so.*}.so
      [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
    done
    echo "$toolkit" >"$CUDA_ROOT/.complete"
  fi
  say "CUDA toolkit: $toolkit (nvcc $("$CUDA_ROOT/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')), cuDNN/NCCL: $wheels"
}

{ main "$@"; exit $?; }  # one line: bash has read it whole before main runs (safe to edit the file meanwhile)
