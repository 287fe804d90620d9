"""Checks of Caffe's own files before Caffe reads them (Caffe). Caffe aborts the whole process with a C++ stack
trace on a prototxt it cannot parse or a caffemodel that is not one, and `Net.copy_from` silently skips every
layer whose name it does not find: weights of the other network, or of nothing, would run with rc 0. Here each
case is one DataError line naming the file.
"""
from pathlib import Path

from dcme_layers.util.errors import DataError

__all__ = ["DEPLOY_PROTOTXT", "read_prototxt", "read_caffemodel", "check_weights", "load_net"]

#: Where `make prototxt` writes a net's deploy prototxt (segnet, fcn8s, googlenet).
DEPLOY_PROTOTXT = "prototxt/{model}_deploy.prototxt"


def read_prototxt(path):
    """A net prototxt parsed into caffe_pb2.NetParameter; DataError naming the file if it is missing, does not
    parse, or uses a layer type this Caffe does not have."""
    import caffe
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(path.read_text(), net)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a net prototxt ({str(e).splitlines()[0]})") from None
    if not net.layer:
        raise DataError(f"{path}: a prototxt without layers (not a net)")
    known = set(caffe.layer_type_list())
    unknown = next((l for l in net.layer if l.type not in known), None)
    if unknown is not None:
        raise DataError(f"{path}: layer '{unknown.name}' has type '{unknown.type}', which this Caffe does not have "
                        f"(run `make setup`, or regenerate it with tools/make_prototxt.py)")
    return net


def read_caffemodel(path):
    """{layer name: [blob shape tuples]} of a caffemodel's layers with blobs; DataError naming the file if it is
    missing, not a caffemodel, or holds no weights."""
    from caffe.proto import caffe_pb2
    from google.protobuf import message

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    model = caffe_pb2.NetParameter()
    try:
        model.ParseFromString(path.read_bytes())
    except (message.DecodeError, RuntimeError):
        raise DataError(f"{path}: not a caffemodel (cannot parse it as a binary NetParameter)") from None
    shapes = {}
    for layer in list(model.layer) + list(model.layers):  # V1 "layers" in old caffemodels
        if layer.blobs:
            shapes[layer.name] = [tuple(b.shape.dim) if b.HasField("shape") else
                                  tuple(d for d in (b.num, b.channels, b.height, b.width)) for b in layer.blobs]
    if not shapes:
        raise DataError(f"{path}: a caffemodel without any weights (a solverstate or an empty net?)")
    return shapes


def check_weights(net, prototxt, weights):
    """Raise DataError naming `weights` unless it provides every learnable layer of `net` (a caffe.Net built from
    `prototxt` without weights) with the same blob shapes; then `net.copy_from(weights)` loads them all."""
    have = read_caffemodel(weights)
    for name, blobs in net.params.items():
        want = [tuple(b.data.shape) for b in blobs]
        if name not in have:
            raise DataError(f"{weights}: has no layer '{name}', which {prototxt} learns (weights of another net? "
                            f"pass the snapshot trained with this net)")
        got = have[name]
        # legacy 4-D blob shapes pad with ones: compare element counts and the leading dimension
        if len(got) != len(want) or any(_squeeze(g) != _squeeze(w) for g, w in zip(got, want)):
            raise DataError(f"{weights}: layer '{name}' has blobs {got}, {prototxt} needs {want} (weights of "
                            f"another configuration of the net?)")


def _squeeze(shape):
    return tuple(d for d in shape if d != 1)


def load_net(prototxt, weights, phase="TEST"):
    """caffe.Net of `prototxt` with every learnable layer loaded from `weights`, after the checks above."""
    import caffe

    read_prototxt(prototxt)
    net = caffe.Net(str(prototxt), getattr(caffe, phase))
    check_weights(net, prototxt, weights)
    net.copy_from(str(weights))
    return net
