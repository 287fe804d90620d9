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
- the demo stage (tools/gpu_check.sh --demo SECONDS): the GPU configuration of tools/demo.py (full SegNet at
  340x680, Adam, batch 4) as nets/demo_{train,solver}.prototxt on data/demo/train (its DEMO synthetic training
  frames), the caffe-segnet BatchNorm statistics pass as nets/demo_bnstats_{train,solver}.prototxt, and
  nets/demo_deploy.prototxt, which `caffe test` runs over data/demo/val/images in one batch into an HDF5Output
  file that tools/evaluate.py --predictions scores back on this machine; the synthetic set and its encoding stay
  in data/ here for that (MANIFEST.json names them);
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

from dcme_layers.util import cli

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 60
# Libraries the GPU machine has (sonames, by prefix): the C runtime and the compiler's, CUDA's, cuDNN's, NCCL's.
PROVIDED = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libutil.so",
            "libstdc++.so", "libgcc_s.so", "libcuda.so", "libcudart.so", "libcublas.so", "libcublasLt.so",
            "libcurand.so", "libcudnn", "libnccl.so")
TRAIN_ITERS = 30
TRAIN_FRAMES = 2
# FCN-8s' smoke lr diverges at batch 2 and 340x680 on a GPU; a quarter of it falls steadily, as the check needs.
TRAIN_LR = {"fcn8s": 5e-13}
# The demo stage's val frames: their float32 2x340x680 predictions (1.85 MB a frame) come back from the GPU machine
# in at most PREDICTIONS_LIMIT_MIB. A split's frames depend on their index alone, so these are the demo's first 8.
DEMO_VAL_FRAMES = 8
PREDICTIONS_LIMIT_MIB = 16
# BatchNorm layers of the statistics pass get this suffix, so that `-weights` leaves their blobs at zero and the
# pass (moving_average_fraction 1) sums each batch's statistics into them; the deploy net uses the same names.
BN_STATS_SUFFIX = "_stats"


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
    from dcme_layers.core.paper import SIZE
    from dcme_layers.data import lmdb_io, synthetic
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic.generate(Path(tmp) / "cityscapes", {"train": TRAIN_FRAMES}, seed=0)
        lmdb_io.encode_dataset(root, stage / "data", ["train"], size=SIZE, workers=1, progress=False)


def demo_data(c, n_val=DEMO_VAL_FRAMES):
    """The demo stage's synthetic set ({train: the configuration's, val: n_val}) and its encoding at the
    configuration's size, in data/ (kept: tools/evaluate.py --predictions scores against them); returns both."""
    from dcme_layers.data import lmdb_io, synthetic
    n_train = c["frames"][0]
    root = synthetic.generate(REPO / f"{synthetic.ROOT}_train{n_train}_val{n_val}", {"train": n_train, "val": n_val},
                              workers=os.cpu_count() or 1, progress=True)
    h, w = c["size"]
    encoded = REPO / f"data/lmdb_gpu_demo_{h}x{w}_val{n_val}_seed{c['seed']}"
    lmdb_io.encode_dataset(root, encoded, ["train", "val"], size=c["size"], seed=c["seed"])
    return root, encoded


def with_bn_stats_names(net, fraction=None):
    """Rename every BatchNorm layer of the NetParameter ``net`` (BN_STATS_SUFFIX); ``fraction``: also set its
    moving_average_fraction (1: sum the statistics of every batch, as tools/compute_bn_stats.py does)."""
    for layer in net.layer:
        if layer.type == "BatchNorm":
            layer.name += BN_STATS_SUFFIX
            if fraction is not None:
                layer.batch_norm_param.moving_average_fraction = fraction
    return net


