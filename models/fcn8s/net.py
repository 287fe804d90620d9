"""FCN-8s (Long, Shelhamer & Darrell; fcn.berkeleyvision.org ``voc-fcn8s-atonce/net.py``) as a DCME regressor.

VGG16 with conv1_1 padded by 100, fc6/fc7 as convolutions (7x7 and 1x1, 4096 channels, dropout 0.5), a 1x1 score
layer on fc7, pool4 and pool3 with 2 outputs (dx, dy) instead of 21 classes, the three fixed bilinear
Deconvolutions (x2, x2, x8; 2 channels, group 2 so each channel is upsampled on its own, lr 0) and Crop layers
whose offsets come from ``caffe.coord_map`` (5, 9 and 31, the same for every input size). The final Crop layer is
called ``score`` as in FCN; its top is ``vectors_pred``. EuclideanLoss replaces SoftmaxWithLoss (DCME paper Sec. 3).

Layer names: FCN's, except that the layers whose blobs have 2 channels here instead of VOC's 21 carry
``models.DCME_SUFFIX`` (``score_fr_dcme``, ``upscore2_dcme``, ``score_pool4_dcme``, ``upscore_pool4_dcme``,
``score_pool3_dcme``, ``upscore8_dcme``), so ``-weights`` with an FCN-8s VOC caffemodel copies VGG16's layers, fc6,
fc7 and the skip scalings and skips these instead of aborting on their shapes.

Skip scaling as in FCN-8s at-once (trained all at once, which is what the paper's single lr 1e-10 corresponds to):
pool4 is multiplied by a fixed 0.01 and pool3 by 0.0001 before their score layers ("to better condition
optimization", FCN README).

Weights: no download here, so every convolution has an msra filler (FCN's own net.py sets none because it always
starts from VGG16); the deconvolutions use BVLC's ``bilinear`` filler. With VGG16 weights: fc6/fc7 are
InnerProduct in VGG16, so convert once with ``models/fcn8s/surgery.py`` and pass the result to ``-weights``.
"""
from functools import partial

import numpy as np
from caffe import layers as L, params as P
from caffe.coord_map import coord_map_from_to

import models
from dcme_layers.core import paper
from models import CONV_PARAM, MSRA, ZERO
from models.segnet import net as segnet

__all__ = ["FC", "HEADERS", "NAME", "PAPER", "SMOKE", "VGG16", "body", "conv_relu", "crop", "deploy", "generate",
           "score", "train", "upsample"]

NAME = "fcn8s"
VGG16 = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
FC = 4096  # channels of fc6 and fc7

# The paper's lr 1e-10 and batch 14 (DCME Sec. 4), the rest as fcn.berkeleyvision.org's solvers; batch 14 runs as
# 7 x iter_size 2, the same update, to fit a 24 GiB machine (with more memory: batch_size 14, iter_size 1).
# test_iter 72 x 7 covers the 500 Cityscapes val images.
PAPER = dict(batch_size=7, iter_size=2, base_lr=1e-10, momentum=0.99, weight_decay=0.0005, lr_policy="fixed",
             snapshot=4000, test_iter=72, test_interval=999999999, test_initialization=False, display=20,
             average_loss=20)
# The paper gives no max_iter (FCN's own counts are batch-1 iterations on PASCAL VOC): as many epochs as SegNet's.
PAPER["max_iter"] = round(models.epochs(segnet.PAPER) * models.TRAIN_FRAMES / models.paper_batch(PAPER))
# Smoke run (tests, demo): SegNet's, at the small lr that keeps FCN-8s from scratch stable (for 340x680).
SMOKE = dict(segnet.SMOKE, base_lr=2e-12)

# The comment lines of each generated file, formatted with the facts of models.regressor_files.
SMOKE_HEADER = [
    "Smoke configuration (tests, demo): same net at batch {smoke[batch_size]}, {smoke[max_iter]} iterations "
    "(about 4 min at {size}",
    "on 2 CPU cores), then one TEST pass on val. Snapshot: models/fcn8s/fcn8s_smoke_iter_{smoke[max_iter]}.caffemodel"]
HEADERS = dict(
    train=["FCN-8s DCME regressor: TRAIN on {lmdb}/train, TEST on {lmdb}/val, batch {paper[batch_size]} "
           "(x iter_size {paper[iter_size]} = the paper's {batch})."],
    deploy=segnet.HEADERS["deploy"],
    solver=["FCN-8s DCME regressor, DCME paper settings: lr {lr}, batch {batch} = {paper[batch_size]} "
            "(fcn8s_train.prototxt) x iter_size {paper[iter_size]};",
            "momentum {paper[momentum]}, weight decay 5e-4, fixed lr, snapshot {paper[snapshot]} as "
            "fcn.berkeleyvision.org;",
            "max_iter {paper[max_iter]}: {epochs:.1f} epochs of the {train_frames} Cityscapes training frames, as the "
            "SegNet solver ({segnet_iter} x {segnet_batch}).",
            "Train from the repository root: caffe train -solver prototxt/fcn8s_solver.prototxt",
            "  [-weights models/fcn8s/vgg16-fcn.caffemodel]  (VGG16 converted by models/fcn8s/surgery.py)"],
    smoke_train=SMOKE_HEADER, smoke_solver=SMOKE_HEADER)


