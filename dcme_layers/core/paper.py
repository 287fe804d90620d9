"""The settings of the paper (arXiv 1711.09060) and of the reference nets it builds on, each stated once. Pure
Python: no numpy, no Caffe, so that every module (``models/`` included) can import it.
"""
from collections import namedtuple

__all__ = ["FRAME_SIZE", "SIZE", "Thresholds", "THRESHOLDS", "MEAN_BGR", "GOOGLENET_MEAN_BGR", "CROP", "MARGIN",
           "MIN_PIXELS"]

#: Full resolution (H, W) of a Cityscapes frame, the resolution the ground truth is evaluated at.
FRAME_SIZE = (1024, 2048)
#: Encoded resolution (H, W) of the paper: FRAME_SIZE subsampled 3x (paper, Section 4). The vector maps, the
#: regressors' input and output and the decoding thresholds below are all at this size.
SIZE = (340, 680)

Thresholds = namedtuple("Thresholds", "dt vt et")
Thresholds.__doc__ = """The decoding thresholds (paper, Section 3): DT (pixels) the clustering distance of step 2,
VT (votes) the least votes of a kept cluster in step 3, ET (pixels) the extraction distance of step 4; pixels and
votes of the encoded resolution."""

#: (DT, VT, ET) per network at SIZE (paper, Section 4): SegNet (10, 50, 15), FCN-8s (15, 30, 20).
THRESHOLDS = {"segnet": Thresholds(10, 50, 15), "fcn8s": Thresholds(15, 30, 20)}

#: BGR pixel mean of the DCME regressors (SegNet, FCN-8s): ILSVRC's, as in VGG16 and FCN's voc_layers.py (the
#: reference weights both start from). Subtracted from 0..255 BGR input, no scaling.
MEAN_BGR = (104.00699, 116.66877, 122.67892)

#: BGR pixel mean of the GoogLeNet classifier: the ``mean_value`` of BVLC GoogLeNet's Data layers
#: (models/bvlc_googlenet/train_val.prototxt).
GOOGLENET_MEAN_BGR = (104, 117, 123)

#: Side in pixels of the square crop GoogLeNet classifies (its input size, BVLC GoogLeNet).
CROP = 224
#: Context around an instance's bounding box, as a fraction of its width / height on each side (R-CNN style warp).
MARGIN = 0.1
#: Least pixels (at SIZE) of an instance worth classifying: at 340x680 a 50-pixel instance is about 7x7, smaller crops
#: are mostly interpolation; SegNet's VT is also 50, so smaller instances are rarely decoded at all.
MIN_PIXELS = 50
