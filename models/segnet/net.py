"""SegNet (Badrinarayanan et al.; SegNet-Tutorial ``segnet_train.prototxt``) as a DCME regressor for BVLC Caffe.

VGG16 encoder (conv1_1..conv5_3, the VGG16 layer names, so ``caffe train -weights VGG_ILSVRC_16_layers.caffemodel``
initialises it; the fc layers of VGG16 are ignored), mirrored decoder with the ``_D`` names, every convolution
followed by BatchNorm + Scale(bias_term) + ReLU (BVLC's form of caffe-segnet's ``BN`` layer), max pooling with the
index top and unpooling by those indices (the native ``Unpool`` layer of dcme_layers/native, or its Python reference
``dcme_layers.net.unpool.Unpool`` with ``python_unpool``; output size from the pre-pooling blob).
The softmax classifier ``conv1_1_D`` is replaced by ``conv1_1_D_dcme`` with 2 outputs (dx, dy; no BN, no ReLU, so
negative offsets are representable) whose top is ``vectors_pred``, trained with EuclideanLoss against the vector map
(DCME paper Sec. 3).

Layer names: those of SegNet-Tutorial's ``segnet_train.prototxt`` where the blobs are the same, with
``models.DCME_SUFFIX`` where they differ, so ``-weights`` with a SegNet-Tutorial caffemodel copies the convolutions
and skips the rest instead of aborting: ``conv1_1_D_dcme`` (2 outputs, not the classes) and the BatchNorm layers
``conv*_bn_dcme`` (caffe-segnet's ``conv*_bn`` are ``BN`` layers with two blobs, scale and shift, which here are the
separate ``conv*_scale`` layers; BVLC's BatchNorm has three, the statistics). The skipped layers keep their fillers.

No pretrained weights are downloaded: every convolution has an msra filler (as SegNet-Tutorial), biases 0.
"""
from functools import partial

from caffe import layers as L, params as P

import models
from dcme_layers.core import paper
from models import CONV_PARAM, MSRA, ZERO

__all__ = ["DECODER", "ENCODER", "HEADERS", "NAME", "PAPER", "SMOKE", "body", "conv_bn_relu", "deploy", "generate",
           "train", "unpool"]

NAME = "segnet"
# Encoder blocks (VGG16): output channels of each convolution.
ENCODER = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
# Decoder blocks, block 5 first, as SegNet: (layer index, output channels), conv<b>_<i>_D.
DECODER = [[(3, 512), (2, 512), (1, 512)], [(3, 512), (2, 512), (1, 256)], [(3, 256), (2, 256), (1, 128)],
           [(2, 128), (1, 64)], [(2, 64)]]

# The paper's lr 1e-8 and batch 15 (DCME Sec. 4), the rest as SegNet-Tutorial's solver; batch 15 runs as 5 x
# iter_size 3, the same update, to fit a 24 GiB machine (with more memory: batch_size 15, iter_size 1, then
# tools/make_prototxt.py). test_iter 100 x 5 covers the 500 Cityscapes val images.
PAPER = dict(batch_size=5, iter_size=3, base_lr=1e-8, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
             max_iter=40000, snapshot=1000, test_iter=100, test_interval=10000000, test_initialization=False,
             display=20, average_loss=20)
# Smoke run (tests, demo): batch 1, twice the paper's lr (set for 340x680: EuclideanLoss sums over the pixels).
SMOKE = dict(batch_size=1, base_lr=2e-8, momentum=0.9, weight_decay=0.0005, lr_policy="fixed", max_iter=8,
             snapshot=8, test_iter=1, test_interval=8, test_initialization=False, display=1, average_loss=1,
             random_seed=1701)

# The comment lines of each generated file, formatted with the facts of models.regressor_files.
SMOKE_HEADER = [
    "Smoke configuration (tests, demo): same net at batch {smoke[batch_size]}, lr {smoke_lr}, {smoke[max_iter]} "
    "iterations (about 4 min at {size}",
    "on 2 CPU cores), then one TEST pass on val. Snapshot: models/segnet/segnet_smoke_iter_{smoke[max_iter]}"
    ".caffemodel"]
HEADERS = dict(
    train=["SegNet DCME regressor: TRAIN on {lmdb}/train, TEST on {lmdb}/val, batch {paper[batch_size]} "
           "(x iter_size {paper[iter_size]} = the paper's {batch})."],
    deploy=["Input: mean-subtracted BGR (paper.MEAN_BGR), {size}. Output: {output} (N, 2, H, W) = (dx, dy) in "
            "pixels."],
    solver=["SegNet DCME regressor, DCME paper settings: lr {lr}, batch {batch} = {paper[batch_size]} "
            "(segnet_train.prototxt) x iter_size {paper[iter_size]},",
            "which fits 24 GiB of CPU memory (batch {batch} at once needs ~42 GiB);",
            "momentum, weight decay, fixed lr, max_iter {paper[max_iter]} ({epochs:.1f} epochs of the {train_frames} "
            "training frames),",
            "snapshot {paper[snapshot]} as SegNet-Tutorial's solver.",
            "Train from the repository root: caffe train -solver prototxt/segnet_solver.prototxt",
            "  [-weights VGG_ILSVRC_16_layers.caffemodel]  (conv1_1..conv5_3 are VGG16's names)"],
    smoke_train=SMOKE_HEADER, smoke_solver=SMOKE_HEADER)


