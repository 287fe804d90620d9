"""Network generators, one folder per network (fcn.berkeleyvision.org style).

Each ``models/<name>/net.py`` builds its net top to bottom with ``caffe.NetSpec`` and the same names: ``NAME``,
``PAPER`` and ``SMOKE`` (solver settings of the paper's run and of the smoke run), ``HEADERS`` (the comment text of
each generated file, as data), ``body``, ``train``, ``deploy`` and ``generate() -> {file name: text}`` for
``prototxt/`` (``tools/make_prototxt.py`` writes them, ``tests/test_make_prototxt.py`` checks them). This module
holds what they share: the files' headers and solver text, the lr/decay multipliers, and the regressors' (SegNet,
FCN-8s) LMDB data layers, EuclideanLoss head and the nets the tools build around a body.
"""
import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from dcme_layers.core import paper

__all__ = ["CONV_PARAM", "DCME_SUFFIX", "LMDB_ROOT", "MSRA", "OUTPUT_BLOB", "TRAIN_FRAMES", "ZERO", "deploy_net",
           "epochs", "hdf5_output_net", "lr_text", "paper_batch", "prototxt_files", "regressor_files",
           "set_caffe_engine", "solver", "timing_net", "train_net"]

# Frames of the Cityscapes gtFine train split (data/lmdb/train after `make encode-data`): what an epoch is.
TRAIN_FRAMES = 2975
# The predicted 2-D vector map (N, 2, H, W) is this blob in every regressor (train and deploy nets).
OUTPUT_BLOB = "vectors_pred"
# Where `make encode-data` puts the LMDBs (paths inside the prototxt are relative to the repository root).
LMDB_ROOT = "data/lmdb"
# Suffix of the layers whose blobs differ from those of the reference caffemodels (SegNet-Tutorial, FCN-8s VOC):
# Caffe's `-weights` copies by layer name and aborts on other blob shapes, so such a layer gets a name of its own.
DCME_SUFFIX = "_dcme"

MSRA = dict(type="msra")
ZERO = dict(type="constant", value=0)
# Learned convolutions and fc layers: weights lr 1 / decay 1, biases lr 2 / decay 0 (VGG16, SegNet, FCN, GoogLeNet).
CONV_PARAM = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# Entries of the solver settings (PAPER, SMOKE) that belong to the train net's Data layers.
NET_FIELDS = ("batch_size", "test_batch_size")


def paper_batch(settings):
    """The paper's batch of a regressor's PAPER settings: batch_size x iter_size (the solvers split it to fit)."""
    return settings["batch_size"] * settings.get("iter_size", 1)


def epochs(settings):
    """Epochs over the TRAIN_FRAMES training frames that a regressor's PAPER solver settings run through."""
    return settings["max_iter"] * paper_batch(settings) / TRAIN_FRAMES


def lr_text(lr):
    """A learning rate as the headers write it: 1e-8, not 1e-08."""
    return f"{lr:g}".replace("e-0", "e-")


def lmdb_data(split_dir, batch_size, phase):
    """The two Data layers of one split: images (mean-subtracted BGR) and the DCME vector maps (raw float). Both
    read their LMDB from the first key in the same order (tools/encode_data.py), so equal batches stay aligned."""
    include = dict(phase=phase)
    data = L.Data(source=f"{split_dir}/images", backend=P.Data.LMDB, batch_size=batch_size,
                  transform_param=dict(mean_value=list(paper.MEAN_BGR)), include=include)
    vectors = L.Data(source=f"{split_dir}/vectors", backend=P.Data.LMDB, batch_size=batch_size, include=include)
    return data, vectors


def net_parameter(name, n):
    """NetParameter ``name`` with the layers of NetSpec ``n``."""
    net = caffe_pb2.NetParameter(name=name)
    net.layer.extend(n.to_proto().layer)
    return net


def train_net(name, body, train_dir, val_dir, batch_size):
    """NetParameter with TRAIN data from ``train_dir`` and TEST data from ``val_dir`` (LMDB split folders),
    ``body(n)`` (which adds the layers from ``n.data`` to ``n.vectors_pred``), and EuclideanLoss to ``n.vectors``."""
    n = caffe.NetSpec()
    n.data, n.vectors = lmdb_data(train_dir, batch_size, caffe_pb2.TRAIN)
    body(n)
    n.loss = L.EuclideanLoss(n[OUTPUT_BLOB], n.vectors)
    proto = n.to_proto()
    t = caffe.NetSpec()
    t.data, t.vectors = lmdb_data(val_dir, batch_size, caffe_pb2.TEST)
    net = caffe_pb2.NetParameter(name=name)
    net.layer.extend(list(proto.layer[:2]) + list(t.to_proto().layer) + list(proto.layer[2:]))
    return net


