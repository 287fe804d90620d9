#!/usr/bin/env python
"""`make gpu-bundle`: pack the CUDA Caffe of `make setup CUDA=1 CUDNN=1` for tools/gpu_check.sh on a bare GPU machine.

Writes gpu-bundle/ (git-ignored, at most 60 MiB): bundle.tar.xz with
- bin/caffe and bin/test_dcme_layers (the native layers' gtest), lib/libcaffe.so and every library `ldd` lists
  except those the GPU machine brings: the glibc family, libstdc++/libgcc_s, the CUDA toolkit's libraries (cudart,
  cuBLAS, cuRAND: /usr/local/cuda/lib64 there) and cuDNN / NCCL (found in its PyTorch's nvidia wheels);
- nets/: `caffe time` nets of SegNet (batch 15) and FCN-8s (batch 14) at 340x680 on DummyData, each with the build's
  default engines (cuDNN) and with Caffe's own kernels (engine: CAFFE); train nets and GPU solvers of 30 iterations
  on a fixed batch of two synthetic frames (so the loss must fall);
- data/train/{images,vectors}: those two frames, encoded as by `make encode-data`;
- torch_peer.py: the PyTorch peer of both nets (../shared/bench/), timed in the same call when torch imports;
and MANIFEST.json (what is in it, what was left to the GPU machine).

    .venv/bin/python tools/gpu_bundle.py [--prefix CUDA_CAFFE_PREFIX] [--out gpu-bundle]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 60
# Libraries the GPU machine has (sonames, by prefix): the C runtime and the compiler's, CUDA's, cuDNN's, NCCL's.
PROVIDED = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libutil.so",
            "libstdc++.so", "libgcc_s.so", "libcuda.so", "libcudart.so", "libcublas.so", "libcublasLt.so",
            "libcurand.so", "libcudnn", "libnccl.so")
TRAIN_ITERS = 30
TRAIN_FRAMES = 2
# FCN-8s' smoke lr (2e-12) rose to 100x its starting loss within 5 iterations at batch 2 and 340x680 on an H100
# (tools/gpu_check.sh, 2026-11-26) before settling above its start; a quarter of it fell steadily over the same 5
# iterations on the CPU (same nets, data and seed), so the check uses that.
TRAIN_LR = {"fcn8s": 5e-13}


def ldd(binary, env):
    """{soname: resolved path} of ``binary``'s shared libraries; exits naming any that cannot be found."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=True).stdout
    libs, missing = {}, []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m and m.group(2) == "not":
            missing.append(m.group(1))
        elif m:
            libs[m.group(1)] = m.group(2)
    if missing:
        sys.exit(f"gpu_bundle: {binary} needs {', '.join(missing)}, which ldd cannot find; re-run `make setup CUDA=1`")
    return libs


def pack_binaries(prefix, stage):
    """Copy the binaries, libcaffe and the non-provided libraries into ``stage``; return (kept, provided) sonames."""
    (stage / "bin").mkdir(parents=True)
    (stage / "lib").mkdir()
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    kept, provided = set(), set()
    for name in ("caffe", "test_dcme_layers"):
        shutil.copy2(prefix / "bin" / name, stage / "bin" / name)
        for soname, path in ldd(prefix / "bin" / name, env).items():
            if soname.startswith(PROVIDED):
                provided.add(soname)
            elif soname not in kept:
                kept.add(soname)
                shutil.copy(os.path.realpath(path), stage / "lib" / soname)
    for f in [stage / "bin" / n for n in ("caffe", "test_dcme_layers")] + sorted((stage / "lib").iterdir()):
        subprocess.run(["strip", "--strip-unneeded", str(f)], check=True)
    return sorted(kept), sorted(provided)


