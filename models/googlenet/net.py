"""GoogLeNet (Inception v1) for the 8 Cityscapes instance classes, as a caffe.NetSpec.

Layer for layer BVLC `models/bvlc_googlenet/train_val.prototxt` (same layer names, fillers, lr/decay multipliers,
three loss heads with loss weights 0.3 / 0.3 / 1), so `caffe train -weights bvlc_googlenet.caffemodel` fine-tunes it.
Only the three 1000-way classifiers are replaced by 8-way ones named `loss{1,2,3}/classifier_cs`, which
`copy_from` skips because the names differ.

Inputs are 224x224 BGR crops around each instance (dcme_layers/net/classify.py), minus mean_value 104 117 123
(BVLC's values); labels are class indices 0..7 in Cityscapes trainId order (dcme_layers.data.cityscapes.CLASS_INDEX).
The LMDB crops are already 224x224 (no crop_size, unlike BVLC's 256 -> 224 random crops). No data augmentation, as
the paper says: BVLC's TRAIN-phase mirroring is off unless asked for (`mirror`, `tools/make_prototxt.py
--googlenet-mirror`).
"""
import caffe
from caffe import layers as L, params as P
from google.protobuf import text_format

import models
from dcme_layers.core import paper
from models import CONV_PARAM

__all__ = ["HEADERS", "INCEPTION", "NAME", "NUM_CLASSES", "PAPER", "SMOKE", "SOLVER_ORDER", "aux_head", "body",
           "classifier", "conv_relu", "data_spec", "deploy", "generate", "inception", "train"]

NAME = "googlenet"
NUM_CLASSES = 8

# (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) per inception module (Szegedy et al. 2015, Table 1).
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}

# The paper's "poly" lr 1e-3 and batch 64, the rest as BVLC's quick_solver.prototxt (models.solver settings;
# batch_size and test_batch_size are the Data layers').
PAPER = dict(base_lr=1e-3, lr_policy="poly", power=0.5, momentum=0.9, weight_decay=0.0002, max_iter=20000,
             batch_size=64, test_batch_size=50, test_iter=100, test_interval=1000, display=20, average_loss=20,
             snapshot=2000)
# Smoke run (tests, demo): the paper's solver at batch 8 for 30 iterations, no TEST phase, one snapshot at the end.
SMOKE = dict(PAPER, max_iter=30, batch_size=8, display=5, average_loss=5, test_iter=None, snapshot=None,
             random_seed=1337)
# The solver files list their fields in this order (net first, the lr schedule before display).
SOLVER_ORDER = ("net", "test_iter", "test_interval", "test_initialization", "base_lr", "lr_policy", "power",
                "display", "average_loss", "max_iter", "momentum", "weight_decay", "snapshot", "snapshot_prefix",
                "solver_mode", "random_seed")

# The comment lines of each generated file, formatted with the facts of ``generate``.
CROPS_HEADER = "crops of 3x224x224 from {instances}/{{train,val}} (tools/extract_instances.py); {augmentation}"
HEADERS = dict(
    train=["Batch {paper[batch_size]} " + CROPS_HEADER],
    deploy=[],
    solver=["Paper: lr_policy poly, base_lr 1e-3, batch 64 (batch_size of the train net's Data layer); power,",
            "momentum, weight decay as BVLC's bvlc_googlenet/quick_solver.prototxt. max_iter {paper[max_iter]} x 64 "
            "crops is",
            "about 25 epochs of Cityscapes' ~50k fine train instances. solver_mode CPU: this Caffe is CPU_ONLY.",
            "Train from the repository root after tools/extract_instances.py:",
            "  caffe train -solver prototxt/googlenet_solver.prototxt [-weights bvlc_googlenet.caffemodel]"],
    smoke_train=["Batch {smoke[batch_size]} " + CROPS_HEADER],
    smoke_solver=["Smoke run (tests, demo): the paper's solver at batch {smoke[batch_size]} for {smoke[max_iter]} "
                  "iterations, no TEST phase; the",
                  "snapshot after the last iteration is {snapshots}/googlenet_smoke_iter_{smoke[max_iter]}"
                  ".caffemodel."])
# The train nets' augmentation, by `mirror`, as the headers say it.
AUGMENTATION = {False: "no augmentation, as the paper.",
                True: "random mirroring (tools/make_prototxt.py --googlenet-mirror)."}


