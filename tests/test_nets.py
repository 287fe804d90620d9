"""The nets of models/ (prototxt/): the SegNet and FCN-8s DCME regressors' train nets initialise on LMDBs from
tools/encode_data.py at the paper's 340x680 and at small odd sizes with a 2-channel output of the input's size, the
solvers carry the paper's settings, VGG16 weights fit, a short smoke training lowers the training loss, the `caffe
time` nets choose their engine; GoogLeNet's generated files, train and deploy nets, and smoke training."""
import functools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import helpers
from helpers import separable_crops, write_lmdb

caffe = helpers.import_caffe()
from caffe import layers as L  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

import models  # noqa: E402
from dcme_layers.core import paper
from dcme_layers.data.lmdb_io import encode_dataset, read_datum_lmdb
from models.fcn8s import net as fcn8s, surgery  # noqa: E402
from models.segnet import net as segnet  # noqa: E402

caffe.set_mode_cpu()
NETS = {"segnet": segnet, "fcn8s": fcn8s}
# VGG16 (ILSVRC) convolution weight shapes: `caffe train -weights VGG16.caffemodel` copies these by name.
VGG16_CONV = {"conv1_1": (64, 3, 3, 3), "conv1_2": (64, 64, 3, 3), "conv2_1": (128, 64, 3, 3),
              "conv2_2": (128, 128, 3, 3), "conv3_1": (256, 128, 3, 3), "conv3_2": (256, 256, 3, 3),
              "conv3_3": (256, 256, 3, 3), "conv4_1": (512, 256, 3, 3), "conv4_2": (512, 512, 3, 3),
              "conv4_3": (512, 512, 3, 3), "conv5_1": (512, 512, 3, 3), "conv5_2": (512, 512, 3, 3),
              "conv5_3": (512, 512, 3, 3)}


