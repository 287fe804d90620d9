# dcme-caffe. Every target that needs Python or Caffe runs `make setup` first (idempotent, seconds when warm).
# `make setup CUDA=1 [CUDNN=1] [CUDA_ARCH=90]` builds and selects the CUDA Caffe (CUDA=0: back to the CPU build);
# `make setup CAFFE_SRC=/path` builds from a BVLC tree at 99bd997 (README, "Installing without Debian's bullseye
# source"). tools/setup_caffe.sh documents every variable.
SHELL := /bin/bash
comma := ,
PY := .venv/bin/python
CAFFE := .venv/bin/caffe

# Dataset root in the Cityscapes layout (the variable cityscapesscripts uses). Default: the embedded synthetic set.
SYNTHETIC := data/cityscapes_synthetic
CITYSCAPES_DATASET ?= $(SYNTHETIC)
ENCODED ?= data/lmdb
# Model and split that `make evaluate` scores; WEIGHTS (CLASSIFIER_WEIGHTS) default to the newest snapshot of
# MODEL (of GoogLeNet), e.g. models/segnet/segnet_iter_40000.caffemodel.
MODEL ?= segnet
SPLIT ?= val
WEIGHTS ?=
CLASSIFIER_WEIGHTS ?=
# Vector maps computed elsewhere to score instead of running the deploy net (tools/evaluate.py --predictions);
# `make tune` reads them too (default there: the maps `make evaluate` wrote, $(OUT)/pred_vectors.h5).
PREDICTIONS ?=
# `make demo SEED=2`: the demo with another seed (report in out/demo_seed2).
SEED ?=
# More tools/evaluate.py (tools/tune_thresholds.py) options, e.g. ARGS="--oracle --method watershed" or
# ARGS=--oracle-classes (no GoogLeNet).
ARGS ?=
OUT ?= out/$(MODEL)_$(SPLIT)
# `make evaluate THRESHOLDS=DT,VT,ET` (default: the model's paper values), e.g. $$(cat out/segnet_val/tune/best.txt).
THRESHOLDS ?=
# `make tune` searches the thresholds on PREDICTIONS; ORACLE_NOISE=1: on the ground truth plus network-like noise
# instead. Output: $(OUT)/tune (table, best.txt, heatmap.png).
ORACLE_NOISE ?=
export CITYSCAPES_DATASET

.PHONY: setup test test-fast synthetic encode-data prototxt evaluate tune demo bench gpu-bundle clean-data

setup:
	@bash tools/setup_caffe.sh

# DCME_REQUIRE: what the suite must find (a failure, never a skip, when missing; tests/helpers.py lists the names),
# pycaffe and the caffe binary always, more with `make test REQUIRE=sample,unshare`; -rs prints the reason of every
# skip; the "ci" hypothesis profile draws the same examples on every run. `make test` runs every test; `make
# test-fast` leaves out those marked slow (Caffe nets, the caffe binary, tools and other subprocesses, long runs).
REQUIRE ?=
PYTEST = DCME_REQUIRE=caffe,caffe-binary$(if $(REQUIRE),$(comma)$(REQUIRE)) HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -rs
test: setup
	$(PYTEST) tests

test-fast: setup
	$(PYTEST) -m "not slow" tests

$(SYNTHETIC)/.complete: | setup
	$(PY) tools/make_synthetic_cityscapes.py --out $(SYNTHETIC)

synthetic: $(SYNTHETIC)/.complete

encode-data: setup $(if $(filter $(SYNTHETIC),$(CITYSCAPES_DATASET)),$(SYNTHETIC)/.complete)
	$(PY) tools/encode_data.py --root $(CITYSCAPES_DATASET) --out $(ENCODED)

prototxt: setup
	$(PY) tools/make_prototxt.py

evaluate: setup
	$(PY) tools/evaluate.py --model $(MODEL) --split $(SPLIT) --root $(CITYSCAPES_DATASET) \
	  --encoded $(ENCODED) --out $(OUT) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	  $(if $(PREDICTIONS),--predictions $(PREDICTIONS)) \
	  $(if $(CLASSIFIER_WEIGHTS),--classifier-weights $(CLASSIFIER_WEIGHTS)) \
	  $(if $(THRESHOLDS),--thresholds $(THRESHOLDS)) $(ARGS)

tune: setup
	$(PY) tools/tune_thresholds.py --root $(CITYSCAPES_DATASET) --split $(SPLIT) --out $(OUT)/tune \
	  $(if $(ORACLE_NOISE),--oracle-noise,--predictions $(or $(PREDICTIONS),$(OUT)/pred_vectors.h5)) $(ARGS)

demo: setup
	$(PY) tools/demo.py $(if $(SEED),--seed $(SEED))

bench: setup
	$(PY) tools/bench.py

# The CUDA Caffe, nets, data, demo stage and PyTorch peer for tools/gpu_check.sh on a bare GPU machine (needs
# `make setup CUDA=1`); the demo stage's synthetic frames and their encoding stay in data/ for make evaluate PREDICTIONS=.
gpu-bundle: setup
	$(PY) tools/gpu_bundle.py

clean-data:
	rm -rf data out
