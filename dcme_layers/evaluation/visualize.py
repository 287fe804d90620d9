"""Figures like the paper's Figures 3 and 4: input | magnitude map | coloured instance masks, side by side (OpenCV).

All images are BGR uint8 (OpenCV's order) and are written as PNG with ``write_png`` (``files.write_png``:
temporary file + rename).
"""
from pathlib import Path

import cv2
import numpy as np

from dcme_layers.core.encoding import magnitude
from dcme_layers.data import cityscapes
from dcme_layers.util import files
from dcme_layers.util.errors import DcmeError

__all__ = ["FIGURE_WIDTH", "palette", "colorize_instances", "magnitude_image", "side_by_side", "write_png",
           "write_figure", "instance_figure"]


def palette(n, seed=0):
    """(n + 1, 3) uint8 BGR colours: black for label 0, then n distinct, saturated, deterministic colours."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895 + rng.uniform()) % 1.0          # golden-ratio hue spacing
    hsv = np.stack([hues * 180, np.full(n, 200), np.full(n, 255)], 1).astype(np.uint8)[None]
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0] if n else np.zeros((0, 3), np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), bgr])


def colorize_instances(labels, centers=None):
    """(H, W, 3) uint8 BGR image of an instance label map (0 = black background, 1..K coloured); with
    ``centers`` ((K, 2) x, y of label 1..K) each CM is marked by a white dot."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer) or (lab.size and lab.min() < 0):
        raise DcmeError(f"labels must be a 2-D non-negative integer array, got {lab.dtype} {lab.shape}")
    img = palette(int(lab.max(initial=0)))[lab]
    if centers is not None:
        for x, y in np.asarray(centers, np.float64).reshape(-1, 2):
            cv2.circle(img, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1, cv2.LINE_AA)
    return img


def magnitude_image(vmap, max_distance=None, instances=None):
    """The magnitude map |V| (distance of each pixel to its CM) as a JET-coloured (H, W, 3) uint8 BGR image.

    Without ``instances``: one scale, 0 dark blue, ``max_distance`` (default: the map's maximum) red. With
    ``instances`` ((H, W) integer instance map, 0 = background): each instance scaled to its own maximum, so that
    small instances show their structure too, and a black background (the paper's Figure 2, tools/show_encoding.py).
    """
    mag = magnitude(vmap)
    if instances is not None:
        fg = instances > 0
        _, inverse = np.unique(instances[fg], return_inverse=True)
        peak = np.zeros(inverse.max() + 1 if inverse.size else 0)
        np.maximum.at(peak, inverse, mag[fg])
        scaled = np.zeros(mag.shape, np.uint8)
        scaled[fg] = np.clip(mag[fg] / np.maximum(peak[inverse], 1e-6) * 255, 0, 255).astype(np.uint8)
        img = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
        img[~fg] = 0
        return img
    top = float(max_distance) if max_distance else float(mag.max(initial=0.0))
    scaled = np.clip(mag / top, 0, 1) if top > 0 else np.zeros_like(mag)
    return cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)


def side_by_side(image, vmap, labels, centers=None, gap=4):
    """One BGR image: ``image`` | magnitude map of ``vmap`` | coloured ``labels``, at the labels' resolution.

    image: (H', W', 3) BGR uint8 (resized to the labels' (H, W) if needed, INTER_AREA); vmap: (2, H, W);
    labels: (H, W) instance labels; centers: optional (K, 2) CMs to mark; gap: white pixels between panels.
    """
    lab = np.asarray(labels)
    h, w = lab.shape
    if np.shape(vmap)[1:] != (h, w):
        raise DcmeError(f"vector map {np.shape(vmap)} and labels {lab.shape} differ in size")
    img = np.asarray(image)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    sep = np.full((h, gap, 3), 255, np.uint8)
    return np.hstack([img.astype(np.uint8), sep, magnitude_image(vmap), sep, colorize_instances(lab, centers)])


def write_png(path, img):
    """Write a uint8 image as PNG atomically (``files.write_png``; OSError if OpenCV cannot encode it)."""
    return files.write_png(path, img, error=OSError)


