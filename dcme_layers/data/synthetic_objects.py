"""The objects of a synthetic street scene (``synthetic_scene``): the instance classes with their sizes in metres,
outlines and colours, and the drawing of an instance, a crowd region, a far tiny person and a pole with its sign into
a ``synthetic_scene.Scene`` at a depth in metres.
"""
import numpy as np

from dcme_layers.core import paper

__all__ = ["SHAPES", "VEHICLE_PAINT", "SHIRTS", "SKIN", "circle", "draw_instance", "draw_pole", "draw_group",
           "draw_tiny_person"]

# Class shapes: (width range m, height range m, outline polygon in unit box coordinates (u right, v up)).
_CAR = [(0, .08), (0, .5), (.16, .56), (.3, 1), (.72, 1), (.86, .58), (1, .52), (1, .08), (.9, 0), (.1, 0)]
_TRUCK = [(0, .05), (0, 1), (.68, 1), (.68, .8), (.86, .78), (1, .5), (1, .05), (.95, 0), (.05, 0)]
_BUS = [(0, .06), (0, .94), (.03, 1), (.97, 1), (1, .94), (1, .06), (.97, 0), (.03, 0)]
_TRAIN = [(0, .05), (0, .9), (.04, 1), (.92, 1), (1, .75), (1, .05), (.97, 0), (.03, 0)]
_PERSON = [(.18, 0), (.42, 0), (.5, .4), (.58, 0), (.82, 0), (.74, .5), (.92, .58), (.86, .8), (.64, .84),
           (.66, .94), (.56, 1), (.44, 1), (.34, .94), (.36, .84), (.14, .8), (.08, .58), (.26, .5)]
_RIDER = [(.3, .1), (.45, .1), (.5, .45), (.74, .5), (.9, .66), (.82, .82), (.64, .86), (.66, .95), (.56, 1),
          (.44, 1), (.34, .95), (.36, .86), (.2, .8), (.24, .5)]
_BIKE = [(0, .12), (.05, .4), (.2, .55), (.35, .7), (.7, .78), (.85, .55), (.95, .4), (1, .12), (.85, 0), (.65, .1),
         (.35, .1), (.15, 0)]
_CARAVAN = [(0, .05), (0, .9), (.06, 1), (.94, 1), (1, .9), (1, .05), (.96, 0), (.04, 0)]
SHAPES = {"car": ((1.8, 4.6), (1.4, 1.7), _CAR), "truck": ((2.5, 8.0), (2.8, 3.6), _TRUCK),
          "bus": ((2.6, 11.0), (3.0, 3.4), _BUS), "train": ((8.0, 25.0), (3.6, 4.0), _TRAIN),
          "person": ((.55, .75), (1.55, 1.9), _PERSON), "rider": ((.6, .8), (1.1, 1.3), _RIDER),
          "motorcycle": ((.8, 2.1), (1.1, 1.4), _BIKE), "bicycle": ((.6, 1.8), (1.0, 1.2), _BIKE),
          "caravan": ((2.3, 6.0), (2.5, 3.0), _CARAVAN), "trailer": ((2.0, 5.0), (1.2, 2.0), _CARAVAN)}
#: Class-typical BGR colours.
VEHICLE_PAINT = [(40, 40, 160), (160, 60, 30), (200, 200, 200), (30, 30, 30), (90, 90, 90), (20, 110, 30),
                 (150, 150, 160), (40, 70, 120)]
SHIRTS = [(40, 40, 200), (200, 80, 40), (60, 160, 60), (30, 30, 30), (220, 220, 220), (40, 160, 220), (140, 40, 140)]
SKIN = [(150, 180, 220), (110, 140, 190), (60, 90, 130)]


def _unit(poly):
    """Unit-box points as a float64 (N, 2) array."""
    return np.asarray(poly, np.float64)


def _box(x0, y0, w, h, flip):
    """Map unit-box coordinates (u right, v up) to pixels: left x0, bottom row y0, size w x h, mirrored if flip."""
    def f(uv):
        uv = _unit(uv)
        u = 1 - uv[:, 0] if flip else uv[:, 0]
        return np.stack([x0 + u * w, y0 - uv[:, 1] * h], axis=1)
    return f


