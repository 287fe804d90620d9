"""Max-unpooling by the indices of a BVLC Pooling layer, as a Caffe Python layer (SegNet's decoder).

BVLC Caffe has no Upsample layer (caffe-segnet's ``Upsample`` is not in BVLC); this layer re-implements its
semantics. A MAX Pooling layer with two tops writes, for every pooled element, the index ``h * W + w`` of its
maximum inside the input (n, c) plane (stored as float). The unpooling layer

- forward:  scatters each value of bottom[0] to that position of a zeroed output plane,
- backward: gathers the gradient of bottom[0] from the same positions (no gradient for the mask or reference),

with the output's spatial size taken from a third bottom, the blob that went into the pooling layer: with Caffe's
ceil-mode pooling 340 -> 170 -> 85 -> 43 -> 22, so doubling the pooled size is not the inverse.

Prototxt (``propagate_down`` false for the index and reference bottoms)::

    layer { name: "upsample4" type: "Python"
      bottom: "conv5_1_D" bottom: "pool4_mask" bottom: "conv4_3" top: "pool4_D"
      propagate_down: true propagate_down: false propagate_down: false
      python_param { module: "dcme_layers.net.unpool" layer: "Unpool" } }

The pooling must not overlap (kernel == stride, as in SegNet); with overlapping windows two values could land on one
position and backward would no longer be the adjoint of forward.
"""
import sys

import caffe
import numpy as np

from dcme_layers.util.errors import UnpoolError

__all__ = ["fail", "Unpool"]


def fail(message):
    # The `caffe` command does not catch Python exceptions from Python layers (it aborts with "terminate called after
    # throwing boost::python::error_already_set" and no message), so say why on stderr first.
    print(f"dcme_layers.net.unpool: {message}", file=sys.stderr, flush=True)
    raise UnpoolError(message)


class Unpool(caffe.Layer):
    """bottom: [features (N, C, h, w), pooling indices (N, C, h, w), reference (N, C', H, W)];
    top: [unpooled (N, C, H, W)]."""

    def setup(self, bottom, top):
        if len(bottom) != 3 or len(top) != 1:
            fail(f"Unpool needs 3 bottoms (features, pooling mask, pre-pooling reference) and 1 top, "
                 f"got {len(bottom)} bottoms and {len(top)} tops")
        self.idx = None

    def reshape(self, bottom, top):
        # Shapes only: reading a blob's .data here would copy it to the host (a GPU-resident blob) on every pass.
        feat, mask, ref = (tuple(bottom[i].shape) for i in range(3))  # (a Caffe blob vector cannot be unpacked)
        if len(feat) != 4 or len(ref) != 4:
            fail(f"Unpool expects 4-D blobs, got features {feat} and reference {ref}")
        if feat != mask:
            fail(f"Unpool: features {feat} and pooling mask {mask} differ in shape")
        if ref[0] != feat[0]:
            fail(f"Unpool: reference batch {ref[0]} != features batch {feat[0]}")
        top[0].reshape(feat[0], feat[1], ref[2], ref[3])

    def forward(self, bottom, top):
        feat, mask = bottom[0].data, bottom[1].data
        n, c, h, w = top[0].data.shape
        idx = mask.reshape(n * c, -1).astype(np.intp)
        if idx.size and (idx.min() < 0 or idx.max() >= h * w):
            hint = ("-1 means the pooling input was NaN: has the training diverged (lower base_lr)?" if idx.min() < 0
                    else "is the reference bottom the pooling layer's input?")
            fail(f"Unpool: pooling indices outside [0, {h * w}) for a {h}x{w} output (range {idx.min()}.."
                 f"{idx.max()}); {hint}")
        out = top[0].data.reshape(n * c, h * w)
        out[...] = 0
        np.put_along_axis(out, idx, feat.reshape(n * c, -1), axis=1)
        self.idx = idx

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n, c = top[0].diff.shape[:2]
            grad = np.take_along_axis(top[0].diff.reshape(n * c, -1), self.idx, axis=1)
            bottom[0].diff[...] = grad.reshape(bottom[0].diff.shape)
        for i in (1, 2):  # indices and reference size: zero gradient (normally propagate_down: false in the prototxt)
            if propagate_down[i]:
                bottom[i].diff[...] = 0
