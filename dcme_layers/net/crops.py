"""Instance crops for the GoogLeNet classifier: the crop of each instance, from ground-truth instances into LMDBs
for training (`extract_instances`), and from decoded instances as the classifier's input (`instance_crops`).

DCME itself is class-agnostic: decoding gives instance masks at the encoded resolution (340x680). Each instance is
classified by GoogLeNet on a crop of the image around it: the instance's bounding box, enlarged by `margin` times
its width / height on every side (clipped to the image), warped to `crop` x `crop` (224) pixels, as in R-CNN's
"warp" (aspect ratio not kept). The same `instance_boxes` / `crop_boxes` make the training crops from ground-truth
instances and the test-time crops from decoded ones.

Training LMDB (one per split, `<out>/<split>`): caffe Datum, uint8 3x224x224 BGR, `label` = class index 0..7 in
Cityscapes trainId order (`cityscapes.CLASS_INDEX`). Keys `<sha1 prefix>_<frame>_<instance id>`: LMDB iterates
in key order, so the hash prefix gives Caffe's sequential Data layer a fixed pseudo-random (shuffled) order without
holding the split in memory; a `seed` enters the hash, so each seed has its own order. `<out>/<split>/manifest.json`
holds the counts per class and the settings.
"""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from dcme_layers.core import paper
from dcme_layers.data import cityscapes, datum
from dcme_layers.util import pool, resumable
from dcme_layers.util.errors import ClassifyError
from dcme_layers.util.files import atomic_write
from dcme_layers.util.store import Store

__all__ = ["FRAGMENT_SIDE", "MAP_SIZE", "instance_boxes", "crop_boxes", "instance_crops", "box_crops",
           "fragment_boxes", "frame_instances", "extract_instances"]

#: Least share of a side of an instance's box that a training fragment keeps (``fragment_boxes``).
FRAGMENT_SIDE = 0.3
MAP_SIZE = 1 << 40  # LMDB address space (sparse file; BVLC convert_imageset uses the same)


def instance_boxes(labels, margin=paper.MARGIN):
    """Crop boxes of the instances in `labels` ((H, W) int, 0 = background, any other value one instance).

    Returns `ids` (K,) int64 ascending, `boxes` (K, 4) int64 as (x0, y0, x1, y1) with exclusive ends: the instance's
    bounding box enlarged by `margin` * (its width, height) on each side and clipped to the image, and `areas` (K,)
    int64 pixel counts."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ClassifyError(f"labels must be (H, W), got shape {labels.shape}")
    ids, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape)
    areas = np.bincount(compact.ravel(), minlength=len(ids))
    if len(ids) and ids[0] == 0:
        ids, areas = ids[1:], areas[1:]
    else:  # no background: shift so that every id gets a slot in find_objects
        compact = compact + 1
    slices = ndimage.find_objects(compact.astype(np.int32))
    lo = np.array([[s[1].start, s[0].start] for s in slices], dtype=np.float64).reshape(-1, 2)
    hi = np.array([[s[1].stop, s[0].stop] for s in slices], dtype=np.float64).reshape(-1, 2)
    pad = margin * (hi - lo)
    size = np.array([labels.shape[1], labels.shape[0]])
    lo = np.clip(np.floor(lo - pad), 0, size)
    hi = np.clip(np.ceil(hi + pad), 0, size)
    boxes = np.concatenate([lo, hi], axis=1).astype(np.int64)
    return ids.astype(np.int64), boxes, areas.astype(np.int64)


def crop_boxes(image, boxes, crop=paper.CROP):
    """(K, crop, crop, 3) uint8: each (x0, y0, x1, y1) box of `image` ((H, W, 3) uint8 BGR) resized to crop x crop
    (INTER_AREA when shrinking both sides, else INTER_LINEAR)."""
    out = np.zeros((len(boxes), crop, crop, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        patch = image[y0:y1, x0:x1]
        shrink = patch.shape[0] >= crop and patch.shape[1] >= crop
        out[k] = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def _check_pair(image, labels):
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ClassifyError(f"image must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    if labels.shape != image.shape[:2]:
        raise ClassifyError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    return image, labels


def instance_crops(image_bgr, labels, crop=paper.CROP, margin=paper.MARGIN):
    """Net input for the decoded instances 1..K of `labels` (K = labels.max(), 0 = background) on `image_bgr`
    ((H, W, 3) uint8 BGR of the same size, e.g. the 340x680 encoded image): (K, 3, crop, crop) float32, BGR minus
    paper.GOOGLENET_MEAN_BGR, as the GoogLeNet Data layers feed it. An id in 1..K with no pixel gets an all-zero
    (mean) crop."""
    image, labels = _check_pair(image_bgr, labels)
    k = int(labels.max()) if labels.size else 0
    out = np.zeros((max(k, 0), 3, crop, crop), dtype=np.float32)
    ids, boxes, _ = instance_boxes(np.where(labels > 0, labels, 0), margin)
    if len(ids):
        out[ids - 1] = box_crops(image, boxes, crop)
    return out


def box_crops(image_bgr, boxes, crop=paper.CROP):
    """Net input for boxes (x0, y0, x1, y1) of ``image_bgr`` ((H, W, 3) uint8 BGR): (K, 3, crop, crop) float32,
    BGR minus paper.GOOGLENET_MEAN_BGR. A crop depends on its box alone (``tuning`` classifies each distinct box
    once)."""
    out = crop_boxes(image_bgr, boxes, crop).transpose(0, 3, 1, 2).astype(np.float32)
    return out - np.float32(paper.GOOGLENET_MEAN_BGR)[:, None, None]


def fragment_boxes(box, n, rng, smallest=FRAGMENT_SIDE):
    """``n`` random sub-boxes (x0, y0, x1, y1), exclusive ends, of ``box``: each side a uniform share in
    [``smallest``, 1] of the box's, at a uniform position inside it (at least one pixel a side). (n, 4) int64."""
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.zeros((n, 4), np.int64)
    for k in range(n):
        w = max(1, int(round((x1 - x0) * rng.uniform(smallest, 1))))
        h = max(1, int(round((y1 - y0) * rng.uniform(smallest, 1))))
        x = x0 + int(rng.integers(0, x1 - x0 - w + 1))
        y = y0 + int(rng.integers(0, y1 - y0 - h + 1))
        out[k] = (x, y, x + w, y + h)
    return out