def write_figure(path, img):
    """Write a BGR uint8 figure as a 256-colour PNG (PIL's octree quantizer), atomically: far smaller than a
    full-colour one."""
    from PIL import Image

    rgb = Image.fromarray(np.ascontiguousarray(np.asarray(img, np.uint8)[..., ::-1]))
    quantized = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(Path(path), lambda t: quantized.save(t, format="PNG", optimize=True))


#: Width in pixels of each panel of ``instance_figure`` (its height follows the frame's aspect ratio).
FIGURE_WIDTH = 1024


def _overlay(image, labels, captions, colors, alpha=0.45):
    """``image`` with instances 1..K of ``labels`` (same (H, W)) as translucent ``colors`` ((K + 1, 3) BGR), their
    contours, and ``captions`` (K strings, '' for none) at each instance's top left corner."""
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[labels[fg]]
    out = out.astype(np.uint8)
    for k, caption in enumerate(captions, start=1):
        mask = (labels == k).astype(np.uint8)
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[k]), 2, cv2.LINE_AA)
        if caption:
            ys, xs = np.nonzero(mask)
            _text(out, caption, (int(xs.min()), max(int(ys.min()) - 4, 12)), 0.45)
    return out


def _text(img, text, origin, scale):
    """White text with a black outline at ``origin`` (x, y of the baseline's start), readable on any colour."""
    for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _titled(panel, title):
    """``panel`` under a 28-pixel white strip holding ``title``."""
    strip = np.full((28, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, panel])


def instance_figure(image, pred_labels, pred_captions, gt_ids, pred_vmap, gt_vmap, width=FIGURE_WIDTH):
    """One frame for people: decoded instances | ground-truth instances on the frame, |V| of each below.

    Arguments:
        image: (H, W, 3) uint8 BGR frame (any size; resized to ``width`` columns).
        pred_labels: (h, w) decoded instances 1..K at the encoded size; pred_captions: K strings ("car 0.83").
        gt_ids: (H', W') Cityscapes instanceIds of the frame (raw ids; the 8 classes' instances are drawn).
        pred_vmap, gt_vmap: (2, h, w) predicted and ground-truth vector maps at the encoded size.
    Returns:
        (2 * (28 + height), 2 * width + 4, 3) uint8 BGR: a 2 x 2 grid of titled panels.
    """
    height = int(round(width * image.shape[0] / image.shape[1]))
    frame = cv2.resize(np.asarray(image, np.uint8), (width, height), interpolation=cv2.INTER_AREA)
    pred = cv2.resize(np.asarray(pred_labels, np.int32), (width, height), interpolation=cv2.INTER_NEAREST)
    inst = cv2.resize(cityscapes.instance_map(gt_ids).astype(np.int32), (width, height),
                      interpolation=cv2.INTER_NEAREST)
    gt_raw, gt = np.unique(inst, return_inverse=True)           # (K'+1,) raw ids with 0 first, (H*W,) compact
    gt = gt.reshape(inst.shape).astype(np.int32)
    names = {l.id: l.name for l in cityscapes.INSTANCE_LABELS}
    gt_captions = [names[int(i) // 1000] for i in gt_raw[1:]] if gt_raw[0] == 0 else []
    top = float(max(magnitude(gt_vmap).max(initial=0.0), 1.0))  # one scale for both |V| panels: the truth's

    def mag(vmap):
        return cv2.resize(magnitude_image(vmap, top), (width, height), interpolation=cv2.INTER_NEAREST)

    k = len(pred_captions)
    panels = [_titled(_overlay(frame, pred, pred_captions, palette(k)), f"decoded: {k} instances (class score)"),
              _titled(_overlay(frame, gt, gt_captions, palette(len(gt_captions), seed=1)),
                      f"ground truth: {len(gt_captions)} instances"),
              _titled(mag(pred_vmap), f"|V| predicted (blue 0 .. red {top:.0f} px at the encoded size)"),
              _titled(mag(gt_vmap), "|V| ground truth (same scale)")]
    sep = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.vstack([np.hstack([panels[0], sep, panels[1]]), np.hstack([panels[2], sep, panels[3]])])
