"""Caffe's Datum protobuf: arrays serialized as the values of the LMDBs Caffe's Data layer reads, and back.

caffe_pb2 is imported inside the functions (``caffe_pb2()``); the pure modules never import Caffe.
"""
import numpy as np

from dcme_layers.util.errors import DataError

__all__ = ["caffe_pb2", "image_datum", "float_datum", "datum_to_array"]


def caffe_pb2():
    """Caffe's protobuf module (imports pycaffe on first use: call it once before forking workers)."""
    from caffe.proto import caffe_pb2 as pb2
    return pb2


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def image_datum(chw, label=None):
    """Serialized Datum of a (3, H, W) uint8 BGR image: channels, height, width and the raw CHW bytes, and
    `label` (an int, e.g. a class index) when given."""
    a = np.ascontiguousarray(chw)
    if a.ndim != 3 or a.dtype != np.uint8:
        raise DataError(f"image must be (C, H, W) uint8, got {a.shape} {a.dtype}")
    c, h, w = a.shape
    extra = {} if label is None else {"label": int(label)}
    return caffe_pb2().Datum(channels=c, height=h, width=w, data=a.tobytes(), **extra).SerializeToString()


def float_datum(chw):
    """Serialized Datum of a (C, H, W) float array in float_data (field 6, float32, CHW order).

    The header (channels, height, width) is serialized by caffe_pb2; float_data is appended as one packed field,
    which protobuf parsers (Caffe's C++ and caffe_pb2 alike) accept for a repeated float: much faster than filling
    the repeated field from Python, and smaller than the unpacked encoding caffe_pb2 would write.
    """
    a = np.asarray(chw)
    if a.ndim != 3:
        raise DataError(f"float datum must be (C, H, W), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError("float datum holds NaN or inf")
    c, h, w = a.shape
    head = caffe_pb2().Datum(channels=c, height=h, width=w).SerializeToString()
    body = np.ascontiguousarray(a, "<f4").tobytes()
    return head + b"\x32" + _varint(len(body)) + body


def datum_to_array(value):
    """A serialized Datum as a numpy array (C, H, W): uint8 from `data`, else float32 from `float_data`."""
    d = caffe_pb2().Datum()
    d.ParseFromString(value)
    shape = (d.channels, d.height, d.width)
    if d.data:
        return np.frombuffer(d.data, np.uint8).reshape(shape)
    return np.fromiter(d.float_data, np.float32, count=len(d.float_data)).reshape(shape)
