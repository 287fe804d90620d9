#!/usr/bin/env python
"""Recompute the BatchNorm statistics of a trained SegNet over the training set (caffe-segnet's recipe).

caffe-segnet computes SegNet's inference statistics after training with its compute_bn_statistics.py; BVLC's
BatchNorm instead uses the moving averages it kept during training (use_global_stats in TEST), which came from
the solver's forward batches (the paper's batch split by iter_size: PAPER in models/segnet/net.py). This tool
follows the caffe-segnet recipe: it runs the train-phase net with BatchNorm in batch-statistics mode over N batches
of the encoded training LMDBs, averages each BatchNorm layer's per-batch mean and variance (the variance with
Caffe's unbiased correction m / (m - 1), m the values per channel in a batch) and writes a caffemodel whose
BatchNorm blobs hold those averages as the global statistics (scale factor 1); every other blob is copied from the
input weights.

    .venv/bin/python tools/compute_bn_stats.py --weights models/segnet/segnet_iter_40000.caffemodel
    # -> models/segnet/segnet_iter_40000_bnstats.caffemodel; use it with prototxt/segnet_deploy.prototxt
"""
import argparse
import math
import sys
import tempfile
from pathlib import Path

from dcme_layers.net import netfiles
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError
from dcme_layers.util.files import atomic_write


class BNStatsError(DataError):
    """A missing or unusable input; the message names the file and what to do."""


def default_out(weights):
    """Output caffemodel next to ``weights``: ``<name>_bnstats.caffemodel``."""
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".caffemodel") + "_bnstats.caffemodel")


def stats_net(net_path, lmdb_dir):
    """The TRAIN-phase NetParameter of ``net_path`` prepared for the statistics pass: each Data layer reads the
    LMDB of the same name (``images``, ``vectors``) in ``lmdb_dir``, and every BatchNorm layer normalises by the batch
    statistics and sums them into its blobs (moving_average_fraction 1: mean and variance sums, batch count).
    Returns (NetParameter, the BatchNorm layer names, the Data layers' batch size)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    proto = caffe_pb2.NetParameter()
    try:
        text_format.Merge(Path(net_path).read_text(), proto)
    except (OSError, text_format.ParseError) as e:
        raise BNStatsError(f"{net_path}: cannot read the train net ({e}); pass --net prototxt/segnet_train.prototxt")
    bn, batch = [], set()
    for layer in proto.layer:
        if layer.type == "Data" and all(rule.phase == caffe_pb2.TRAIN for rule in layer.include):
            source = Path(lmdb_dir) / Path(layer.data_param.source).name
            if not (source / "data.mdb").is_file():
                raise BNStatsError(f"{source}: no LMDB there; run `make encode-data` (or pass --lmdb)")
            layer.data_param.source = str(source)
            batch.add(layer.data_param.batch_size)
        elif layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
            layer.batch_norm_param.moving_average_fraction = 1.0
            bn.append(layer.name)
    if not bn:
        raise BNStatsError(f"{net_path}: no BatchNorm layers; the statistics are SegNet's (--net)")
    if len(batch) != 1:
        raise BNStatsError(f"{net_path}: needs TRAIN Data layers of one batch size, found {sorted(batch) or 'none'}")
    return proto, bn, batch.pop()


def lmdb_entries(path):
    """Number of records in the LMDB at ``path``."""
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def compute_bn_stats(weights, out, net_path="prototxt/segnet_train.prototxt", lmdb_dir="data/lmdb/train",
                     batches=None, progress=True):
    """Average each BatchNorm layer's batch statistics over ``batches`` TRAIN batches of ``lmdb_dir`` (default: one
    pass over its frames, rounded up) in the net ``net_path`` with ``weights``, and write ``weights`` with those
    statistics (scale factor 1) to ``out`` atomically. Returns {BatchNorm layer: (mean, variance)} as written."""
    import caffe
    from tqdm import tqdm

    if not Path(weights).is_file():
        raise BNStatsError(f"{weights}: no such caffemodel; pass --weights the trained SegNet "
                           f"(models/segnet/segnet_iter_N.caffemodel)")
    if not Path(out).parent.is_dir():
        raise BNStatsError(f"{out}: its folder does not exist; create it or pass another --out")
    proto, bn, batch = stats_net(net_path, lmdb_dir)
    if batches is None:
        batches = math.ceil(lmdb_entries(Path(lmdb_dir) / "images") / batch)
    if batches < 1:
        raise BNStatsError(f"{lmdb_dir}: --batches must be at least 1, got {batches}")
    caffe.set_mode_cpu()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(str(proto))
        f.flush()
        net = caffe.Net(f.name, caffe.TRAIN)
    netfiles.check_weights(net, net_path, weights)  # else Caffe would abort, or skip layers silently
    net.copy_from(str(weights))
    for name in bn:
        for blob in net.params[name]:
            blob.data[...] = 0
    for _ in tqdm(range(batches), desc="BatchNorm statistics", unit="batch", disable=not progress):
        net.forward()
    stats = {}
    for name in bn:
        mean, var, count = net.params[name]
        mean.data[...] /= count.data[0]
        var.data[...] /= count.data[0]
        count.data[...] = 1
        stats[name] = (mean.data.copy(), var.data.copy())
    atomic_write(out, lambda tmp: net.save(str(tmp)))
    return stats


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="trained SegNet caffemodel")
    ap.add_argument("--net", default="prototxt/segnet_train.prototxt",
                    help="train net the weights belong to (default: %(default)s)")
    ap.add_argument("--lmdb", default="data/lmdb/train",
                    help="encoded training split with images/ and vectors/ (default: %(default)s)")
    ap.add_argument("--batches", type=cli.positive,
                    help="training batches to average over (default: one pass over the split)")
    ap.add_argument("--out", help="output caffemodel (default: <weights>_bnstats.caffemodel)")
    return ap


def run(args):
    out = Path(args.out) if args.out else default_out(args.weights)
    stats = compute_bn_stats(args.weights, out, args.net, args.lmdb, args.batches)
    print(f"wrote {out}: statistics of {len(stats)} BatchNorm layers")


def main(argv=None):
    return cli.run_tool("compute_bn_stats", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
