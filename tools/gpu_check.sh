#!/usr/bin/env bash
# The GPU check, on a bare GPU machine (no Caffe, no Debian packages, no internet; a CUDA 13 toolkit in
# /usr/local/cuda and, for cuDNN / NCCL and the PyTorch peer, a python3 with torch and its nvidia wheels).
# Run from the repository root after `make gpu-bundle` on the build machine and copying gpu-bundle/ along:
#
#   bash tools/gpu_check.sh [OUTDIR] [--demo SECONDS]   (OUTDIR default: $OUT, else out/gpu_check)
#
# It prints a table and writes gpu_check.json and the logs to OUTDIR; tools/gpu_check.py lists the steps.
set -euo pipefail
cd "$(dirname "$0")/.."
# the standard-library modules of dcme_layers that gpu_check.py imports (there is no .venv on that machine)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 tools/gpu_check.py "$@"