def encode(root, out, size):
    encode_dataset(root, out, size=size, workers=1, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def lmdb_paper(tiny_cityscapes, tmp_path_factory):
    """Synthetic frames encoded at the paper's 340x680."""
    return encode(tiny_cityscapes, tmp_path_factory.mktemp("lmdb_340x680"), paper.SIZE)


@pytest.fixture(scope="module")
def lmdb_odd(tiny_cityscapes, tmp_path_factory):
    """Small odd size: every SegNet pooling rounds up (37 -> 19 -> 10 -> 5 -> 3 -> 2)."""
    return encode(tiny_cityscapes, tmp_path_factory.mktemp("lmdb_37x51"), (37, 51))


def write(path, text):
    path.write_text(text)
    return str(path)


def train_net(tmp_path, name, lmdb, batch_size=1, phase=caffe.TRAIN):
    proto = NETS[name].train(f"{lmdb}/train", f"{lmdb}/val", batch_size)
    return caffe.Net(write(tmp_path / f"{name}_train.prototxt", str(proto)), phase)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segnet", "fcn8s"])
def test_train_net_initialises_at_paper_size(tmp_path, lmdb_paper, name):
    for phase in (caffe.TRAIN, caffe.TEST):
        net = train_net(tmp_path, name, lmdb_paper, phase=phase)
        assert net.blobs["data"].data.shape == (1, 3, 340, 680)
        assert net.blobs["vectors"].data.shape == (1, 2, 340, 680)
        assert net.blobs[models.OUTPUT_BLOB].data.shape == (1, 2, 340, 680)
        assert "loss" in net.outputs
        types = [layer.type for layer in net.layers]
        if name == "segnet":  # the native unpooling layer of dcme_layers/native, no Python layer
            assert types.count("Unpool") == 5 and "Python" not in types


# first learned layer that receives a gradient at initialisation (FCN's score layers start at zero, blocking it below)
@pytest.mark.slow
@pytest.mark.parametrize("name,batch,learned", [("segnet", 2, "conv1_1"), ("fcn8s", 1, "score_fr_dcme")])
def test_train_net_runs_on_small_odd_input(tmp_path, lmdb_odd, name, batch, learned):
    net = train_net(tmp_path, name, lmdb_odd, batch_size=batch)
    loss = float(net.forward()["loss"])
    assert net.blobs[models.OUTPUT_BLOB].data.shape == (batch, 2, 37, 51)
    # the Data layers deliver the encoded frames, in LMDB order, aligned: image 0 and vector map 0 of train
    (_, img0), (_, vec0) = next(read_datum_lmdb(f"{lmdb_odd}/train/images")), \
        next(read_datum_lmdb(f"{lmdb_odd}/train/vectors"))
    np.testing.assert_allclose(net.blobs["data"].data[0] + np.array(paper.MEAN_BGR, np.float32)[:, None, None],
                               img0, atol=1e-3)
    np.testing.assert_array_equal(net.blobs["vectors"].data[0], vec0)
    pred, target = net.blobs[models.OUTPUT_BLOB].data, net.blobs["vectors"].data
    assert loss == pytest.approx(np.sum((pred.astype(np.float64) - target) ** 2) / 2 / batch, rel=1e-4)
    net.backward()
    grad = net.params[learned][0].diff
    assert bool(np.isfinite(grad).all()) and float(np.abs(grad).sum()) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segnet", "fcn8s"])
def test_deploy_net_follows_the_input_size(repo, name):
    net = caffe.Net(str(repo / "prototxt" / f"{name}_deploy.prototxt"), caffe.TEST)
    assert net.outputs == [models.OUTPUT_BLOB]
    assert net.blobs[models.OUTPUT_BLOB].data.shape == (1, 2, 340, 680)
    for blobs in net.params.values():  # BatchNorm statistics as after training (untrained ones are all zero)
        if len(blobs) == 3:
            blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0, 1, 1
    net.blobs["data"].reshape(1, 3, 21, 35)
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(0, 50, (1, 3, 21, 35))
    out = net.forward()[models.OUTPUT_BLOB]
    assert out.shape == (1, 2, 21, 35) and np.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segnet", "fcn8s"])
def test_vgg16_layers_match_for_weights(repo, name):
    net = caffe.Net(str(repo / "prototxt" / f"{name}_deploy.prototxt"), caffe.TEST)
    for layer, shape in VGG16_CONV.items():
        assert net.params[layer][0].data.shape == shape, layer
        assert net.params[layer][1].data.shape == (shape[0],), layer
    if name == "fcn8s":  # fully convolutional fc6/fc7: same number of weights as VGG16's InnerProduct layers
        assert net.params["fc6"][0].data.size == 4096 * 25088
        assert net.params["fc7"][0].data.size == 4096 * 4096


@pytest.mark.slow
def test_surgery_transplant_turns_inner_product_into_equivalent_convolution(tmp_path):
    """surgery.transplant: InnerProduct weights poured into a same-count convolution give the same outputs."""
    ip, conv = caffe.NetSpec(), caffe.NetSpec()
    ip.data = conv.data = L.Input(shape=dict(dim=[2, 3, 4, 5]))
    ip.fc6 = L.InnerProduct(ip.data, num_output=6, weight_filler=dict(type="gaussian", std=1),
                            bias_filler=dict(type="gaussian", std=1))
    conv.fc6 = L.Convolution(conv.data, num_output=6, kernel_size=[4, 5])
    net_ip = caffe.Net(write(tmp_path / "ip.prototxt", str(ip.to_proto())), caffe.TEST)
    net_conv = caffe.Net(write(tmp_path / "conv.prototxt", str(conv.to_proto())), caffe.TEST)
    assert surgery.transplant(net_conv, net_ip) == ["fc6"]
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    net_ip.blobs["data"].data[...] = x
    net_conv.blobs["data"].data[...] = x
    np.testing.assert_allclose(net_conv.forward()["fc6"].reshape(2, 6), net_ip.forward()["fc6"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.slow
def test_fcn_upsampling_is_fixed_bilinear(repo):
    """The group-2 bilinear filler equals FCN's upsample_filt kernel on each channel and is not learned."""
    net = caffe.Net(str(repo / "prototxt" / "fcn8s_deploy.prototxt"), caffe.TEST)
    for layer, k in (("upscore2_dcme", 4), ("upscore_pool4_dcme", 4), ("upscore8_dcme", 16)):
        w = net.params[layer][0].data
        assert w.shape == (2, 1, k, k)
        np.testing.assert_allclose(w[:, 0], np.stack([surgery.upsample_filt(k)] * 2), atol=1e-6)
        before = w.copy()
        surgery.interp(net, [layer])
        np.testing.assert_allclose(net.params[layer][0].data, before, atol=1e-6)
    proto = caffe_pb2.NetParameter()
    text_format.Merge((repo / "prototxt" / "fcn8s_train.prototxt").read_text(), proto)
    deconvs = [lay for lay in proto.layer if lay.type == "Deconvolution"]
    assert len(deconvs) == 3 and all(lay.param[0].lr_mult == 0 for lay in deconvs)
    crops = {lay.name: list(lay.crop_param.offset) for lay in proto.layer if lay.type == "Crop"}
    assert crops == {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}


# --- reference caffemodels -------------------------------------------------------------------------------------
# Classes of the reference nets' classifiers: SegNet-Tutorial's CamVid segnet_train.prototxt (conv1_1_D) and
# fcn.berkeleyvision.org's voc-fcn8s (score_fr, score_pool4, score_pool3, upscore*).
REFERENCE_CLASSES = {"segnet": 11, "fcn8s": 21}
SLIM = 16  # the weight tests use 1/16 of the channels (the layer names and the reshaped layers are the same)
TINY = (1, 3, 32, 32)


def tiny_deploy(tmp_path, name, file, **body):
    """Write the deploy net of ``name``'s body(**body) at 1/SLIM of the channels on a TINY input to
    ``tmp_path/file``; returns the path."""
    proto = models.deploy_net(name, functools.partial(NETS[name].body, slim=SLIM, **body), TINY)
    return write(tmp_path / file, str(proto))


def tiny_net(tmp_path, name, file, **body):
    """caffe.Net (TEST) of ``tiny_deploy``."""
    return caffe.Net(tiny_deploy(tmp_path, name, file, **body), caffe.TEST)


def reference_caffemodel(tmp_path, name):
    """A caffemodel with the layer names and blobs of the reference net (at 1/SLIM of the channels) and random
    weights: the generator with the reference classes and names; for SegNet, caffe-segnet's form of batch
    normalisation as in a SegNet-Tutorial caffemodel: a ``BN`` layer ``conv*_bn`` with two blobs (scale and shift,
    (1, C, 1, 1)) and no Scale layer. Returns {layer: [blob arrays]} and the file."""
    ref = tiny_net(tmp_path, name, "reference.prototxt", outputs=REFERENCE_CLASSES[name], suffix="")
    rng = np.random.default_rng(0)
    for blobs in ref.params.values():
        for b in blobs:
            b.data[...] = rng.normal(size=b.data.shape)
    path = tmp_path / "reference.caffemodel"
    ref.save(str(path))
    proto = caffe_pb2.NetParameter()
    proto.ParseFromString(path.read_bytes())
    layers = []
    for layer in proto.layer:
        if layer.type == "Scale" and layer.name.endswith("_scale"):
            continue
        if layer.type == "BatchNorm":
            channels = layer.blobs[0].shape.dim[0]
            layer.type = "BN"
            del layer.blobs[:]
            for _ in range(2):
                layer.blobs.add().CopyFrom(caffe.io.array_to_blobproto(rng.normal(size=(1, channels, 1, 1))))
        layers.append(layer)
    del proto.layer[:]
    proto.layer.extend(layers)
    path.write_bytes(proto.SerializeToString())
    weights = {layer.name: [caffe.io.blobproto_to_array(b) for b in layer.blobs] for layer in proto.layer if layer.blobs}
    return weights, path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segnet", "fcn8s"])
def test_reference_caffemodel_loads_and_skips_the_reshaped_layers(tmp_path, name):
    """`-weights` with a SegNet-Tutorial / FCN-8s VOC caffemodel (Net::CopyTrainedLayersFrom, here copy_from) copies
    every layer whose name and blobs match and skips exactly the DCME_SUFFIX layers and those the reference lacks."""
    weights, path = reference_caffemodel(tmp_path, name)
    net = tiny_net(tmp_path, name, "dcme.prototxt")
    before = {layer: [b.data.copy() for b in blobs] for layer, blobs in net.params.items()}
    net.copy_from(str(path))
    copied = set()
    for layer, blobs in net.params.items():
        after = [b.data for b in blobs]
        if layer in weights and [w.shape for w in weights[layer]] == [a.shape for a in after]:
            copied.add(layer)
            for a, w in zip(after, weights[layer]):
                np.testing.assert_array_equal(a, w.astype(np.float32))
        else:
            for a, b in zip(after, before[layer]):
                np.testing.assert_array_equal(a, b)
            # a layer that is not copied has a name of its own: suffixed or absent from the reference
            assert layer.endswith(models.DCME_SUFFIX) or layer not in weights, layer
    assert set(VGG16_CONV) <= copied
    suffixed = {layer[:-len(models.DCME_SUFFIX)] for layer in net.params if layer.endswith(models.DCME_SUFFIX)}
    for layer in suffixed:  # each renamed layer needs it: the reference's layer of that name has other blobs
        assert [w.shape for w in weights[layer]] != [b.data.shape for b in net.params[layer + models.DCME_SUFFIX]]
    if name == "fcn8s":
        assert suffixed == {"score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3", "upscore8"}
        assert copied == set(net.params) - {s + models.DCME_SUFFIX for s in suffixed}  # fc6, fc7, scale_pool*
    else:
        bn = {f"{layer}_bn" for layer in VGG16_CONV} | {f"conv{b}_{i}_D_bn" for b, c in zip(range(5, 0, -1),
                                                                                         segnet.DECODER) for i, _ in c}
        assert suffixed == {"conv1_1_D"} | bn
    # the same weights abort Caffe on a net with the reference names (what the suffix prevents)
    unsuffixed = tiny_deploy(tmp_path, name, "unsuffixed.prototxt", suffix="")
    run = subprocess.run([sys.executable, "-c", "import sys, caffe; caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)",
                          unsuffixed, str(path)], capture_output=True, text=True)
    assert run.returncode != 0
    assert ("Incompatible number of blobs" if name == "segnet" else "shape mismatch") in run.stderr, run.stderr[-2000:]


def read_solver(path):
    s = caffe_pb2.SolverParameter()
    text_format.Merge(path.read_text(), s)
    return s


def data_batch_sizes(path):
    proto = caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), proto)
    return {(lay.include[0].phase, lay.name): lay.data_param.batch_size for lay in proto.layer if lay.type == "Data"}


@pytest.mark.parametrize("name,lr,batch", [("segnet", 1e-8, 15), ("fcn8s", 1e-10, 14)])
def test_paper_solvers(repo, name, lr, batch):
    s = read_solver(repo / "prototxt" / f"{name}_solver.prototxt")
    assert s.base_lr == pytest.approx(lr) and s.lr_policy == "fixed" and s.type in ("", "SGD")
    assert s.net == f"prototxt/{name}_train.prototxt" and (repo / s.net).is_file()
    assert (repo / os.path.dirname(s.snapshot_prefix)).is_dir()  # Caffe does not create it
    sizes = data_batch_sizes(repo / s.net)
    assert len(sizes) == 4 and len(set(sizes.values())) == 1  # images and vectors, TRAIN and TEST, aligned
    assert sizes[(caffe_pb2.TRAIN, "data")] * max(s.iter_size, 1) == batch  # the paper's batch, per update
    smoke = read_solver(repo / "prototxt" / f"{name}_smoke_solver.prototxt")
    assert (repo / smoke.net).is_file() and (repo / os.path.dirname(smoke.snapshot_prefix)).is_dir()
    assert set(data_batch_sizes(repo / smoke.net).values()) == {NETS[name].SMOKE["batch_size"]}


def test_fcn8s_solver_runs_as_many_epochs_as_segnet(repo):
    """FCN-8s's max_iter follows the stated rule: the images per training run (max_iter x data batch x iter_size of
    the committed solvers) of FCN-8s equal SegNet's to within one of FCN-8s's batches."""
    images = {}
    for name in ("segnet", "fcn8s"):
        s = read_solver(repo / "prototxt" / f"{name}_solver.prototxt")
        batch = data_batch_sizes(repo / s.net)[(caffe_pb2.TRAIN, "data")] * max(s.iter_size, 1)
        images[name] = (s.max_iter * batch, batch)
    assert images["segnet"][0] == segnet.PAPER["max_iter"] * 15
    assert abs(images["fcn8s"][0] - images["segnet"][0]) <= images["fcn8s"][1] / 2, images
    assert models.epochs(fcn8s.PAPER) == pytest.approx(images["segnet"][0] / models.TRAIN_FRAMES, rel=1e-4)


# --- short trainings on the synthetic LMDBs ---------------------------------------------------------------------
# Small crops keep the tests fast. EuclideanLoss sums over the pixels, so the gradient grows with H x W: the smoke
# learning rates (set for 340x680) are scaled by the pixel ratio, the same step per pixel as the demo's.
TRAIN_SIZE = (32, 64)
PIXEL_RATIO = paper.SIZE[0] * paper.SIZE[1] / (TRAIN_SIZE[0] * TRAIN_SIZE[1])


@pytest.fixture(scope="module")
def lmdb_train(tiny_cityscapes, tmp_path_factory):
    return encode(tiny_cityscapes, tmp_path_factory.mktemp("lmdb_32x64"), TRAIN_SIZE)


def zero_prediction_loss(lmdb):
    """EuclideanLoss of predicting the background (0, 0) everywhere, per training frame (batch 1)."""
    return np.array([np.sum(v.astype(np.float64) ** 2) / 2 for _, v in read_datum_lmdb(f"{lmdb}/train/vectors")])


def smoke_solver(tmp_path, name, train_dir, val_dir, **changes):
    """The smoke solver of prototxt/ generated for LMDBs elsewhere, with the learning rate scaled to TRAIN_SIZE."""
    mod = NETS[name]
    net = write(tmp_path / f"{name}_smoke_train.prototxt", str(mod.train(train_dir, val_dir, mod.SMOKE["batch_size"])))
    settings = dict(mod.SMOKE, base_lr=mod.SMOKE["base_lr"] * PIXEL_RATIO, **changes)
    return write(tmp_path / f"{name}_smoke_solver.prototxt", models.solver(net, str(tmp_path / name), settings))


@pytest.mark.slow
def test_segnet_caffe_train_learns_the_vector_map(repo, tmp_path, lmdb_train):
    """`caffe train -solver ...` (the user's command) on the 3 training frames: the loss of the last 2 passes over
    them is far below that of the first 2 and below predicting the background everywhere."""
    iters, frames = 36, 3
    solver = smoke_solver(tmp_path, "segnet", f"{lmdb_train}/train", f"{lmdb_train}/val", max_iter=iters,
                          snapshot=iters, test_interval=iters)
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    run = subprocess.run([str(helpers.caffe_binary()), "train", "-solver", solver], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    losses = [float(m) for m in re.findall(r"Iteration \d+ \(.*?\), loss = (\S+)", run.stderr)]
    assert len(losses) == iters
    first, last = np.mean(losses[:2 * frames]), np.mean(losses[-2 * frames:])
    zero = zero_prediction_loss(lmdb_train).mean()
    assert first > 0.9 * zero  # starts near "everything is background"
    assert last < 0.6 * first and last < 0.75 * zero, (first, last, zero, losses)
    test = re.findall(r"Test net output #0: loss = (\S+)", run.stderr)  # the TEST phase on val ran at the end
    assert len(test) == 1 and np.isfinite(float(test[0]))
    assert (tmp_path / f"segnet_iter_{iters}.caffemodel").is_file()


@pytest.mark.slow
def test_fcn8s_training_lowers_the_loss_below_background_prediction(tmp_path, lmdb_train):
    """pycaffe solver on the 3 training frames; the loss is measured without dropout (TEST phase pointed at the
    training frames). The zero-initialised score layers start exactly at the all-background loss. From scratch
    FCN-8s learns slowly at the largest stable lr, so the asserted drop is small, but it is deterministic (fixed
    random_seed, no dropout in the measurement) and the training stays stable."""
    iters = 10
    solver = caffe.get_solver(smoke_solver(tmp_path, "fcn8s", f"{lmdb_train}/train", f"{lmdb_train}/train",
                                           max_iter=iters, test_iter=3))
    test_net = solver.test_nets[0]

    def train_frames_loss():
        test_net.share_with(solver.net)
        return np.array([float(test_net.forward()["loss"]) for _ in range(3)])

    zero = zero_prediction_loss(lmdb_train)
    before = train_frames_loss()
    np.testing.assert_allclose(before, zero, rtol=1e-4)
    losses = []
    for _ in range(iters):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    after = train_frames_loss()
    assert np.isfinite(losses).all() and max(losses) < 1.5 * zero.max(), losses
    assert after.mean() < 0.995 * before.mean(), (before, after, losses)


# --- `caffe time` nets (models.timing_net), what tools/gpu_check.py times on the GPU ----------------------------------

ENGINE_PARAM = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
                "Pooling": "pooling_param", "ReLU": "relu_param"}


@pytest.mark.parametrize("mod,batch", [(segnet, 15), (fcn8s, 14)])
def test_timing_nets_choose_the_engine(mod, batch):
    for caffe_engine in (False, True):
        net = models.timing_net(mod.NAME, mod.body, batch, caffe_engine=caffe_engine)
        data = net.layer[0]
        assert data.type == "DummyData" and [list(s.dim) for s in data.dummy_data_param.shape] == \
            [[batch, 3, 340, 680], [batch, 2, 340, 680]]
        assert all(f.type == "gaussian" for f in data.dummy_data_param.data_filler)  # never timed on zeros
        assert net.layer[-1].type == "EuclideanLoss"
        engines = [getattr(layer, ENGINE_PARAM[layer.type]).engine for layer in net.layer
                   if layer.type in ENGINE_PARAM]
        assert len(engines) > 20
        expected = caffe_pb2.ConvolutionParameter.CAFFE if caffe_engine else caffe_pb2.ConvolutionParameter.DEFAULT
        assert set(engines) == {expected}  # (CAFFE is 1 and DEFAULT 0 in every one of these enums)


# --- GoogLeNet (models/googlenet), the instance classifier ------------------------------------------------------------

def _param_count(net):
    return {name: sum(b.data.size for b in blobs) for name, blobs in net.params.items()}


def test_googlenet_generated_prototxt_is_committed(repo, caffe):
    from models.googlenet import net

    files = net.generate()
    assert sorted(files) == ["googlenet_deploy.prototxt", "googlenet_smoke_solver.prototxt",
                             "googlenet_smoke_train.prototxt", "googlenet_solver.prototxt", "googlenet_train.prototxt"]
    for name, text in files.items():
        assert text.startswith("# Generated by tools/make_prototxt.py from models/googlenet/net.py; do not edit.")
        assert (repo / "prototxt" / name).read_text() == text, f"prototxt/{name} is stale: make prototxt"
    solver = files["googlenet_solver.prototxt"]
    for line in ('lr_policy: "poly"', "base_lr: 0.001", "momentum: 0.9", "weight_decay: 0.0002", "power: 0.5",
                 'snapshot_prefix: "models/googlenet/googlenet"', "solver_mode: CPU",
                 'net: "prototxt/googlenet_train.prototxt"'):
        assert line in solver
    losses = {l.name: (l.bottom[0], [round(w, 6) for w in l.loss_weight]) for l in net.train("a", "b").layer
              if l.type == "SoftmaxWithLoss"}
    assert losses == {"loss1/loss": ("loss1/classifier_cs", [0.3]), "loss2/loss": ("loss2/classifier_cs", [0.3]),
                      "loss3/loss3": ("loss3/classifier_cs", [1.0])}
    train = files["googlenet_train.prototxt"]
    assert "batch_size: 64" in train and 'source: "data/instances/train"' in train
    assert 'source: "data/instances/val"' in train


@pytest.mark.slow
def test_googlenet_train_and_deploy_nets(caffe, tmp_path):
    """The train net initialises on an LMDB (3 weighted heads, 8 classes) and the deploy net gives (1, 8)
    probabilities; the learnable layers are BVLC GoogLeNet's (same names, same sizes) but for the classifiers."""
    from models.googlenet import net

    crops, labels = separable_crops(4)
    write_lmdb(tmp_path / "train", crops, labels)
    train = tmp_path / "train.prototxt"
    train.write_text(str(net.train(str(tmp_path / "train"), str(tmp_path / "train"), batch_size=2,
                                       test_batch_size=2)))
    tnet = caffe.Net(str(train), caffe.TRAIN)
    out = tnet.forward()
    assert set(out) == {"loss1/loss1", "loss2/loss2", "loss3/loss3"}
    for head in ("loss1", "loss2", "loss3"):  # each head: mean softmax cross-entropy of its 8-way classifier
        scores = tnet.blobs[head + "/classifier_cs"].data.astype(np.float64)
        assert scores.shape == (2, 8)
        logp = scores - scores.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        assert float(out[f"{head}/{head}"]) == pytest.approx(-logp[[0, 1], labels[:2]].mean(), rel=1e-4)
    assert tnet.blobs["data"].data.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(tnet.blobs["label"].data, labels[:2])
    test = caffe.Net(str(train), caffe.TEST)
    assert {"loss1/top-1", "loss2/top-1", "loss3/top-1"} <= set(test.forward())

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(net.deploy()))
    dnet = caffe.Net(str(deploy), caffe.TEST)
    dnet.blobs["data"].data[...] = np.random.default_rng(0).normal(0, 50, (1, 3, 224, 224))
    prob = dnet.forward()["prob"]
    assert prob.shape == (1, 8) and abs(float(prob.sum()) - 1) < 1e-5 and np.all(prob > 0)

    counts = _param_count(tnet)
    classifiers = {"loss1/classifier_cs": 1024 * 8 + 8, "loss2/classifier_cs": 1024 * 8 + 8,
                   "loss3/classifier_cs": 1024 * 8 + 8}
    for name, n in classifiers.items():
        assert counts.pop(name) == n
    # BVLC bvlc_googlenet/train_val.prototxt without its three 1000-way classifiers: 57 + 2 convolutions,
    # 2 auxiliary fc layers; 10,303,280 weights and biases (counted from the BVLC prototxt).
    assert len(counts) == 61 and "inception_5b/pool_proj" in counts and "loss2/fc" in counts
    assert sum(counts.values()) == 10303280
    assert _param_count(dnet) == {k: v for k, v in _param_count(tnet).items()
                                  if not k.startswith(("loss1/", "loss2/"))}


@pytest.mark.slow
def test_googlenet_smoke_training_lowers_the_loss(smoke):
    losses = smoke["losses"]
    print("GoogLeNet smoke: %.2f s/iter (batch 4), loss %.3f -> %.3f" % (smoke["s_per_iter"], losses[0],
                                                                        np.mean(losses[-3:])))
    assert np.isfinite(losses).all() and losses[0] > 2
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