def frame_instances(frame, size=paper.SIZE, crop=paper.CROP, margin=paper.MARGIN, min_pixels=paper.MIN_PIXELS,
                    seed=None, fragments=0):
    """Crops of a frame's ground-truth instances of the 8 classes at `size` (H, W), the resolution DCME works at.
    `seed` (None or an int) changes the keys' hash prefix, so the LMDB's order, and the fragments' draw.
    `fragments`: per instance, that many more crops of random parts of its box (``fragment_boxes``) with its class:
    decoding splits large instances into pieces, which the classifier then has to name too.

    Returns (records, skipped): records = [(key, class index, (crop, crop, 3) uint8)], skipped = number of instances
    with fewer than `min_pixels` pixels at `size`."""
    image, ids = cityscapes.load_frame(frame, size=tuple(size))  # validated (DataError naming the file)
    inst, boxes, areas = instance_boxes(cityscapes.instance_map(ids), margin)
    keep = areas >= min_pixels
    inst, boxes = inst[keep], boxes[keep]
    names = [f"{frame.name}_{iid}" for iid in inst]
    if fragments:
        rng = np.random.default_rng([0 if seed is None else int(seed), int(hashlib.sha1(frame.name.encode())
                                                                            .hexdigest()[:8], 16)])
        parts = [fragment_boxes(b, fragments, rng) for b in boxes]
        names += [f"{n}_part{j}" for n in names for j in range(fragments)]
        inst = np.concatenate([inst, np.repeat(inst, fragments)])
        boxes = np.concatenate([boxes] + parts) if parts else boxes
    crops = crop_boxes(image, boxes, crop)
    records = []
    for name, iid, c in zip(names, inst, crops):
        hashed = name if seed is None else f"{seed}/{name}"
        key = hashlib.sha1(hashed.encode()).hexdigest()[:12] + "_" + name
        records.append((key, cityscapes.CLASS_INDEX[int(iid) // 1000], c))
    return records, int((~keep).sum())


def _frame_datums(args):
    """(frame name, ([(key, class index, Datum)], skipped)): ``frame_instances`` of ``args`` = (frame, size, crop,
    margin, min_pixels, seed, fragments), each crop serialized as a Datum (CHW); runs in a pool worker."""
    frame, *options = args
    records, skipped = frame_instances(frame, *options)
    return frame.name, ([(key, label, datum.image_datum(c.transpose(2, 0, 1), label)) for key, label, c in records],
                        skipped)


def extract_instances(root, split, out, size=paper.SIZE, crop=paper.CROP, margin=paper.MARGIN,
                      min_pixels=paper.MIN_PIXELS, workers=1, force=False, seed=None, fragments=0, log=print):
    """Write `<out>/<split>`: LMDB of the instance crops of `split` of the Cityscapes root `root`, + manifest.json.

    A resumable.Job: written in `<out>/<split>.partial` (one synced LMDB transaction per frame, then its line in
    done.txt: "<skipped> <n0> .. <n7>") and renamed when complete, so `<out>/<split>` is always a finished LMDB.
    An interrupted run resumes from the frames it finished (a frame committed but not yet marked done is
    extracted again under the same keys); a finished one of the same settings and inputs is returned as is, one
    whose inputs changed is redone, one of other settings raises DataError unless `force`. `seed`: the LMDB's
    order and `fragments` the crops of parts added per instance (frame_instances). Returns the manifest."""
    frames = cityscapes.list_frames(root, split)
    if not frames:
        raise ClassifyError(f"{Path(root) / 'gtFine' / split}: no frames")
    settings = dict(root=str(Path(root).resolve()), split=split, size=[int(size[0]), int(size[1])], crop=crop,
                    margin=margin, min_pixels=min_pixels, frames=[f.name for f in frames])
    if seed is not None:
        settings["seed"] = int(seed)
    if fragments:
        settings["fragments"] = int(fragments)
    inputs = {f.name: [f.image, f.instance_ids, f.label_ids] for f in frames}
    with resumable.Job(Path(out) / split, settings, inputs, force, what="instance LMDB", log=log) as job:
        if not job.up_to_date():
            datum.caffe_pb2()  # import pycaffe once here, before forking workers, rather than in every worker
            by_name = {f.name: f for f in frames}
            options = (tuple(size), crop, margin, min_pixels, seed, fragments)

            def produce(todo):
                return pool.jobs_results(_frame_datums, [(by_name[n], *options) for n in todo], workers,
                                         serial_single_thread=False)

            job.run([f.name for f in frames], produce, _CropLmdb(settings), desc=f"instances {split}")
        return json.loads((job.final / "manifest.json").read_text())


class _CropLmdb(Store):
    """The partial crop LMDB: one synced transaction per frame, marked done with "<skipped> <n0> .. <n7>"."""
    target = "data.mdb"

    def __init__(self, settings):
        self.settings, self.partial, self.env = settings, None, None

    def open(self, partial, done):
        import lmdb

        self.partial = partial
        self.env = lmdb.open(str(partial), map_size=MAP_SIZE, subdir=True)
        return done

    def nbytes(self, batch):
        return sum(len(value) for _, (records, _) in batch for _, _, value in records)

    def write(self, batch):
        marks = []
        for name, (records, skipped) in batch:
            counts = np.zeros(len(cityscapes.INSTANCE_LABELS), dtype=np.int64)
            with self.env.begin(write=True) as txn:  # one transaction: all of a frame or none
                for key, label, value in records:
                    txn.put(key.encode(), value)
                    counts[label] += 1
            marks.append((name, " ".join(map(str, [skipped, *counts]))))
        return marks

    def complete(self, done):
        rows = np.array([[int(v) for v in done[n].split()] for n in self.settings["frames"]], np.int64)
        rows = rows.reshape(len(self.settings["frames"]), -1)
        counts, skipped = rows[:, 1:].sum(axis=0), int(rows[:, 0].sum())
        entries = self.env.stat()["entries"]
        if entries != counts.sum():
            raise ClassifyError(f"{self.partial}: {entries} LMDB entries for {counts.sum()} counted crops; delete it "
                                f"and run again")
        manifest = dict(
            count=int(entries), skipped_small=skipped,
            per_class={label.name: int(n) for label, n in zip(cityscapes.INSTANCE_LABELS, counts)},
            label_index={label.name: i for i, label in enumerate(cityscapes.INSTANCE_LABELS)},
            datum="uint8 3x{0}x{0} BGR crop, label = class index".format(self.settings["crop"]),
            mean_bgr=[float(v) for v in paper.GOOGLENET_MEAN_BGR], settings=self.settings)
        atomic_write(self.partial / "manifest.json", lambda t: t.write_text(json.dumps(manifest, indent=1)))

    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None
