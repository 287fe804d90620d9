"""Figures like the paper's Figures 3 and 4: input | magnitude map | coloured instance masks, side by side (OpenCV).

All images are BGR uint8 (OpenCV's order) and are written as PNG with ``write_png`` (``cityscapes.write_png``:
temporary file + rename).
"""
import cv2
import numpy as np

from dcme_layers import cityscapes
from dcme_layers.encoding import magnitude
from dcme_layers.errors import DcmeError


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
    """Write a uint8 image as PNG atomically (``cityscapes.write_png``; OSError if OpenCV cannot encode it)."""
    return cityscapes.write_png(path, img, error=OSError)
