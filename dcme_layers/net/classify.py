"""Classification of decoded instances with the GoogLeNet deploy net (Caffe): one of the 8 classes and its
probability per instance, from the crops of dcme_layers.net.crops."""
import numpy as np

from dcme_layers.core import paper
from dcme_layers.data import cityscapes
from dcme_layers.net import netfiles
from dcme_layers.net.crops import instance_crops
from dcme_layers.util.errors import ClassifyError

__all__ = ["Classifier"]


class Classifier:
    """GoogLeNet deploy net (prototxt/googlenet_deploy.prototxt + trained weights) over decoded instances.
    ``size``: the (H, W) its crops are cut at, the resolution its training crops were extracted at
    (tools/extract_instances.py --size); the pipeline resizes the frame and the decoded masks to it."""

    def __init__(self, deploy_prototxt, weights, batch_size=16, crop=paper.CROP, margin=paper.MARGIN, size=paper.SIZE):
        # checked first: e.g. ImageNet's bvlc_googlenet.caffemodel has no 8-way 'loss3/classifier_cs', which Caffe
        # would silently leave at its filler and classify at random
        self.net = netfiles.load_net(deploy_prototxt, weights)
        if "prob" not in self.net.outputs:
            raise ClassifyError(f"{deploy_prototxt}: no 'prob' output (not prototxt/googlenet_deploy.prototxt)")
        self.deploy, self.weights = deploy_prototxt, weights
        self.batch_size, self.crop, self.margin = batch_size, crop, margin
        self.size = (int(size[0]), int(size[1]))
        self.class_ids = np.array(cityscapes.INSTANCE_LABEL_IDS, dtype=np.int64)

    def probabilities(self, image, labels):
        """(K, 8) float32 class probabilities (columns in cityscapes.INSTANCE_LABEL_IDS order) of instances 1..K."""
        return self.forward(instance_crops(image, labels, self.crop, self.margin))

    def forward(self, crops):
        """(K, 8) float32 class probabilities of net input crops (K, 3, crop, crop) (``crops.instance_crops``)."""
        probs = np.zeros((len(crops), len(self.class_ids)), dtype=np.float32)
        data = self.net.blobs["data"]
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            if data.data.shape != batch.shape:
                data.reshape(*batch.shape)
                self.net.reshape()
            data.data[...] = batch
            out = self.net.forward()["prob"].reshape(len(batch), -1)
            if out.shape[1] != len(self.class_ids):
                raise ClassifyError(f"deploy net outputs {out.shape[1]} classes, expected {len(self.class_ids)}")
            probs[start:start + len(batch)] = out
        if not np.all(np.isfinite(probs)):
            raise ClassifyError(f"{self.weights}: GoogLeNet gives NaN/inf probabilities (diverged weights?)")
        return probs

    def classify(self, image, labels):
        """Class and confidence of each decoded instance 1..K of `labels` on `image` (same (H, W), uint8 BGR).

        Returns (class_ids (K,) int64 regular Cityscapes label ids, e.g. car = 26; confidences (K,) float32 in
        [0, 1], the softmax probability of that class; 0 for an id with no pixel). K = 0 gives empty arrays."""
        return self.decide(self.probabilities(image, labels), labels)

    def decide(self, probs, labels):
        """``classify``'s answer from the (K, 8) probabilities of the instances 1..K of ``labels``."""
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        conf = probs[np.arange(len(probs)), best]
        present = np.isin(np.arange(1, len(probs) + 1), labels)
        return self.class_ids[best], np.where(present, conf, 0).astype(np.float32)