def write_demo(stage, c, encoded):
    """The demo stage of configuration ``c`` (tools/demo.py config) on the encoded splits in ``encoded``: its
    frames in data/demo, its nets and solvers in nets/demo_*; returns the MANIFEST's demo entry."""
    from functools import partial

    from caffe.proto import caffe_pb2

    import models
    from models.segnet import net as segnet
    data, nets = stage / "data" / "demo", stage / "nets"
    nets.mkdir(exist_ok=True)
    for lmdb in ("train/images", "train/vectors", "val/images"):
        (data / lmdb).mkdir(parents=True)
        shutil.copy(Path(encoded) / lmdb / "data.mdb", data / lmdb / "data.mdb")
    shutil.copy(Path(encoded) / "val" / "frames.txt", data / "val" / "frames.txt")
    n_train = len((Path(encoded) / "train" / "frames.txt").read_text().split())
    n_val = len((data / "val" / "frames.txt").read_text().split())
    batch = c["segnet"]["batch_size"]

    def train_net():
        net = segnet.train("data/demo/train", "data/demo/train", batch_size=batch, slim=c["slim"])
        for layer in [la for la in net.layer if any(r.phase == caffe_pb2.TEST for r in la.include)]:
            net.layer.remove(layer)  # the solver runs no test
        return net

    (nets / "demo_train.prototxt").write_text(str(train_net()))
    (nets / "demo_solver.prototxt").write_text(
        models.solver("nets/demo_train.prototxt", "snapshots/demo_segnet", dict(c["segnet_solver"], test_iter=None)))
    # caffe-segnet's statistics: one pass over the training frames with the weights fixed (lr 0)
    (nets / "demo_bnstats_train.prototxt").write_text(str(with_bn_stats_names(train_net(), fraction=1.0)))
    passes = -(-n_train // batch)
    (nets / "demo_bnstats_solver.prototxt").write_text(models.solver(
        "nets/demo_bnstats_train.prototxt", "snapshots/demo_segnet_bnstats",
        dict(base_lr=0.0, momentum=0.0, weight_decay=0.0, max_iter=passes, snapshot=0, display=1, average_loss=1,
             test_iter=None)))
    deploy = models.hdf5_output_net("segnet", partial(segnet.body, slim=c["slim"]), "data/demo/val/images", n_val,
                                    "predictions.h5")
    (nets / "demo_deploy.prototxt").write_text(str(with_bn_stats_names(deploy)))
    return dict(size=list(c["size"]), slim=c["slim"], seed=c["seed"], train_frames=n_train, val_frames=n_val,
                batch_size=batch, max_iter=c["segnet_solver"]["max_iter"], bn_passes=passes,
                predictions_limit_mib=PREDICTIONS_LIMIT_MIB, encoded=str(encoded))


def pack(stage, tmp_out, manifest, xz="-6"):
    """bundle.tar.xz of ``stage`` and MANIFEST.json into ``tmp_out``; returns its size in MiB. ``xz``: the
    compression level; None: a plain tar under that name (tests: tools/gpu_check.py's tarfile reads either)."""
    subprocess.run(["tar", "-cJf" if xz else "-cf", str(tmp_out / "bundle.tar.xz"), "-C", str(stage), "."],
                   check=True, env=dict(os.environ, XZ_OPT=f"{xz} -T0"))
    (tmp_out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return sum(f.stat().st_size for f in tmp_out.iterdir() if f.is_file()) / 2 ** 20


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", type=Path, help="a CUDA Caffe install (default: the one .venv points at)")
    ap.add_argument("--out", type=Path, default=REPO / "gpu-bundle", help="output folder (default: %(default)s)")
    ap.add_argument("--peer", type=Path, default=REPO.parent / "shared" / "bench" / "torch_peer.py",
                    help="the PyTorch peer to include (default: %(default)s)")
    return ap


def run(args):
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
    from tools import demo
    c = demo.config(gpu=True)
    root, encoded = demo_data(c)
    demo_entry = dict(write_demo(stage, c, encoded), root=str(root))
    if args.peer.exists():
        shutil.copy(args.peer, stage / "torch_peer.py")
    else:
        print(f"gpu_bundle: warning: no PyTorch peer at {args.peer}; the check will time Caffe alone", file=sys.stderr)
    manifest = dict(prefix=str(prefix), libraries=kept, provided_by_the_gpu_machine=provided, batches=batches,
                    train_iterations=TRAIN_ITERS, train_frames=TRAIN_FRAMES, peer=args.peer.exists(), demo=demo_entry)
    size = pack(stage, tmp_out, manifest)
    shutil.rmtree(stage)
    if size > LIMIT_MIB:
        print(f"gpu_bundle: {size:.1f} MiB is over the {LIMIT_MIB} MiB a GPU machine receives", file=sys.stderr)
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    tmp_out.rename(args.out)
    print(f"{args.out}: {size:.1f} MiB ({len(kept)} libraries packed; from the GPU machine: {', '.join(provided)})")
    return 0


def main(argv=None):
    return cli.run_tool("gpu_bundle", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
