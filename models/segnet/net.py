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
from caffe import layers as L, params as P

import models
from models import CONV_PARAM, MSRA, ZERO

NAME = "segnet"
# Encoder blocks (VGG16): output channels of each convolution.
ENCODER = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
# Decoder blocks, block 5 first, as SegNet: (layer index, output channels), conv<b>_<i>_D.
DECODER = [[(3, 512), (2, 512), (1, 512)], [(3, 512), (2, 512), (1, 256)], [(3, 256), (2, 256), (1, 128)],
           [(2, 128), (1, 64)], [(2, 64)]]

# Paper (DCME Sec. 4): SegNet trained with lr 1e-8, batch 15. The rest follows SegNet-Tutorial's
# segnet_solver.prototxt: momentum 0.9, weight decay 5e-4, constant lr ("step" with gamma 1.0 there, "fixed" here),
# max_iter 40000, snapshot every 1000, test_interval effectively never, no test at start.
# (1e-8 fits the unnormalised EuclideanLoss: sum over 2 x 340 x 680 squared errors per image / 2N.)
# Batch 15 is run as 5 images x iter_size 3 (Caffe sums the three passes' gradients and divides by 3, so the update
# equals one of batch 15; only BatchNorm sees 5 images at a time, in training and in its moving averages:
# tools/compute_bn_stats.py): batch 15 at once needs ~42 GiB on the CPU (BVLC's BatchNorm keeps extra copies),
# 5 needs ~15 GiB and fits this project's 24 GiB machines (tools/bench_nets.py). With more memory (or a GPU), set
# batch_size 15 and iter_size 1, then run tools/make_prototxt.py. The solver's header states these numbers from
# PAPER and CPU_GIB.
CPU_GIB = dict(machine=24, paper_batch=42)  # this project's machines; the paper's batch in one pass
PAPER = dict(batch_size=5, iter_size=3, base_lr=1e-8, momentum=0.9, weight_decay=0.0005, lr_policy="fixed", max_iter=40000,
             snapshot=1000, test_iter=100, test_interval=10000000, test_initialization=False, display=20,
             average_loss=20)  # test_iter 100 x 5 covers the 500 Cityscapes val images when a test is run
# Smoke configuration for the tests and the demo: same net at batch 1, SGD with twice the paper's lr, then one TEST
# pass on val. 8 iterations: one takes ~25 s at 340x680 on 2 CPU cores (tools/bench_nets.py), so about 4 minutes.
# EuclideanLoss sums over pixels, so the lr is for 340x680; at other sizes scale it by the pixel ratio (the tests
# use 2.3e-6 at 32x64, where the loss falls to under half within 36 iterations).
SMOKE = dict(batch_size=1, base_lr=2e-8, momentum=0.9, weight_decay=0.0005, lr_policy="fixed", max_iter=8,
             snapshot=8, test_iter=1, test_interval=8, test_initialization=False, display=1, average_loss=1,
             random_seed=1701)


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


REGRESSOR = models.Regressor(
    NAME, "SegNet", body, PAPER, SMOKE,
    [f"which fits {CPU_GIB['machine']} GiB of CPU memory (batch {models.paper_batch(PAPER)} at once needs "
     f"~{CPU_GIB['paper_batch']} GiB);",
     f"momentum, weight decay, fixed lr, max_iter {PAPER['max_iter']} ({models.epochs(PAPER):.1f} epochs of the "
     f"{models.TRAIN_FRAMES} training frames),",
     f"snapshot {PAPER['snapshot']} as SegNet-Tutorial's solver."],
    "VGG_ILSVRC_16_layers.caffemodel", "conv1_1..conv5_3 are VGG16's names",
    smoke_minutes=4, smoke_detail=f"lr {models.lr_text(SMOKE['base_lr'])}, ", settings_end=",")
train, deploy = REGRESSOR.train, REGRESSOR.deploy  # options: python_unpool (see unpool)


def generate(python_unpool=False):
    """{file name in prototxt/: text} for SegNet (``python_unpool``: with the Python Unpool layer, for a Caffe built
    without dcme-caffe's native layers: `tools/make_prototxt.py --python-unpool`)."""
    return REGRESSOR.generate(python_unpool=python_unpool)
