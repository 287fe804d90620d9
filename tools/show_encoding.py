#!/usr/bin/env python
"""Figures of the DCME encoding of one frame (PNG): the magnitude map for the center of mass next to the one for
the bounding-box centroid (the paper's Figure 2), and the vector field drawn as arrows over the image.

  .venv/bin/python tools/show_encoding.py --root data/cityscapes_synthetic --frame synthcity_000000_000019
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from dcme_layers.core import paper
from dcme_layers.core.encoding import instance_anchors, vector_map
from dcme_layers.data import cityscapes, synthetic
from dcme_layers.evaluation.visualize import magnitude_image
from dcme_layers.util import cli
from dcme_layers.util.errors import DataError
from dcme_layers.util.files import write_png


def _caption(img, text):
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def magnitude_figure(inst):
    """Side by side: |vector| for the CM (Eq. 1-2) and for the bounding-box centroid, each instance's anchor
    marked with a white dot."""
    panels = []
    for a, title in (("cm", "center of mass"), ("bbox", "bounding-box centroid")):
        img = magnitude_image(vector_map(inst, a), instances=inst)
        for x, y in instance_anchors(inst, a)[1]:
            cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1, cv2.LINE_AA)
        panels.append(_caption(img, f"|V| to the {title} (per-instance scale)"))
    sep = np.full((inst.shape[0], 6, 3), 255, np.uint8)
    return np.hstack([panels[0], sep, panels[1]])


def vector_figure(image, inst, step=14):
    """The image, dimmed, with the vector of every `step`-th instance pixel drawn as an arrow to its CM."""
    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    vmap = vector_map(inst, "cm")
    ids = np.unique(inst[inst > 0])
    rng = np.random.default_rng(0)
    colors = {int(i): tuple(int(c) for c in rng.integers(80, 256, 3)) for i in ids}
    ys, xs = np.mgrid[step // 2:inst.shape[0]:step, step // 2:inst.shape[1]:step]
    keep = inst[ys, xs] > 0
    for y, x in zip(ys[keep], xs[keep]):
        dx, dy = vmap[0, y, x], vmap[1, y, x]
        n = float(np.hypot(dx, dy))
        tip = min(0.3, 6.0 / n) if n > 0 else 0.3
        cv2.arrowedLine(out, (int(x), int(y)), (int(round(x + dx)), int(round(y + dy))), colors[int(inst[y, x])], 1,
                        cv2.LINE_AA, tipLength=tip)
    for x, y in instance_anchors(inst, "cm")[1]:
        cv2.circle(out, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1, cv2.LINE_AA)
    return _caption(out, "DCME vectors (pixel -> center of mass)")


def _find(root, split, name):
    splits = [split] if split else cityscapes.available_splits(root)
    if not splits:
        raise DataError(f"{root}: no split with leftImg8bit/ and gtFine/")
    for s in splits:
        frames = cityscapes.list_frames(root, s)
        if name is None and frames:
            return frames[0]
        for f in frames:
            if f.name == name:
                return f
    raise DataError(f"{root}: no frame {name!r} in split(s) {', '.join(splits)}")


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=synthetic.default_root())
    p.add_argument("--split", help="split of the frame (default: search train, val, test)")
    p.add_argument("--frame", help="frame name, e.g. aachen_000000_000019 (default: the first one)")
    p.add_argument("--size", nargs=2, type=int, default=list(paper.SIZE), metavar=("H", "W"))
    p.add_argument("--step", type=int, default=14, help="arrow grid spacing in pixels (default: %(default)s)")
    p.add_argument("--out", default="out/figures")
    return p


def run(a):
    frame = _find(a.root, a.split, a.frame)
    image, ids = cityscapes.load_frame(frame, a.size)
    inst = cityscapes.instance_map(ids)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{frame.name}_magnitude_cm_vs_bbox.png", out / f"{frame.name}_vectors.png"]
    write_png(paths[0], magnitude_figure(inst))
    write_png(paths[1], vector_figure(image, inst, a.step))
    for path in paths:
        print(path)
    return 0


def main(argv=None):
    return cli.run_tool("show_encoding: error", parser, run, argv, errors=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