def circle(cx, cy, r, n=12):
    """n points on the circle of radius r around (cx, cy): a polygon."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def draw_instance(sc, cls, z, x_m, rng, size_px=None, y_lift=0.0, flip=None):
    """One instance of class `cls` at depth z (m), lateral position x_m (m). Returns (x0, y0, w, h) in pixels."""
    (w_lo, w_hi), (h_lo, h_hi), outline = SHAPES[cls]
    if size_px is None:
        w = rng.uniform(w_lo, w_hi) * sc.fx / z
        h = rng.uniform(h_lo, h_hi) * sc.fy / z
    else:
        w, h = size_px
    flip = bool(rng.integers(2)) if flip is None else flip
    x0 = sc.u0 + sc.fx * x_m / z - w / 2
    y0 = sc.ground_row(z) - y_lift * sc.fy / z
    f = _box(x0, y0, w, h, flip)
    vehicle = cls in ("car", "truck", "bus", "train", "caravan", "trailer")
    if vehicle:
        paint = VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))]
        if cls == "bus":
            paint = [(40, 200, 230), (40, 40, 200), (230, 230, 230)][rng.integers(3)]
        if cls == "train":
            paint = (170, 170, 175)
        sc.poly(f(outline), cls, paint, z)
        glass = (90, 60, 40)
        if cls == "car":
            sc.paint(f([(.2, .58), (.33, .92), (.7, .92), (.8, .58)]), glass)
        elif cls in ("bus", "train"):
            for u in np.arange(.06, .9, .12):
                sc.paint(f([(u, .5), (u, .85), (u + .09, .85), (u + .09, .5)]), glass)
        elif cls == "truck":
            sc.paint(f([(.72, .55), (.72, .74), (.85, .72), (.93, .55)]), glass)
        if cls != "train":
            r = .17 * min(h, w * .6)
            for u in (.18, .8):
                sc.paint(circle(f([(u, 0)])[0, 0], y0 - r * .9, r), (15, 15, 15))
    elif cls in ("person", "rider"):
        shirt = SHIRTS[rng.integers(len(SHIRTS))]
        sc.poly(f(outline), cls, (50, 40, 35), z)
        sc.paint(f([(.14, .8), (.08, .58), (.26, .5), (.74, .5), (.92, .58), (.86, .8), (.64, .84), (.36, .84)]), shirt)
        head = f([(.5, .92)])[0]
        sc.paint(circle(head[0], head[1], max(.5, .07 * h)), SKIN[rng.integers(len(SKIN))])
        if cls == "rider":
            sc.paint(circle(head[0], head[1] - .03 * h, max(.5, .075 * h), 8)[:5], (20, 20, 20))
    else:  # motorcycle, bicycle
        frame = (30, 30, 150) if cls == "bicycle" else (25, 25, 25)
        sc.poly(f(outline), cls, frame, z)
        r = .22 * h
        for u in (.18, .82):
            c = f([(u, 0)])[0]
            sc.paint(circle(c[0], c[1] - r, r), (10, 10, 10))
            sc.paint(circle(c[0], c[1] - r, .6 * r), (120, 120, 120))
        if cls == "motorcycle":
            sc.paint(f([(.3, .4), (.35, .75), (.7, .78), (.75, .4)]), VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))])
    return x0, y0, w, h


def draw_pole(sc, x, z, top, width_m=.3, sign=False):
    """A pole standing on the ground at depth z, column x, up to row `top`."""
    half = max(1.0, width_m * sc.fx / z / 2)
    bottom = sc.ground_row(z)
    sc.poly([(x - half, top), (x + half, top), (x + half, bottom), (x - half, bottom)], "pole", (110, 115, 120), z)
    if sign:
        s = .7 * sc.fx / z
        sc.poly([(x - s / 2, top), (x + s / 2, top), (x + s / 2, top + s), (x - s / 2, top + s)], "traffic sign",
                (40, 200, 230), z)


def draw_group(sc, rng, cls):
    """A crowd region (cargroup/persongroup): far, wide, one plain label id and no instance index."""
    z = rng.uniform(35, 70)
    width = rng.uniform(8, 20) * sc.fx / z
    height = (1.5 if cls == "car" else 1.8) * sc.fy / z
    x0, y0 = rng.uniform(0, sc.w - width), sc.ground_row(z)
    n = 9
    top = [(x0 + width * i / (n - 1), y0 - height * rng.uniform(.7, 1.0)) for i in range(n)]
    color = (60, 60, 110) if cls == "car" else (60, 50, 45)
    sc.poly(top + [(x0 + width, y0), (x0, y0)], cls, color, z, group=True)


def draw_tiny_person(sc, rng):
    """A tiny person far away (< 100 px at 1024x2048), placed where nothing nearer hides it."""
    s = sc.w / paper.FRAME_SIZE[1]
    w, h = max(1.0, 5 * s), max(2.0, 14 * s)
    z = rng.uniform(120, 150)
    y0 = sc.ground_row(z)
    rows = slice(max(0, int(y0 - h) - 1), int(y0) + 2)
    for x in rng.permutation(np.arange(int(w) + 2, sc.w - int(w) - 2, max(1, int(w)))):
        if (sc.inst[rows, x - int(w) - 1:x + int(w) + 2] < 1000).all():
            draw_instance(sc, "person", z, (x - sc.u0) * z / sc.fx, rng, size_px=(w, h))
            return