def deploy_net(name, body, shape=(1, 3) + paper.SIZE, loss=False):
    """NetParameter with an Input blob ``data`` of ``shape`` (mean-subtracted BGR) and no loss; with ``loss`` also
    an Input blob ``vectors`` (N, 2, H, W) and the EuclideanLoss (the LMDB-free train net, for benchmarks)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    if loss:
        n.vectors = L.Input(shape=dict(dim=[shape[0], 2] + list(shape[2:])))
    body(n)
    if loss:
        n.loss = L.EuclideanLoss(n[OUTPUT_BLOB], n.vectors)
    return net_parameter(name, n)


def hdf5_output_net(name, body, images_lmdb, batch_size, file_name):
    """NetParameter for `caffe test -iterations 1` that predicts without Python (tools/gpu_check.py's demo stage):
    the images LMDB in its order (mean-subtracted), ``body``, and an HDF5Output layer writing ``vectors_pred`` as
    dataset ``data`` and the Datum labels as ``label`` to ``file_name``. BVLC's HDF5Output aborts on its second
    forward pass, so ``batch_size`` must hold every frame of the LMDB."""
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source=images_lmdb, backend=P.Data.LMDB, batch_size=batch_size,
                             transform_param=dict(mean_value=list(paper.MEAN_BGR)), ntop=2)
    body(n)
    n.output = L.HDF5Output(n[OUTPUT_BLOB], n.label, hdf5_output_param=dict(file_name=file_name), ntop=0)
    return net_parameter(name, n)


def timing_net(name, body, batch_size, caffe_engine=False):
    """NetParameter for `caffe time` (tools/gpu_check.py): ``body`` on gaussian DummyData images and vector maps of
    ``batch_size`` at paper.SIZE (drawn anew every pass) with the EuclideanLoss; ``caffe_engine``: see
    ``set_caffe_engine``, otherwise each layer takes the build's default engine."""
    n = caffe.NetSpec()
    shapes = [dict(dim=[batch_size, c] + list(paper.SIZE)) for c in (3, 2)]
    fillers = [dict(type="gaussian", std=50), dict(type="gaussian", std=20)]
    n.data, n.vectors = L.DummyData(shape=shapes, data_filler=fillers, ntop=2)
    body(n)
    n.loss = L.EuclideanLoss(n[OUTPUT_BLOB], n.vectors)
    net = net_parameter(name, n)
    if caffe_engine:
        set_caffe_engine(net)
    return net


def set_caffe_engine(net):
    """Set engine: CAFFE on every Convolution, Deconvolution, Pooling and ReLU layer of the NetParameter ``net``:
    Caffe's own kernels even in a cuDNN build (the path of a build without cuDNN)."""
    params = {"Convolution": "convolution_param", "Deconvolution": "convolution_param", "Pooling": "pooling_param",
              "ReLU": "relu_param"}
    for layer in net.layer:
        if layer.type in params:
            param = getattr(layer, params[layer.type])
            param.engine = type(param).CAFFE


def solver(net, snapshot_prefix, settings, order=None):
    """SolverParameter text for the train net file ``net`` with ``settings`` (SolverParameter fields; None leaves
    a field unset; NET_FIELDS are skipped). CPU mode: the Debian Caffe is CPU_ONLY. test_iter is per TEST pass
    (None: no TEST net at all). ``order``: the field names in the order to write them (default: caffe.proto's)."""
    fields = dict(weight_decay=0.0005, lr_policy="fixed", test_iter=1, test_interval=10000000,
                  test_initialization=False, display=20, average_loss=20)
    fields.update((k, v) for k, v in settings.items() if k not in NET_FIELDS)
    if fields["test_iter"] is None:
        del fields["test_iter"], fields["test_interval"], fields["test_initialization"]
    else:
        fields["test_iter"] = [fields["test_iter"]]
    s = caffe_pb2.SolverParameter(net=net, snapshot_prefix=snapshot_prefix, solver_mode=caffe_pb2.SolverParameter.CPU,
                                  **{k: v for k, v in fields.items() if v is not None})
    return str(s) if order is None else ordered_text(s, order)


def ordered_text(message, order):
    """Prototxt text of ``message`` with its fields in ``order`` (names) rather than caffe.proto's."""
    fields = {f.name: f for f in message.DESCRIPTOR.fields}
    text = ""
    for name in order:
        one = type(message)()
        if fields[name].label == fields[name].LABEL_REPEATED:
            getattr(one, name).extend(getattr(message, name))
        elif message.HasField(name):
            setattr(one, name, getattr(message, name))
        text += text_format.MessageToString(one)
    assert text_format.Parse(text, type(message)()) == message, "the order misses a field"
    return text


def prototxt_files(name, headers, texts, facts):
    """{``<name>_<kind>.prototxt``: text} for each ``kind`` of ``texts`` (train, deploy, solver, smoke_train,
    smoke_solver): a header of the lines ``headers[kind]`` formatted with ``facts``, then the text."""
    files = {}
    for kind, text in texts.items():
        lines = [line.format(**facts) for line in headers[kind]]
        files[f"{name}_{kind}.prototxt"] = (
            f"# Generated by tools/make_prototxt.py from models/{name}/net.py; do not edit.\n"
            + "".join(f"# {line}\n" if line else "#\n" for line in lines) + text)
    return files


def regressor_files(name, headers, train, deploy, settings, smoke, **facts):
    """The prototxt/ files of a DCME regressor (SegNet, FCN-8s): ``train(batch_size=...)`` and ``deploy()`` build
    its nets, ``settings`` and ``smoke`` are the solver settings of the paper's run and of the smoke run. The
    ``headers`` are formatted with ``facts`` and: paper, smoke (the settings), lr, smoke_lr, batch (the paper's),
    epochs, train_frames, lmdb, size (HxW) and output (the blob)."""
    facts = dict(facts, paper=settings, smoke=smoke, lr=lr_text(settings["base_lr"]),
                 smoke_lr=lr_text(smoke["base_lr"]), batch=paper_batch(settings), epochs=epochs(settings),
                 train_frames=TRAIN_FRAMES, lmdb=LMDB_ROOT, size="%dx%d" % paper.SIZE, output=OUTPUT_BLOB)
    texts = dict(train=str(train()), deploy=str(deploy()),
                 solver=solver(f"prototxt/{name}_train.prototxt", f"models/{name}/{name}", settings),
                 smoke_train=str(train(batch_size=smoke["batch_size"])),
                 smoke_solver=solver(f"prototxt/{name}_smoke_train.prototxt", f"models/{name}/{name}_smoke", smoke))
    return prototxt_files(name, headers, texts, facts)
