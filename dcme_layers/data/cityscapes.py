"""Cityscapes files: listing frames, reading images and ids, the 8 instance classes, subsampling.

Label definitions come from cityscapesscripts (`cityscapesscripts.helpers.labels`), never a copied table.
In `*_gtFine_instanceIds.png` a pixel holds label id * 1000 + instance index for the pixels of an instance,
and the plain label id elsewhere (background classes and crowd/group regions without an instance index).
DCME encodes only the 8 evaluated instance classes (hasInstances and not ignoreInEval); everything else,
including groups and the ignored instance classes caravan and trailer, is background.
"""
import os
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers import csHelpers
from cityscapesscripts.helpers.labels import id2label, labels

from dcme_layers.core import paper
from dcme_layers.core.encoding import vector_map
from dcme_layers.util.errors import DataError

__all__ = ["INSTANCE_LABELS", "INSTANCE_LABEL_IDS", "CLASS_INDEX", "SPLITS", "IMAGE_SUFFIX", "INSTANCE_SUFFIX",
           "LABEL_SUFFIX", "Frame", "available_splits", "list_frames", "read_image", "read_instance_ids",
           "read_label_ids", "check_ids", "instance_map", "class_map", "subsample", "resize_image", "subsample_ids",
           "read_ground_truth", "load_frame", "encode_frame"]

#: The 8 evaluated instance classes, in trainId order: person, rider, car, truck, bus, train, motorcycle, bicycle.
INSTANCE_LABELS = tuple(sorted((l for l in labels if l.hasInstances and not l.ignoreInEval), key=lambda l: l.trainId))
#: Their regular label ids (24, 25, 26, 27, 28, 31, 32, 33), the ids the evaluator expects.
INSTANCE_LABEL_IDS = tuple(l.id for l in INSTANCE_LABELS)
#: Regular label id -> class index 0..7 (classifier output order).
CLASS_INDEX = {l.id: i for i, l in enumerate(INSTANCE_LABELS)}
#: The splits that may exist in a Cityscapes root.
SPLITS = ("train", "val", "test")

#: The file name endings of a frame's image, instanceIds and labelIds PNGs.
IMAGE_SUFFIX = "_leftImg8bit.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# Lookup tables over every 16-bit id: known to cityscapesscripts; an instance of the 8 evaluated classes.
_KNOWN_IDS = np.zeros(1 << 16, bool)
_KNOWN_IDS[[i for i in id2label if 0 <= i < 1000]] = True
_EVAL_INSTANCE = np.zeros(1 << 16, bool)
for _l in labels:
    if _l.hasInstances:
        _KNOWN_IDS[_l.id * 1000:(_l.id + 1) * 1000] = True
for _i in INSTANCE_LABEL_IDS:
    _EVAL_INSTANCE[_i * 1000:(_i + 1) * 1000] = True
