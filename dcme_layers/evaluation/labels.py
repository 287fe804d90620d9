"""Decoded label maps: ground-truth classes by majority, renumbering, the best-scored instances, the classifier's
confusion matrix."""
import numpy as np

from dcme_layers.data import cityscapes

__all__ = ["majority_label_ids", "keep_instances", "best_scored", "ground_truth_classes", "classifier_labels",
           "confusion_matrix"]


def majority_label_ids(labels, instance_map):
    """Regular label id of each decoded instance 1..K: the most frequent ground-truth class among its pixels that
    belong to a ground-truth instance (ties: the lower label id; 0 where it covers none)."""
    lab = np.asarray(labels).ravel()
    cls = np.asarray(instance_map).ravel() // 1000
    k = int(lab.max(initial=0))
    hit = (lab > 0) & (cls > 0)
    votes = np.zeros((k + 1, 256), np.int64)
    np.add.at(votes, (lab[hit], cls[hit]), 1)
    out = votes.argmax(1)
    out[votes.max(1) == 0] = 0
    return out[1:]


def keep_instances(labels, keep):
    """Label map 1..K renumbered to the kept instances (boolean (K,)), in order; the others become 0."""
    keep = np.asarray(keep, bool)
    relabel = np.zeros(len(keep) + 1, np.int32)
    relabel[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return relabel[labels]


def best_scored(labels, scores, n):
    """The ``n`` best-scored instances of a decoded label map (a poorly trained net yields hundreds), renumbered
    in their order: (labels (h, w), scores (min(K, n),))."""
    if len(scores) <= n:
        return labels, scores
    keep = np.zeros(len(scores), bool)
    keep[np.argsort(-scores, kind="stable")[:n]] = True
    return keep_instances(labels, keep), scores[keep]


def ground_truth_classes(labels, scores, truth):
    """Decoded instances with ground-truth classes: those on background (truth 0) dropped.

    Arguments:
        labels: (h, w) int32 instances 1..K; scores: (K,) decoding scores; truth: (K,) ``majority_label_ids``.
    Returns:
        (labels (h, w) renumbered 1..N, label ids (N,), scores (N,)).
    """
    keep = truth > 0
    return keep_instances(labels, keep), truth[keep], scores[keep]


def classifier_labels(labels, classes):
    """Decoded labels (h, w) at the classifier's resolution (``Classifier.size``), where its crops are cut."""
    return labels if tuple(classes.size) == labels.shape else cityscapes.subsample_ids(labels, classes.size)


def confusion_matrix(pairs):
    """Rows: the majority ground-truth class of each decoded instance (the 8 classes, then "none": no ground-truth
    instance under it); columns: the class the classifier gave. pairs: (N, 2) label ids (0 = none) -> (9, 8) int."""
    index = {i: k for k, i in enumerate(cityscapes.INSTANCE_LABEL_IDS)}
    m = np.zeros((len(index) + 1, len(index)), np.int64)
    for truth, given in np.asarray(pairs, np.int64).reshape(-1, 2):
        m[index.get(int(truth), len(index)), index[int(given)]] += 1
    return m