def conv_relu(n, bottom, name, nout, relu, ks=3, pad=1):
    """Convolution (msra weights, zero biases) + in-place ReLU."""
    n[name] = L.Convolution(bottom, kernel_size=ks, pad=pad, num_output=nout, weight_filler=MSRA, bias_filler=ZERO,
                            param=CONV_PARAM)
    n[relu] = L.ReLU(n[name], in_place=True)
    return n[relu]


def score(bottom, outputs):
    """1x1 convolution to the ``outputs`` (2 DCME) channels, zero-initialised as FCN's score layers (the prediction
    starts at the all-background map (0, 0); the msra-initialised features below still receive gradients after one
    update)."""
    return L.Convolution(bottom, kernel_size=1, pad=0, num_output=outputs, weight_filler=ZERO, bias_filler=ZERO,
                         param=CONV_PARAM)


def upsample(bottom, ks, stride, outputs):
    """Fixed bilinear upsampling of the ``outputs`` channels (group ``outputs``: each channel on its own)."""
    return L.Deconvolution(bottom, convolution_param=dict(num_output=outputs, group=outputs, kernel_size=ks,
                                                          stride=stride, bias_term=False,
                                                          weight_filler=dict(type="bilinear")),
                           param=[dict(lr_mult=0)])


def crop(top_from, top_to, **kwargs):
    """Crop ``top_from`` to ``top_to`` with the offset from the coordinate mapping (caffe.coord_map.crop)."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    assert (a == 1).all() and (b <= 0).all() and (np.round(b) == b).all(), (a, b)
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=[int(-o) for o in np.round(b)]), **kwargs)


def body(n, outputs=2, suffix=models.DCME_SUFFIX, slim=1):
    """Add FCN-8s from ``n.data`` to ``n.vectors_pred`` (N, 2, H, W). The tests also build the layout of an FCN-8s
    VOC caffemodel (``outputs`` 21, ``suffix`` "") and small variants (``slim``: 1/slim of the channels of VGG16 and
    fc6/fc7)."""
    top = n.data
    for b, widths in enumerate(VGG16, 1):
        for i, nout in enumerate(widths, 1):
            top = conv_relu(n, top, f"conv{b}_{i}", nout // slim, f"relu{b}_{i}", pad=100 if (b, i) == (1, 1) else 1)
        n[f"pool{b}"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        top = n[f"pool{b}"]
    n.drop6 = L.Dropout(conv_relu(n, top, "fc6", FC // slim, "relu6", ks=7, pad=0), dropout_ratio=0.5, in_place=True)
    n.drop7 = L.Dropout(conv_relu(n, n.drop6, "fc7", FC // slim, "relu7", ks=1, pad=0), dropout_ratio=0.5,
                        in_place=True)
    # the score and upscore layers have `outputs` channels: named with `suffix` (models.DCME_SUFFIX)
    score_fr, upscore2 = "score_fr" + suffix, "upscore2" + suffix
    score_pool4, upscore_pool4 = "score_pool4" + suffix, "upscore_pool4" + suffix
    score_pool3, upscore8 = "score_pool3" + suffix, "upscore8" + suffix
    n[score_fr] = score(n.drop7, outputs)
    n[upscore2] = upsample(n[score_fr], 4, 2, outputs)

    n.scale_pool4 = L.Scale(n.pool4, filler=dict(type="constant", value=0.01), param=[dict(lr_mult=0)])
    n[score_pool4] = score(n.scale_pool4, outputs)
    n.score_pool4c = crop(n[score_pool4], n[upscore2])
    n.fuse_pool4 = L.Eltwise(n[upscore2], n.score_pool4c, operation=P.Eltwise.SUM)
    n[upscore_pool4] = upsample(n.fuse_pool4, 4, 2, outputs)

    n.scale_pool3 = L.Scale(n.pool3, filler=dict(type="constant", value=0.0001), param=[dict(lr_mult=0)])
    n[score_pool3] = score(n.scale_pool3, outputs)
    n.score_pool3c = crop(n[score_pool3], n[upscore_pool4])
    n.fuse_pool3 = L.Eltwise(n[upscore_pool4], n.score_pool3c, operation=P.Eltwise.SUM)
    n[upscore8] = upsample(n.fuse_pool3, 16, 8, outputs)
    n[models.OUTPUT_BLOB] = crop(n[upscore8], n.data, name="score")
    return n[models.OUTPUT_BLOB]


def train(train_dir=f"{models.LMDB_ROOT}/train", val_dir=f"{models.LMDB_ROOT}/val", batch_size=PAPER["batch_size"],
          slim=1):
    """FCN-8s' train/test NetParameter: TRAIN on the LMDBs in ``train_dir``, TEST on ``val_dir``, EuclideanLoss
    (models.train_net); ``slim``: see ``body``."""
    return models.train_net(NAME, partial(body, slim=slim), train_dir, val_dir, batch_size)


def deploy(shape=(1, 3) + paper.SIZE, loss=False, slim=1):
    """FCN-8s' deploy NetParameter: Input ``data`` of ``shape`` (mean-subtracted BGR) -> ``vectors_pred``
    (models.deploy_net; ``loss``: the train net without LMDBs); ``slim``: see ``body``."""
    return models.deploy_net(NAME, partial(body, slim=slim), shape, loss)


def generate():
    """{file name in prototxt/: text}."""
    return models.regressor_files(NAME, HEADERS, train, deploy, PAPER, SMOKE, segnet_iter=segnet.PAPER["max_iter"],
                                  segnet_batch=models.paper_batch(segnet.PAPER))
