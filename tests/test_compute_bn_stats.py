"""tools/compute_bn_stats.py: caffe-segnet's BatchNorm statistics over the training set, on a small SegNet."""
import functools
import subprocess
import sys

import numpy as np
import pytest

import helpers

caffe = helpers.import_caffe()
from caffe.proto import caffe_pb2  # noqa: E402

import models  # noqa: E402
from dcme_layers.data.lmdb_io import encode_dataset
from models.segnet import net as segnet  # noqa: E402
from tools import compute_bn_stats  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = (32, 64)  # five poolings: 32x64 -> 1x2
SLIM = 16  # 1/16 of SegNet's channels
BATCH, BATCHES = 2, 3  # 3 batches of 2 over the 3 training frames: the Data layer wraps around within the pass


@pytest.fixture(scope="module")
def trained(tiny_cityscapes, tmp_path_factory):
    """A small SegNet train net on the encoded synthetic frames and a caffemodel of it with random weights
    (the Scale layers too, so that each BatchNorm's input depends on the layers before it)."""
    tmp = tmp_path_factory.mktemp("bn_stats")
    encode_dataset(tiny_cityscapes, tmp / "lmdb", size=SIZE, workers=1, progress=False, log=lambda *a: None)
    proto = models.train_net(segnet.NAME, functools.partial(segnet.body, slim=SLIM), str(tmp / "lmdb" / "train"),
                             str(tmp / "lmdb" / "val"), BATCH)
    net_path = tmp / "train.prototxt"
    net_path.write_text(str(proto))
    net = caffe.Net(str(net_path), caffe.TRAIN)
    rng = np.random.default_rng(0)
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
        elif net.layer_dict[name].type == "BatchNorm":  # stale statistics, which the tool must not keep
            blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 5, 7, 3
    weights = tmp / "segnet_iter_1.caffemodel"
    net.save(str(weights))
    return dict(tmp=tmp, net=net_path, weights=weights, lmdb=tmp / "lmdb" / "train")


def numpy_statistics(net_path, weights):
    """{BatchNorm layer: (mean, variance)}: the train-phase net run layer by layer over BATCHES batches; at each
    BatchNorm layer its bottom (the convolution output, before the in-place normalisation) is read and its channel
    mean and variance (times m / (m - 1), m = N x H x W) are computed in numpy, then averaged over the batches."""
    net = caffe.Net(str(net_path), caffe.TRAIN, weights=str(weights))
    names = list(net._layer_names)
    bn = [name for name in names if net.layer_dict[name].type == "BatchNorm"]
    sums = {name: [0.0, 0.0] for name in bn}
    for _ in range(BATCHES):
        start = None
        for name in bn:
            net.forward(start=start, end=names[names.index(name) - 1])
            x = net.blobs[net.bottom_names[name][0]].data.astype(np.float64)
            m = x.size // x.shape[1]
            sums[name][0] += x.mean(axis=(0, 2, 3))
            sums[name][1] += x.var(axis=(0, 2, 3)) * m / (m - 1)
            start = name
        net.forward(start=start)
    return {name: (s[0] / BATCHES, s[1] / BATCHES) for name, s in sums.items()}


def caffemodel_blobs(path):
    """{layer: [arrays]} of the layers with blobs in the caffemodel at ``path`` (read with protobuf, not Caffe)."""
    proto = caffe_pb2.NetParameter()
    proto.ParseFromString(path.read_bytes())
    return {layer.name: [caffe.io.blobproto_to_array(b) for b in layer.blobs] for layer in proto.layer if layer.blobs}


def test_written_statistics_are_the_batch_averages(repo, trained):
    out = trained["tmp"] / "bn.caffemodel"
    run = subprocess.run([sys.executable, "tools/compute_bn_stats.py", "--weights", str(trained["weights"]),
                          "--net", str(trained["net"]), "--lmdb", str(trained["lmdb"]), "--batches", str(BATCHES),
                          "--out", str(out)], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == f"wrote {out}: statistics of 25 BatchNorm layers"
    assert "net.cpp" not in run.stderr and "Creating layer" not in run.stderr  # GLOG quiet; tqdm's bar remains
    assert f"{BATCHES}/{BATCHES}" in run.stderr
    assert not list(trained["tmp"].glob(".bn.tmp*"))

    expected = numpy_statistics(trained["net"], trained["weights"])
    written, before = caffemodel_blobs(out), caffemodel_blobs(trained["weights"])
    assert len(expected) == 25 and set(written) == set(before)
    for name, blobs in written.items():
        if name in expected:
            mean, var, factor = blobs
            np.testing.assert_allclose(mean, expected[name][0], rtol=1e-3, atol=1e-3 * np.abs(mean).max())
            np.testing.assert_allclose(var, expected[name][1], rtol=1e-3, atol=1e-5 * var.max())
            assert factor.tolist() == [1.0]
        else:  # convolutions and Scale layers: the input weights
            for w, b in zip(blobs, before[name]):
                np.testing.assert_array_equal(w, b)
    # the deploy net with the written statistics (use_global_stats in TEST) runs
    deploy = trained["tmp"] / "deploy.prototxt"
    deploy.write_text(str(models.deploy_net(segnet.NAME, functools.partial(segnet.body, slim=SLIM),
                                            (1, 3) + SIZE)))
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(out))
    net.blobs["data"].data[...] = np.random.default_rng(1).normal(0, 50, net.blobs["data"].data.shape)
    assert np.isfinite(net.forward()[models.OUTPUT_BLOB]).all()


def test_missing_inputs_are_one_line_errors(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")  # main() sets it; restored after the test
    missing = tmp_path / "none.caffemodel"
    assert compute_bn_stats.main(["--weights", str(missing), "--net", str(trained["net"]),
                                  "--lmdb", str(trained["lmdb"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"compute_bn_stats: {missing}: no such caffemodel")
    assert compute_bn_stats.main(["--weights", str(trained["weights"]), "--net", str(trained["net"]),
                                  "--lmdb", str(tmp_path / "nolmdb"), "--out", str(tmp_path / "x.caffemodel")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'nolmdb' / 'images'}: no LMDB there; run `make encode-data`" in err
    assert not (tmp_path / "x.caffemodel").exists()
    assert compute_bn_stats.default_out("models/segnet/segnet_iter_40000.caffemodel").name == \
        "segnet_iter_40000_bnstats.caffemodel"
