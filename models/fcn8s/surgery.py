"""Net surgery for FCN-8s (after fcn.berkeleyvision.org ``surgery.py``): VGG16 -> fully convolutional weights.

VGG16's fc6/fc7 are InnerProduct layers (4096 x 25088, 4096 x 4096); FCN's are 7x7 and 1x1 convolutions with the
same number of weights, so Caffe's ``-weights`` refuses them (shape mismatch). ``transplant`` copies every
parameter by layer name and pours same-count, different-shape blobs into the new shape (row-major, which is what
the InnerProduct -> convolution correspondence is). Users who have the VGG16 ILSVRC model convert it once::

    .venv/bin/python models/fcn8s/surgery.py --vgg-proto VGG_ILSVRC_16_layers_deploy.prototxt \\
        --vgg-weights VGG_ILSVRC_16_layers.caffemodel --out models/fcn8s/vgg16-fcn.caffemodel
    caffe train -solver prototxt/fcn8s_solver.prototxt -weights models/fcn8s/vgg16-fcn.caffemodel

(SegNet needs no surgery: its conv1_1..conv5_3 have VGG16's names and shapes and Caffe skips fc6..fc8. Neither does
an FCN-8s VOC caffemodel, whose fc6/fc7 are convolutions already: ``-weights`` copies it and skips the 2-channel
``*_dcme`` score and upscore layers, see models/fcn8s/net.py.)
The fixed upsampling deconvolutions are initialised by BVLC's ``bilinear`` filler in the prototxt; ``interp`` sets
the same kernels explicitly (FCN's way), e.g. on a net from an older caffemodel.
"""
import argparse
import os
import sys

import numpy as np


def transplant(new_net, net, suffix=""):
    """Copy the parameters of ``net`` into ``new_net`` by layer name (``name + suffix`` in new_net); blobs with the
    same count but a different shape are reshaped (InnerProduct -> convolution). Returns the copied layer names."""
    copied = []
    for p in net.params:
        p_new = p + suffix
        if p_new not in new_net.params:
            continue
        for i in range(min(len(net.params[p]), len(new_net.params[p_new]))):
            src, dst = net.params[p][i].data, new_net.params[p_new][i].data
            if src.shape == dst.shape:
                dst[...] = src
            elif src.size == dst.size:
                dst.flat = src.flat
            else:
                raise ValueError(f"transplant: {p}[{i}] has {src.size} values {src.shape}, "
                                 f"{p_new}[{i}] needs {dst.size} {dst.shape}")
        copied.append(p)
    return copied


def upsample_filt(size):
    """2-D bilinear kernel of ``size`` (as FCN and BVLC's bilinear filler)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def interp(net, layers):
    """Set the deconvolution ``layers`` of ``net`` to bilinear interpolation: channel-to-channel kernels for
    (C, C, k, k) weights, the kernel itself for grouped (C, 1, k, k) weights."""
    for name in layers:
        w = net.params[name][0].data
        m, k, h, ww = w.shape
        if (m != k and k != 1) or h != ww:
            raise ValueError(f"interp: {name} has weights {w.shape}; needs (C, C, k, k) or (C, 1, k, k)")
        w[...] = 0
        if k == 1:
            w[:, 0] = upsample_filt(h)
        else:
            w[range(m), range(k)] = upsample_filt(h)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert VGG16 ILSVRC weights into FCN-8s (DCME) initial weights.")
    ap.add_argument("--vgg-proto", required=True, help="VGG16 deploy prototxt (VGG_ILSVRC_16_layers_deploy.prototxt)")
    ap.add_argument("--vgg-weights", required=True, help="VGG16 caffemodel")
    ap.add_argument("--fcn-proto", default="prototxt/fcn8s_deploy.prototxt", help="FCN-8s net to fill")
    ap.add_argument("--out", default="models/fcn8s/vgg16-fcn.caffemodel")
    args = ap.parse_args(argv)
    import caffe
    for path in (args.vgg_proto, args.vgg_weights, args.fcn_proto):
        if not os.path.isfile(path):
            print(f"surgery: no such file: {path}", file=sys.stderr)
            return 1
    caffe.set_mode_cpu()
    vgg = caffe.Net(args.vgg_proto, args.vgg_weights, caffe.TEST)
    fcn = caffe.Net(args.fcn_proto, caffe.TEST)
    try:
        copied = transplant(fcn, vgg)
    except ValueError as e:
        print(f"surgery: {args.vgg_weights}: {e}", file=sys.stderr)
        return 1
    tmp = args.out + ".tmp"
    fcn.save(tmp)
    os.replace(tmp, args.out)
    print(f"copied {len(copied)} layers ({', '.join(copied)}) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
