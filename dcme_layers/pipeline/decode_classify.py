"""One frame of a split decoded and classified, ``evaluate_model``'s per-frame step: its vector map decoded, the
best-scored instances kept and given classes (GoogLeNet's, or the majority ground-truth class)."""
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcme_layers.core.decoding import decode
from dcme_layers.data import cityscapes
from dcme_layers.data.lmdb_io import frame_key
from dcme_layers.evaluation.labels import best_scored, classifier_labels, ground_truth_classes, majority_label_ids
from dcme_layers.net.inference import read_blob

__all__ = ["SplitMaps", "FramePrediction", "FramePredictor", "classifier_image", "predict_frame"]


@dataclass(frozen=True)
class SplitMaps:
    """A split's vector maps and encoded images, open: what each frame's step reads.

    Arguments:
        path: the HDF5 file of the maps (``vectors`` (N, 2, H, W)); h5: that file, open.
        split_dir: the encoded split (images/, frames.txt); images: its images LMDB, open (DatumReader).
        index: {frame name: row in both}; size: (H, W) of the maps.
    """
    path: Path
    h5: object
    split_dir: Path
    images: object
    index: dict
    size: tuple


FramePrediction = namedtuple("FramePrediction", "labels label_ids scores vmap gt_ids inst pairs seconds")
FramePrediction.__doc__ = """One frame decoded and classified: labels (h, w) instances 1..K, label_ids (K,),
scores (K,), vmap (2, h, w) its vector map, gt_ids (H, W) its full-resolution instanceIds, inst (h, w) its instance
map at the maps' size, pairs (K, 2) (majority ground-truth class, classifier's class) or None without a
classifier, seconds {"decode", "truth", "classify"} spent on it."""


def classifier_image(maps, frame, classes):
    """The frame at the classifier's resolution: the encoded image, or the frame resized like it."""
    if tuple(classes.size) == maps.size:
        key = frame_key(maps.index[frame.name], frame.name)
        return np.ascontiguousarray(maps.images[key].transpose(1, 2, 0))
    return cityscapes.resize_image(cityscapes.read_image(frame.image), classes.size)


def predict_frame(maps, frame, th, options, classes):
    """Decode one frame's vector map, keep its best-scored instances and give them classes: the classifier's, with
    confidence = probability x decoding score, or (``classes`` None) the majority ground-truth class, instances on
    background dropped. Returns a FramePrediction."""
    t0 = time.perf_counter()
    vmap = read_blob(maps.h5, maps.index[frame.name], maps.path)
    dec = decode(vmap, *th, method=options.method)
    labels, scores = best_scored(dec.labels, dec.scores, options.max_instances)
    t1 = time.perf_counter()
    gt_ids = cityscapes.read_ground_truth(frame)
    inst = cityscapes.instance_map(cityscapes.subsample_ids(gt_ids, maps.size))
    truth = majority_label_ids(labels, inst)                          # (K,) 0 = no instance
    t2 = time.perf_counter()
    pairs = None
    if classes is not None:
        label_ids, conf = classes.classify(classifier_image(maps, frame, classes), classifier_labels(labels, classes))
        pairs = np.stack([truth, label_ids], 1)
        scores = conf * scores
    else:
        labels, label_ids, scores = ground_truth_classes(labels, scores, truth)
    t3 = time.perf_counter()
    return FramePrediction(labels, label_ids, scores, vmap, gt_ids, inst, pairs,
                           dict(decode=t1 - t0, truth=t2 - t1, classify=t3 - t2))


class FramePredictor:
    """export_split's ``predict(frame)`` for one classification: each frame through ``predict_frame``, keeping the
    export's seconds per step and frame count, the classifier's (truth, class) pairs and the predictions of the
    frames drawn (``figures``: their names)."""

    def __init__(self, maps, th, options, classes, figures=()):
        self.maps, self.th, self.options, self.classes, self.figures = maps, th, options, classes, tuple(figures)
        self.seconds = dict(decode=0.0, truth=0.0, classify=0.0)
        self.count = 0
        self.pairs, self.drawn = {}, {}

    def __call__(self, frame):
        """(labels (h, w), label ids (K,), scores (K,), the ground truth's (H, W)) of ``frame``."""
        p = predict_frame(self.maps, frame, self.th, self.options, self.classes)
        for step, seconds in p.seconds.items():
            self.seconds[step] += seconds
        self.count += 1
        self.keep(frame.name, p)
        return p.labels, p.label_ids, p.scores, p.gt_ids.shape

    def keep(self, name, p):
        """Keep what the report needs of frame ``name``'s FramePrediction ``p``."""
        if p.pairs is not None:
            self.pairs[name] = p.pairs
        if name in self.figures:
            self.drawn[name] = p

    def complete(self, frames):
        """Predict the frames an up-to-date export skipped whose pairs or figures the report needs (not timed)."""
        for f in frames:
            if (self.classes is not None and f.name not in self.pairs) or (
                    f.name in self.figures and f.name not in self.drawn):
                self.keep(f.name, predict_frame(self.maps, f, self.th, self.options, self.classes))