def conv_relu(n, name, bottom, num_output, kernel_size, stride=1, pad=0, relu=None):
    """Convolution + in-place ReLU with BVLC GoogLeNet's fillers (xavier, bias 0.2) and lr/decay multipliers."""
    shape = dict(kernel_size=kernel_size)
    if stride != 1:
        shape["stride"] = stride
    if pad:
        shape["pad"] = pad
    n[name] = L.Convolution(bottom, num_output=num_output, param=CONV_PARAM, weight_filler=dict(type="xavier"),
                            bias_filler=dict(type="constant", value=0.2), **shape)
    relu = relu or "%s/relu_%s" % tuple(name.split("/"))
    n[relu] = L.ReLU(n[name], in_place=True)
    return n[relu]


def inception(n, bottom, module, slim=1):
    """Inception module `inception_<module>`: 1x1, 1x1->3x3, 1x1->5x5 and 3x3 max pool->1x1, concatenated
    (1/slim of the channels)."""
    c1, r3, c3, r5, c5, pp = (c // slim for c in INCEPTION[module])
    x = "inception_" + module
    b1 = conv_relu(n, x + "/1x1", bottom, c1, 1)
    b3 = conv_relu(n, x + "/3x3", conv_relu(n, x + "/3x3_reduce", bottom, r3, 1), c3, 3, pad=1)
    b5 = conv_relu(n, x + "/5x5", conv_relu(n, x + "/5x5_reduce", bottom, r5, 1), c5, 5, pad=2)
    n[x + "/pool"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    bp = conv_relu(n, x + "/pool_proj", n[x + "/pool"], pp, 1)
    n[x + "/output"] = L.Concat(b1, b3, b5, bp)
    return n[x + "/output"]


def classifier(n, name, bottom, num_classes):
    n[name] = L.InnerProduct(bottom, num_output=num_classes, param=CONV_PARAM, weight_filler=dict(type="xavier"),
                             bias_filler=dict(type="constant", value=0))
    return n[name]


def aux_head(n, head, bottom, label, num_classes, accuracy, slim=1):
    """Auxiliary classifier `loss1` / `loss2`: 5x5/3 average pool, 1x1 conv 128, fc 1024, dropout 0.7, loss 0.3."""
    n[head + "/ave_pool"] = L.Pooling(bottom, pool=P.Pooling.AVE, kernel_size=5, stride=3)
    x = conv_relu(n, head + "/conv", n[head + "/ave_pool"], 128 // slim, 1)
    n[head + "/fc"] = L.InnerProduct(x, num_output=1024 // slim, param=CONV_PARAM, weight_filler=dict(type="xavier"),
                                     bias_filler=dict(type="constant", value=0.2))
    n[head + "/relu_fc"] = L.ReLU(n[head + "/fc"], in_place=True)
    n[head + "/drop_fc"] = L.Dropout(n[head + "/relu_fc"], dropout_ratio=0.7, in_place=True)
    scores = classifier(n, head + "/classifier_cs", n[head + "/drop_fc"], num_classes)
    n["%s/%s" % (head, head)] = L.SoftmaxWithLoss(scores, label, loss_weight=0.3)
    if accuracy:
        n[head + "/top-1"] = L.Accuracy(scores, label, include=dict(phase=caffe.TEST))


def body(n, label=None, num_classes=NUM_CLASSES, accuracy=True, slim=1):
    """Add BVLC GoogLeNet on ``n.data`` to NetSpec ``n``: with ``label``, the three loss heads (plus top-1 Accuracy
    in TEST when ``accuracy``); without, the deploy head: softmax "prob" over the main classifier
    ``loss3/classifier_cs``. ``slim``: every convolution and hidden fully connected layer has 1/slim of the channels
    (the CPU demo's small variant; the same layer names and input size)."""
    x = conv_relu(n, "conv1/7x7_s2", n.data, 64 // slim, 7, stride=2, pad=3, relu="conv1/relu_7x7")
    n["pool1/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=1e-4, beta=0.75)
    x = conv_relu(n, "conv2/3x3_reduce", n["pool1/norm1"], 64 // slim, 1)
    x = conv_relu(n, "conv2/3x3", x, 192 // slim, 3, pad=1)
    n["conv2/norm2"] = L.LRN(x, local_size=5, alpha=1e-4, beta=0.75)
    n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = inception(n, inception(n, n["pool2/3x3_s2"], "3a", slim), "3b", slim)
    n["pool3/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = inception(n, n["pool3/3x3_s2"], "4a", slim)
    if label is not None:
        aux_head(n, "loss1", x, label, num_classes, accuracy, slim)
    x = inception(n, inception(n, inception(n, x, "4b", slim), "4c", slim), "4d", slim)
    if label is not None:
        aux_head(n, "loss2", x, label, num_classes, accuracy, slim)
    x = inception(n, x, "4e", slim)
    n["pool4/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = inception(n, inception(n, n["pool4/3x3_s2"], "5a", slim), "5b", slim)
    n["pool5/7x7_s1"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    scores = classifier(n, "loss3/classifier_cs", n["pool5/drop_7x7_s1"], num_classes)
    if label is None:
        n.prob = L.Softmax(scores)
        return
    n["loss3/loss3"] = L.SoftmaxWithLoss(scores, label, loss_weight=1)
    if accuracy:
        n["loss3/top-1"] = L.Accuracy(scores, label, include=dict(phase=caffe.TEST))


def data_spec(source, batch_size, phase, mirror=False):
    """NetSpec holding only an LMDB Data layer (tops data, label) of 3x224x224 uint8 crops + class indices
    (tools/extract_instances.py), minus BVLC's mean; ``mirror``: random horizontal flips (BVLC's TRAIN augmentation,
    not the paper's recipe)."""
    n = caffe.NetSpec()
    transform = dict(mirror=True) if mirror else {}
    n.data, n.label = L.Data(source=source, backend=P.Data.LMDB, batch_size=batch_size, ntop=2,
                             transform_param=dict(transform, mean_value=list(paper.GOOGLENET_MEAN_BGR)),
                             include=dict(phase=phase))
    return n


def train(train_source, val_source=None, batch_size=PAPER["batch_size"], test_batch_size=PAPER["test_batch_size"],
          num_classes=NUM_CLASSES, mirror=False, slim=1):
    """NetParameter for training: TRAIN Data layer on ``train_source`` and, when ``val_source`` is given, a TEST Data
    layer on it plus top-1 Accuracy of each head (BVLC train_val layout). ``mirror``: the TRAIN Data layer flips the
    crops at random (BVLC's augmentation; the paper uses none, hence the default). ``slim``: see ``body``."""
    n = data_spec(train_source, batch_size, caffe.TRAIN, mirror)
    body(n, n.label, num_classes, accuracy=val_source is not None, slim=slim)
    net = n.to_proto()
    net.name = "GoogLeNet_cityscapes"
    if val_source is not None:
        net.layer.insert(1, data_spec(val_source, test_batch_size, caffe.TEST).to_proto().layer[0])
    for layer in net.layer:  # BVLC names its loss layers "loss1/loss", "loss2/loss" (tops loss1/loss1, loss2/loss2)
        if layer.name in ("loss1/loss1", "loss2/loss2"):
            layer.name = layer.name.split("/")[0] + "/loss"
    return net


def deploy(num_classes=NUM_CLASSES, slim=1):
    """NetParameter for inference: Input data 1x3x224x224 (reshape for batches) -> softmax "prob" (1, 8).
    ``slim``: see ``body``."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 224, 224]))
    body(n, None, num_classes, slim=slim)
    net = n.to_proto()
    net.name = "GoogLeNet_cityscapes"
    return net


def generate(instances="data/instances", prototxt="prototxt", snapshots="models/googlenet", mirror=False):
    """{file name in prototxt/: text}. Paths are relative to the repository root (run caffe from there); tests pass
    temporary ``instances``/``prototxt``/``snapshots`` directories. ``mirror``: the train nets flip the crops at
    random (`tools/make_prototxt.py --googlenet-mirror`; off by default, as the paper uses no augmentation).
    The nets' text is protobuf's text_format (floats such as lr_mult as "1.0", where str() writes "1")."""
    text = text_format.MessageToString
    texts = dict(
        train=text(train(f"{instances}/train", f"{instances}/val", mirror=mirror)),
        deploy=text(deploy()),
        solver=models.solver(f"{prototxt}/googlenet_train.prototxt", f"{snapshots}/googlenet", PAPER, SOLVER_ORDER),
        smoke_train=text(train(f"{instances}/train", None, batch_size=SMOKE["batch_size"], mirror=mirror)),
        smoke_solver=models.solver(f"{prototxt}/googlenet_smoke_train.prototxt", f"{snapshots}/googlenet_smoke", SMOKE,
                                   SOLVER_ORDER))
    facts = dict(paper=PAPER, smoke=SMOKE, instances=instances, snapshots=snapshots, augmentation=AUGMENTATION[mirror])
    return models.prototxt_files(NAME, HEADERS, texts, facts)