def conv_bn_relu(n, bottom, name, nout, relu, suffix=models.DCME_SUFFIX):
    """3x3 convolution + BatchNorm (layer ``<name>_bn<suffix>``) + Scale + ReLU, all in place on the blob ``name``."""
    n[name] = L.Convolution(bottom, kernel_size=3, pad=1, num_output=nout, weight_filler=MSRA, bias_filler=ZERO,
                            param=CONV_PARAM)
    # BatchNorm's three blobs (mean, variance, moving-average factor) are statistics: Caffe fixes their lr to 0.
    n[name + "_bn" + suffix] = L.BatchNorm(n[name], in_place=True)
    # caffe-segnet's BN: scale init 1, shift init 0.001; scale lr 1 / decay 1, shift lr 1 / decay 0.
    n[name + "_scale"] = L.Scale(n[name + "_bn" + suffix], in_place=True, bias_term=True,
                                 filler=dict(type="constant", value=1), bias_filler=dict(type="constant", value=0.001),
                                 param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=1, decay_mult=0)])
    n[relu] = L.ReLU(n[name + "_scale"], in_place=True)
    return n[relu]


def unpool(n, bottom, block, reference, python=False):
    """Unpool ``bottom`` by the indices of pool<block> to the size of ``reference`` (the pooling input): the native
    ``Unpool`` layer that `make setup` compiles into Caffe (dcme_layers/native), or with ``python`` its reference
    implementation ``dcme_layers.net.unpool.Unpool``, a Python layer that any Caffe with WITH_PYTHON_LAYER runs."""
    bottoms = (bottom, n[f"pool{block}_mask"], reference)
    kw = dict(propagate_down=[True, False, False], name=f"upsample{block}")
    if python:
        n[f"pool{block}_D"] = L.Python(*bottoms, module="dcme_layers.net.unpool", layer="Unpool", **kw)
    else:
        n[f"pool{block}_D"] = L.Unpool(*bottoms, **kw)
    return n[f"pool{block}_D"]


def body(n, python_unpool=False, outputs=2, suffix=models.DCME_SUFFIX, slim=1):
    """Add SegNet from ``n.data`` to ``n.vectors_pred`` (N, 2, H, W); ``python_unpool``: see ``unpool``.
    The tests also build the layout of a SegNet-Tutorial caffemodel (``outputs``: its classes, ``suffix`` "") and
    small variants (``slim``: every convolution has 1/slim of the channels)."""
    top, pre_pool = n.data, {}
    for b, widths in enumerate(ENCODER, 1):
        for i, nout in enumerate(widths, 1):
            top = conv_bn_relu(n, top, f"conv{b}_{i}", nout // slim, f"relu{b}_{i}", suffix)
        pre_pool[b] = top
        n[f"pool{b}"], n[f"pool{b}_mask"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
        top = n[f"pool{b}"]
    for b, convs in zip(range(5, 0, -1), DECODER):
        top = unpool(n, top, b, pre_pool[b], python_unpool)
        for i, nout in convs:
            top = conv_bn_relu(n, top, f"conv{b}_{i}_D", nout // slim, f"relu{b}_{i}_D", suffix)
    n[models.OUTPUT_BLOB] = L.Convolution(top, kernel_size=3, pad=1, num_output=outputs, weight_filler=MSRA,
                                         bias_filler=ZERO, param=CONV_PARAM, name="conv1_1_D" + suffix)
    return n[models.OUTPUT_BLOB]


def train(train_dir=f"{models.LMDB_ROOT}/train", val_dir=f"{models.LMDB_ROOT}/val", batch_size=PAPER["batch_size"],
          python_unpool=False, slim=1):
    """SegNet's train/test NetParameter: TRAIN on the LMDBs in ``train_dir``, TEST on ``val_dir``, EuclideanLoss
    (models.train_net); ``python_unpool``, ``slim``: see ``body``."""
    return models.train_net(NAME, partial(body, python_unpool=python_unpool, slim=slim), train_dir, val_dir,
                            batch_size)


def deploy(shape=(1, 3) + paper.SIZE, loss=False, python_unpool=False, slim=1):
    """SegNet's deploy NetParameter: Input ``data`` of ``shape`` (mean-subtracted BGR) -> ``vectors_pred``
    (models.deploy_net; ``loss``: the train net without LMDBs); ``python_unpool``, ``slim``: see ``body``."""
    return models.deploy_net(NAME, partial(body, python_unpool=python_unpool, slim=slim), shape, loss)


def generate(python_unpool=False):
    """{file name in prototxt/: text}; ``python_unpool``: with the Python Unpool layer, for a Caffe built without
    dcme-caffe's native layers (`tools/make_prototxt.py --python-unpool`)."""
    return models.regressor_files(NAME, HEADERS, partial(train, python_unpool=python_unpool),
                                  partial(deploy, python_unpool=python_unpool), PAPER, SMOKE)
