"""Caffe-side: deploy inference, instance crops, the GoogLeNet classifier, prototxt/caffemodel checks, the Python
Unpool layer, Caffe's glog output and the GPU check's steps."""
__all__ = ["caffe_log", "classify", "crops", "gpu_checks", "inference", "netfiles", "unpool"]
