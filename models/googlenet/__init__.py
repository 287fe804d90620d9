"""GoogLeNet (Inception v1, BVLC models/bvlc_googlenet) classifying decoded DCME instances into the 8 Cityscapes
classes."""
