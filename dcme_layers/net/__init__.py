"""Caffe-side: deploy inference, instance crops, the GoogLeNet classifier, prototxt/caffemodel checks, the Python
Unpool layer and glog handling."""
__all__ = ["caffe_log", "classify", "crops", "inference", "netfiles", "unpool"]