# The regular label id of every 16-bit id (id // 1000 on instances, the id itself below 1000): a labelIds image
# must equal this lookup of its instanceIds.
_LABEL_OF = np.where(np.arange(1 << 16) >= 1000, np.arange(1 << 16) // 1000, np.arange(1 << 16)).astype(np.uint8)

Frame = namedtuple("Frame", ["name", "split", "city", "image", "instance_ids", "label_ids"])
Frame.__doc__ = """One Cityscapes frame: name like aachen_000000_000019, its split and city, and the paths of its
leftImg8bit image, gtFine instanceIds and gtFine labelIds PNGs."""


def _core_name(path, suffix):
    """Frame name (city_seq_frame) of a Cityscapes file, parsed by cityscapesscripts."""
    base = os.path.basename(path)
    if not base.endswith(suffix):
        raise DataError(f"{path}: not a Cityscapes *{suffix} file")
    try:  # csHelpers calls sys.exit on names it cannot parse
        name = csHelpers.getCoreImageFileName(base)
    except SystemExit:
        raise DataError(f"{path}: file name does not follow <city>_<seq>_<frame>{suffix}") from None
    if name + suffix != base:
        raise DataError(f"{path}: file name does not follow <city>_<seq>_<frame>{suffix}")
    return name


def available_splits(root):
    """The splits of `root` (train, val, test order) that have both leftImg8bit/ and gtFine/ folders."""
    root = Path(root)
    return [s for s in SPLITS if (root / "leftImg8bit" / s).is_dir() and (root / "gtFine" / s).is_dir()]


def list_frames(root, split):
    """All frames of one split of a Cityscapes root, sorted by name.

    Every gtFine instanceIds PNG needs its labelIds PNG and its leftImg8bit image, and every image its
    instanceIds PNG; a missing partner raises DataError naming the file that has none.
    """
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise DataError(f"{d}: no such directory (expected the Cityscapes layout leftImg8bit/{split}, "
                            f"gtFine/{split} under {root})")
    images = {_core_name(p, IMAGE_SUFFIX): p for p in img_dir.glob("*/*" + IMAGE_SUFFIX)}
    instances = {_core_name(p, INSTANCE_SUFFIX): p for p in gt_dir.glob("*/*" + INSTANCE_SUFFIX)}
    no_label = sorted(set(images) - set(instances))
    if no_label:
        p = images[no_label[0]]
        raise DataError(f"{p}: image has no {no_label[0]}{INSTANCE_SUFFIX} in {gt_dir / p.parent.name}")
    no_image = sorted(set(instances) - set(images))
    if no_image:
        p = instances[no_image[0]]
        raise DataError(f"{p}: label has no {no_image[0]}{IMAGE_SUFFIX} in {img_dir / p.parent.name}")
    frames = []
    for name in sorted(instances):
        inst = instances[name]
        if images[name].parent.name != inst.parent.name:
            raise DataError(f"{inst}: its image {images[name]} lies in another city folder")
        lab = inst.with_name(name + LABEL_SUFFIX)
        if not lab.is_file():
            raise DataError(f"{inst}: label has no {lab.name} next to it")
        frames.append(Frame(name, split, inst.parent.name, str(images[name]), str(inst), str(lab)))
    return frames


def read_image(path):
    """A leftImg8bit image as (H, W, 3) uint8 BGR (OpenCV's order). DataError if missing or unreadable."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such image file")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image)")
    return img


def _read_gray(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what} file")
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None or a.size == 0:
        raise DataError(f"{path}: cannot decode {what} PNG (corrupt or not an image)")
    if a.ndim != 2 or a.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: {what} PNG must be single-channel 8/16-bit, got shape {a.shape} {a.dtype}")
    return a


def read_instance_ids(path):
    """A gtFine instanceIds PNG as (H, W) int32 raw ids (label id * 1000 + index, or the plain label id)."""
    return _read_gray(path, "instanceIds").astype(np.int32)


def read_label_ids(path):
    """A gtFine labelIds PNG as (H, W) uint8 regular label ids."""
    a = _read_gray(path, "labelIds")
    if a.dtype != np.uint8:
        raise DataError(f"{path}: labelIds PNG must be 8-bit, got {a.dtype}")
    return a


def check_ids(instance_ids, path="<array>"):
    """Raise DataError (naming `path`) if `instance_ids` holds an id unknown to cityscapesscripts: a label id not
    in `labels`, or an instance index on a label without instances."""
    a = np.asarray(instance_ids)
    if a.size == 0:
        raise DataError(f"{path}: empty instanceIds image")
    flat = a.ravel()
    # the distinct ids: every one starts a run of equal pixels (labels are piecewise constant: few runs)
    present = np.unique(flat[np.r_[0, np.flatnonzero(flat[1:] != flat[:-1]) + 1]]).astype(np.int64)
    if present[0] < 0 or present[-1] >= _KNOWN_IDS.size:
        bad = int(present[0] if present[0] < 0 else present[-1])
    else:
        unknown = present[~_KNOWN_IDS[present]]
        if not len(unknown):
            return
        bad = int(unknown[0])
    lid = bad // 1000 if bad >= 1000 else bad
    why = "label id %d unknown to cityscapesscripts" % lid if lid not in id2label else \
        "label %r (id %d) has no instances" % (id2label[lid].name, lid)
    raise DataError(f"{path}: id {bad}: {why}")


def instance_map(instance_ids):
    """(H, W) int32: the raw id where the pixel belongs to an instance of the 8 evaluated classes
    (id >= 1000 and id // 1000 in INSTANCE_LABEL_IDS), else 0 (background, groups, caravan, trailer)."""
    a = np.asarray(instance_ids).astype(np.int32, copy=False)
    keep = _EVAL_INSTANCE[np.clip(a, 0, _EVAL_INSTANCE.size - 1)]
    return np.where(keep, a, 0).astype(np.int32, copy=False)


def class_map(instance_ids):
    """(H, W) uint8 regular label id of every pixel (id // 1000 for instance pixels, else the id itself)."""
    a = np.asarray(instance_ids).astype(np.int32, copy=False)
    return np.where(a >= 1000, a // 1000, a).astype(np.uint8)


def subsample(image, instance_ids, size=paper.SIZE):
    """Resize an image (area interpolation) and its instance ids (nearest neighbour) to size = (H, W).
    Returns (image, ids as int32)."""
    if image.shape[:2] != np.shape(instance_ids):
        raise DataError(f"image {image.shape[:2]} and instance ids {np.shape(instance_ids)} differ in size")
    return resize_image(image, size), subsample_ids(instance_ids, size)


def resize_image(image, size=paper.SIZE):
    """An image resized to size = (H, W) by area interpolation (how every frame is subsampled)."""
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)


def subsample_ids(instance_ids, size=paper.SIZE):
    """Instance (or label) ids resized to size = (H, W) by nearest neighbour, as int32."""
    ids = np.asarray(instance_ids)
    if ids.dtype not in (np.uint8, np.uint16, np.int32):
        ids = ids.astype(np.int32)
    ids = cv2.resize(np.ascontiguousarray(ids), (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return ids.astype(np.int32, copy=False)


def read_ground_truth(frame, image_shape=None):
    """A frame's validated gtFine instanceIds, (H, W) as stored (uint8 or uint16: resized before it is widened);
    the one check every reader of ground truth uses.

    Raises DataError naming the file for: a corrupt PNG, an id unknown to cityscapesscripts (e.g. 45, or 23005:
    sky has no instances), a size other than `image_shape` (the image's (H, W), when given), and a labelIds PNG
    that is not 8-bit, of another size, or not the class of every pixel of the instanceIds (labelIds =
    instanceIds // 1000 on instances, = instanceIds elsewhere, as in every Cityscapes frame).
    """
    ids = _read_gray(frame.instance_ids, "instanceIds")
    if image_shape is not None and tuple(ids.shape) != tuple(image_shape[:2]):
        raise DataError(f"{frame.instance_ids}: size {ids.shape[1]}x{ids.shape[0]} differs from its image "
                        f"{frame.image} ({image_shape[1]}x{image_shape[0]})")
    check_ids(ids, frame.instance_ids)
    labels = read_label_ids(frame.label_ids)
    if labels.shape != ids.shape:
        raise DataError(f"{frame.label_ids}: size {labels.shape[1]}x{labels.shape[0]} differs from its instanceIds "
                        f"({ids.shape[1]}x{ids.shape[0]})")
    differ = _LABEL_OF.take(ids) != labels  # ids: the raw 8/16-bit PNG, so a direct lookup
    if differ.any():
        bad = np.flatnonzero(differ.ravel())
        y, x = divmod(int(bad[0]), ids.shape[1])
        raise DataError(f"{frame.label_ids}: label {labels[y, x]} at x={x}, y={y} contradicts its instanceIds "
                        f"({ids[y, x]}); {len(bad)} pixels differ")
    return ids


def load_frame(frame, size=paper.SIZE, expect_shape=None):
    """Read, validate (read_ground_truth) and subsample one frame: (image (h, w, 3) uint8 BGR, instance ids (h, w)
    int32).

    Raises DataError naming the file for a corrupt or inconsistent frame (read_ground_truth), or a full-resolution
    size other than `expect_shape` (H, W) when given.
    """
    image = read_image(frame.image)
    ids = read_ground_truth(frame, image.shape)
    if expect_shape is not None and tuple(ids.shape) != tuple(expect_shape):
        raise DataError(f"{frame.image}: size {ids.shape[1]}x{ids.shape[0]}, expected "
                        f"{expect_shape[1]}x{expect_shape[0]} like the other frames")
    return subsample(image, ids, size)


def encode_frame(frame, size=paper.SIZE, anchor="cm", expect_shape=None):
    """The network's input and target for one frame at `size`: (image (3, h, w) uint8 BGR, vector map
    (2, h, w) float32 computed from the subsampled instance ids, number of instances in it)."""
    image, ids = load_frame(frame, size, expect_shape)
    inst = instance_map(ids)
    vmap = vector_map(inst, anchor)
    n = int(np.count_nonzero(np.bincount(inst.ravel())[1:]))
    return np.ascontiguousarray(image.transpose(2, 0, 1)), vmap, n
