"""dcme_layers.evaluation.labels: the class of an instance is the majority label id of its ground-truth pixels."""
import numpy as np

from dcme_layers.evaluation.labels import majority_label_ids


def test_majority_label_ids():
    inst = np.array([[26001, 26001, 24001, 0],
                     [26001, 24001, 24001, 0]], np.int32)
    labels = np.array([[1, 1, 1, 2],
                       [1, 1, 1, 2]], np.int32)
    assert list(majority_label_ids(labels, inst)) == [24, 0]   # 3 person vs 3 car pixels: lower id; none -> 0
    labels[0, 2] = 0
    assert list(majority_label_ids(labels, inst)) == [26, 0]
