"""A synthetic Cityscapes: small street scenes in the official layout and file formats, deterministic by seed.

Written per frame, exactly as Cityscapes names and encodes them:
  leftImg8bit/{split}/{city}/{name}_leftImg8bit.png      (H, W, 3) 8-bit image
  gtFine/{split}/{city}/{name}_gtFine_labelIds.png       uint8 regular label ids
  gtFine/{split}/{city}/{name}_gtFine_instanceIds.png    uint16 label id * 1000 + index, plain id elsewhere
  gtFine/{split}/{city}/{name}_gtFine_polygons.json      {"imgHeight", "imgWidth", "objects": [{"label", "polygon"}]}
  disparity/{split}/{city}/{name}_disparity.png          uint16 p = 256 d + 1, 0 = invalid
  camera/{split}/{city}/{name}_camera.json               Cityscapes' camera (intrinsics scaled to the size)
with name = {city}_{seq:06d}_000019, and `.complete` at the root once every frame is written.

Scenes follow a pinhole camera 1.22 m above a flat road (Cityscapes' own calibration): every object has a
depth Z (5-150 m) and a size in metres, so far objects are small and sit close to the horizon. Shapes are
polygons rasterised with cv2.fillPoly in painter's order (far to near) into the image, the label images and
the disparity, so the polygons file is exact wherever an object is not occluded. Each frame has several
instance classes with class-typical shapes and colours, overlaps (riders on their bikes, cars in rows), an
instance split in two by a pole in front of it, a tiny one (< 100 px at 1024x2048), usually a large near one,
often a crowd region ("cargroup"/"persongroup": a plain label id in instanceIds) and sometimes an ignored
instance class (caravan/trailer), textured sky, buildings, vegetation, sidewalk and road, and the ego vehicle.
"""
import contextlib
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np

from dcme_layers.core import paper
from dcme_layers.data.synthetic_scene import render_frame
from dcme_layers.util.errors import DataError, DcmeError
from dcme_layers.util.files import atomic_write, write_png

__all__ = ["CITIES", "SPLITS", "ROOT", "FRAME_NB", "frame_paths", "frame_names", "generate", "default_root",
           "existing_or_generate"]

#: Cities per split and the default number of frames.
CITIES = {"train": "synthcity", "val": "synthval", "test": "synthtest"}
SPLITS = {"train": 12, "val": 6}
#: Where `make synthetic` writes the default set: the tools' --root when $CITYSCAPES_DATASET is unset.
ROOT = "data/cityscapes_synthetic"
#: Frame number of every synthetic frame name (Cityscapes' annotated frame of each sequence).
FRAME_NB = 19


def frame_paths(root, split, name):
    """Paths of one frame's files in the Cityscapes layout."""
    city = name.split("_")[0]
    root = Path(root)
    gt = root / "gtFine" / split / city
    return {"image": root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
            "label_ids": gt / f"{name}_gtFine_labelIds.png",
            "instance_ids": gt / f"{name}_gtFine_instanceIds.png",
            "polygons": gt / f"{name}_gtFine_polygons.json",
            "disparity": root / "disparity" / split / city / f"{name}_disparity.png",
            "camera": root / "camera" / split / city / f"{name}_camera.json"}


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def frame_names(splits):
    """{split: [frame names]} for a {split: count} dict."""
    return {s: [f"{CITIES[s]}_{i:06d}_{FRAME_NB:06d}" for i in range(n)] for s, n in splits.items()}


def generate(out, splits=None, size=paper.FRAME_SIZE, seed=0, force=False, progress=False, workers=1):
    """Write a synthetic Cityscapes root at `out` with {split: frame count} frames of size (H, W).

    Deterministic: the same (splits, size, seed) gives byte-identical files. A complete root with the same
    configuration is left as is; one with another configuration raises DataError unless force=True (then it is
    replaced). Every file is written to a temporary name and renamed; `.complete` (holding the configuration)
    is written last, so an interrupted run is simply re-run. workers: processes rendering frames (same files).
    """
    splits = dict(SPLITS if splits is None else splits)
    unknown = set(splits) - set(CITIES)
    if unknown:
        raise DcmeError(f"unknown split(s) {sorted(unknown)}; expected some of {list(CITIES)}")
    size = (int(size[0]), int(size[1]))
    if size[0] < 32 or size[1] < 64:
        raise DcmeError(f"size {size} too small; need at least 32x64")
    out = Path(out)
    # "generator" names the set's format, not a module path: sets already generated stay valid
    config = {"generator": "dcme_layers.synthetic", "version": 1, "splits": splits, "size": list(size),
              "seed": seed}
    marker = out / ".complete"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except ValueError:
            old = None
        if old == config:
            return out
        if not force:
            raise DataError(f"{out}: holds a synthetic set with another configuration ({old}); use --force or "
                            f"another --out")
        marker.unlink()
        for sub in ("leftImg8bit", "gtFine", "disparity", "camera"):
            shutil.rmtree(out / sub, ignore_errors=True)
    names = frame_names(splits)
    jobs = [(out, s, i, n, seed, size) for s in splits for i, n in enumerate(names[s])]
    with contextlib.ExitStack() as stack:
        done = map(_write_frame, jobs)
        if workers > 1 and len(jobs) > 1:
            # spawned, not forked: a fork after this process used OpenCV's thread pool deadlocks in the child
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))))
            done = pool.imap_unordered(_write_frame, jobs)
        if progress:
            from tqdm import tqdm
            done = tqdm(done, total=len(jobs), desc="synthetic", unit="frame")
        for _ in done:
            pass
    _write_json(marker, config)
    return out


def _write_frame(job):
    """Render and write one frame; its random stream depends on (seed, split, index) alone."""
    out, split, i, name, seed, size = job
    fr = render_frame(np.random.default_rng([seed, list(CITIES).index(split), i]), size)
    p = frame_paths(out, split, name)
    for key in ("image", "label_ids", "instance_ids", "disparity"):
        write_png(p[key], fr[key])
    _write_json(p["polygons"], fr["polygons"])
    _write_json(p["camera"], fr["camera"])
    return name


def default_root():
    """The tools' default Cityscapes root: $CITYSCAPES_DATASET, else the synthetic set at ROOT."""
    return os.environ.get("CITYSCAPES_DATASET") or ROOT


def existing_or_generate(root, out, splits=None, split=None):
    """A Cityscapes root for the benchmarks: `root` (Path) when it holds a complete synthetic set (`.complete`) or,
    given `split`, that split's gtFine folder; else a synthetic set of {split: frame count} `splits` (default
    SPLITS) generated into `out` (``generate``)."""
    root = Path(root)
    if (root / ".complete").exists() or (split is not None and (root / "gtFine" / split).is_dir()):
        return root
    return generate(out, splits)