def write_nets(stage):
    """The `caffe time` nets, the train nets and their 30-iteration GPU solvers; returns {net: paper's batch}."""
    from caffe.proto import caffe_pb2

    import models
    from models.fcn8s import net as fcn8s
    from models.segnet import net as segnet
    nets = stage / "nets"
    nets.mkdir()
    batches = {mod.NAME: models.paper_batch(mod.PAPER) for mod in (segnet, fcn8s)}
    for mod in (segnet, fcn8s):
        name = mod.NAME
        for engine in ("default", "caffe"):
            net = models.timing_net(name, mod.body, batches[name], caffe_engine=engine == "caffe")
            (nets / f"{name}_time_{engine}.prototxt").write_text(str(net))
        # Train on a fixed batch (both frames in every batch), logging every iteration, with the build's default
        # engines and with Caffe's own: the same seed gives both the same weights, so their first losses (one
        # forward pass) must agree.
        train = mod.train("data/train", "data/train", batch_size=TRAIN_FRAMES)
        test_only = [layer for layer in train.layer if any(r.phase == caffe_pb2.TEST for r in layer.include)]
        for layer in test_only:  # the solver runs no test
            train.layer.remove(layer)
        settings = dict(mod.SMOKE, base_lr=TRAIN_LR.get(name, mod.SMOKE["base_lr"]), max_iter=TRAIN_ITERS,
                        snapshot=0, snapshot_after_train=False, display=1, average_loss=1, test_iter=None)
        for engine in ("default", "caffe"):
            if engine == "caffe":
                models.set_caffe_engine(train)
            (nets / f"{name}_train_{engine}.prototxt").write_text(str(train))
            (nets / f"{name}_solver_{engine}.prototxt").write_text(
                models.solver(f"nets/{name}_train_{engine}.prototxt", f"snapshots/{name}", settings))
    return batches


def write_data(stage):
    """Two synthetic train frames at the paper's resolution, encoded to data/train/{images,vectors}."""
    from dcme_layers import lmdb_io, synthetic
    from dcme_layers.paper import SIZE
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate(Path(tmp) / "cityscapes", {"train": TRAIN_FRAMES}, seed=0)
        lmdb_io.encode_dataset(root, stage / "data", ["train"], size=SIZE, workers=1, progress=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", type=Path, help="a CUDA Caffe install (default: the one .venv points at)")
    ap.add_argument("--out", type=Path, default=REPO / "gpu-bundle", help="output folder (default: %(default)s)")
    ap.add_argument("--peer", type=Path, default=REPO.parent / "shared" / "bench" / "torch_peer.py",
                    help="the PyTorch peer to include (default: %(default)s)")
    args = ap.parse_args(argv)
    prefix = args.prefix or Path((REPO / ".venv" / ".caffe_prefix").read_text().strip())
    if not (prefix / "bin" / "caffe").exists() or "cuda13" not in prefix.name:
        print(f"gpu_bundle: {prefix} is not a CUDA build of Caffe; run `make setup CUDA=1 CUDNN=1` first",
              file=sys.stderr)
        return 1
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    stage = tmp_out / "stage"
    kept, provided = pack_binaries(prefix, stage)
    batches = write_nets(stage)
    write_data(stage)
    if args.peer.exists():
        shutil.copy(args.peer, stage / "torch_peer.py")
    else:
        print(f"gpu_bundle: warning: no PyTorch peer at {args.peer}; the check will time Caffe alone", file=sys.stderr)
    subprocess.run(["tar", "-cJf", str(tmp_out / "bundle.tar.xz"), "-C", str(stage), "."], check=True,
                   env=dict(os.environ, XZ_OPT="-6 -T0"))
    shutil.rmtree(stage)
    manifest = dict(prefix=str(prefix), libraries=kept, provided_by_the_gpu_machine=provided, batches=batches,
                    train_iterations=TRAIN_ITERS, train_frames=TRAIN_FRAMES, peer=args.peer.exists())
    (tmp_out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(f.stat().st_size for f in tmp_out.iterdir()) / 2 ** 20
    if size > LIMIT_MIB:
        print(f"gpu_bundle: {size:.1f} MiB is over the {LIMIT_MIB} MiB a GPU machine receives", file=sys.stderr)
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    tmp_out.rename(args.out)
    print(f"{args.out}: {size:.1f} MiB ({len(kept)} libraries packed; from the GPU machine: {', '.join(provided)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
