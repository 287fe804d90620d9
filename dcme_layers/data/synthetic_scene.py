"""The synthetic street scenes that dcme_layers.data.synthetic writes as Cityscapes files: a pinhole camera 1.22 m above
a flat road (Cityscapes' own calibration), objects with a depth and a size in metres, polygons rasterised far to
near into the image, the label images and the disparity (``render_frame``).
"""
import json

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label

#: Full resolution (H, W) of the frames, Cityscapes'.
SIZE = (1024, 2048)
#: Cityscapes' camera (aachen), for 1024x2048; intrinsics are scaled to other sizes.
CAMERA = {"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195,
                        "z": 1.22},
          "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}}

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
# Random instances drawn per frame: class and weight (cars and people dominate, as in Cityscapes).
CLASS_WEIGHTS = {"car": 10, "person": 8, "bicycle": 3, "rider": 2, "motorcycle": 1.5, "truck": 1.5, "bus": 1.2,
                 "train": .4}
# Class-typical BGR colours.
VEHICLE_PAINT = [(40, 40, 160), (160, 60, 30), (200, 200, 200), (30, 30, 30), (90, 90, 90), (20, 110, 30),
                 (150, 150, 160), (40, 70, 120)]
SHIRTS = [(40, 40, 200), (200, 80, 40), (60, 160, 60), (30, 30, 30), (220, 220, 220), (40, 160, 220), (140, 40, 140)]
SKIN = [(150, 180, 220), (110, 140, 190), (60, 90, 130)]


def _unit(poly):
    return np.asarray(poly, np.float64)


def _camera(size):
    """Cityscapes' camera with intrinsics scaled to size = (H, W)."""
    sy, sx = size[0] / SIZE[0], size[1] / SIZE[1]
    cam = json.loads(json.dumps(CAMERA))
    i = cam["intrinsic"]
    i["fx"], i["u0"], i["fy"], i["v0"] = i["fx"] * sx, i["u0"] * sx, i["fy"] * sy, i["v0"] * sy
    return cam


class _Scene:
    """Painter: draws polygons into the image, labelIds, instanceIds and depth, and records the polygons."""

    def __init__(self, size, cam, rng):
        self.h, self.w = size
        self.cam, self.rng = cam, rng
        i = cam["intrinsic"]
        self.fx, self.fy, self.u0, self.v0 = i["fx"], i["fy"], i["u0"], i["v0"]
        self.cam_h = cam["extrinsic"]["z"]
        self.image = np.zeros((self.h, self.w, 3), np.float32)
        self.label = np.zeros((self.h, self.w), np.uint8)
        self.inst = np.zeros((self.h, self.w), np.uint16)
        self.depth = np.zeros((self.h, self.w), np.float32)  # 0 = no valid depth
        self.objects = []
        self.counts = {}

    def ground_row(self, z):
        return self.v0 + self.fy * self.cam_h / z

    def poly(self, pts, label, color, depth=0.0, group=False, record=True):
        """Fill one polygon (pixel coordinates) as `label` (a Cityscapes label name) at `depth` metres."""
        pts = np.round(np.asarray(pts, np.float64)).astype(np.int32)
        pts[:, 0] = np.clip(pts[:, 0], 0, self.w - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, self.h - 1)
        lab = name2label[label]
        iid = lab.id
        if lab.hasInstances and not group:
            iid = lab.id * 1000 + self.counts.get(label, 0)
            self.counts[label] = self.counts.get(label, 0) + 1
        self.last_id = iid
        cv2.fillPoly(self.label, [pts], int(lab.id))
        cv2.fillPoly(self.inst, [pts], int(iid))
        cv2.fillPoly(self.depth, [pts], float(depth))
        if color is not None:
            cv2.fillPoly(self.image, [pts], tuple(float(c) for c in color))
        if record:
            self.objects.append({"label": label + ("group" if group else ""), "polygon": pts.tolist()})
        return pts

    def paint(self, pts, color):
        """Image-only detail (windows, wheels, clothes): no label change."""
        pts = np.round(np.asarray(pts)).astype(np.int32)
        cv2.fillPoly(self.image, [pts], tuple(float(c) for c in color))


def _box(x0, y0, w, h, flip):
    """Map unit-box coordinates (u right, v up) to pixels: left x0, bottom row y0, size w x h, mirrored if flip."""
    def f(uv):
        uv = _unit(uv)
        u = 1 - uv[:, 0] if flip else uv[:, 0]
        return np.stack([x0 + u * w, y0 - uv[:, 1] * h], axis=1)
    return f


def _circle(cx, cy, r, n=12):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _draw_instance(sc, cls, z, x_m, rng, size_px=None, y_lift=0.0, flip=None):
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
                sc.paint(_circle(f([(u, 0)])[0, 0], y0 - r * .9, r), (15, 15, 15))
    elif cls in ("person", "rider"):
        shirt = SHIRTS[rng.integers(len(SHIRTS))]
        sc.poly(f(outline), cls, (50, 40, 35), z)
        sc.paint(f([(.14, .8), (.08, .58), (.26, .5), (.74, .5), (.92, .58), (.86, .8), (.64, .84), (.36, .84)]), shirt)
        head = f([(.5, .92)])[0]
        sc.paint(_circle(head[0], head[1], max(.5, .07 * h)), SKIN[rng.integers(len(SKIN))])
        if cls == "rider":
            sc.paint(_circle(head[0], head[1] - .03 * h, max(.5, .075 * h), 8)[:5], (20, 20, 20))
    else:  # motorcycle, bicycle
        frame = (30, 30, 150) if cls == "bicycle" else (25, 25, 25)
        sc.poly(f(outline), cls, frame, z)
        r = .22 * h
        for u in (.18, .82):
            c = f([(u, 0)])[0]
            sc.paint(_circle(c[0], c[1] - r, r), (10, 10, 10))
            sc.paint(_circle(c[0], c[1] - r, .6 * r), (120, 120, 120))
        if cls == "motorcycle":
            sc.paint(f([(.3, .4), (.35, .75), (.7, .78), (.75, .4)]), VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))])
    return x0, y0, w, h


def _background(sc, rng):
    h, w, v0 = sc.h, sc.w, sc.v0
    rows = np.arange(h, dtype=np.float32)[:, None]
    # Sky: a vertical gradient (light blue to hazy white); no valid disparity.
    t = np.clip(rows / max(v0, 1), 0, 1)
    top, horizon = np.array([235, 190, 140], np.float32), np.array([240, 230, 220], np.float32)
    sky = top * (1 - t[..., None]) + horizon * t[..., None]
    sc.poly([(0, 0), (w - 1, 0), (w - 1, v0 + 2), (0, v0 + 2)], "sky", None)
    sc.image[:] = np.broadcast_to(sky, (h, 1, 3))
    # Ground: road between two lines to the vanishing point, sidewalks outside; depth from the ground plane.
    ground = np.where(rows > v0 + 1, sc.fy * sc.cam_h / np.maximum(rows - v0, 1e-3), 0).astype(np.float32)
    sc.poly([(0, v0), (w - 1, v0), (w - 1, h - 1), (0, h - 1)], "sidewalk", (150, 145, 160))
    vx = sc.u0 + rng.uniform(-.05, .05) * w
    road = [(vx - 4, v0), (vx + 4, v0), (vx + 1.1 * w, h - 1), (vx - 1.1 * w, h - 1)]
    sc.poly(road, "road", (85, 80, 80))
    sc.depth[:] = np.where(sc.label > 0, np.broadcast_to(ground, (h, w)), 0)
    for k in range(1, 12):  # dashed centre line (paint on the road)
        y1, y2 = v0 + (h - v0) * ((k - .6) / 11) ** 2, v0 + (h - v0) * (k / 11) ** 2
        d1, d2 = (y1 - v0) / (h - v0) * 6e-3 * w, (y2 - v0) / (h - v0) * 6e-3 * w
        sc.paint([(vx - d1, y1), (vx + d1, y1), (vx + d2, y2), (vx - d2, y2)], (210, 210, 210))
    # Buildings along the horizon, with window grids; vegetation in front of some.
    x = -rng.uniform(0, .05) * w
    while x < w:
        bw = rng.uniform(.06, .2) * w
        top = v0 - rng.uniform(.12, .45) * h
        z = rng.uniform(40, 90)
        grey = rng.uniform(70, 170)
        tint = rng.uniform(-15, 15, 3)
        sc.poly([(x, top), (x + bw, top), (x + bw, v0 + 3), (x, v0 + 3)], "building", grey + tint, z)
        step = max(3.0, .018 * h)
        for wy in np.arange(top + step, v0 - step, 2 * step):
            for wx in np.arange(x + step, x + bw - step, 2 * step):
                sc.paint([(wx, wy), (wx + step, wy), (wx + step, wy + step), (wx, wy + step)], (grey * .45,) * 3)
        x += bw
    for _ in range(rng.integers(2, 6)):
        cx, z = rng.uniform(0, w), rng.uniform(15, 40)
        r = rng.uniform(1.5, 3.5) * sc.fx / z
        cy = sc.ground_row(z) - 1.2 * r
        blob = _circle(cx, cy, r, 16) + rng.uniform(-.15, .15, (16, 2)) * r
        sc.poly(blob, "vegetation", (40 + rng.uniform(-10, 10), 120 + rng.uniform(-20, 20), 60), z)


def _pole(sc, x, z, top, width_m=.3, sign=False):
    """A pole standing on the ground at depth z, column x, up to row `top`."""
    half = max(1.0, width_m * sc.fx / z / 2)
    bottom = sc.ground_row(z)
    sc.poly([(x - half, top), (x + half, top), (x + half, bottom), (x - half, bottom)], "pole", (110, 115, 120), z)
    if sign:
        s = .7 * sc.fx / z
        sc.poly([(x - s / 2, top), (x + s / 2, top), (x + s / 2, top + s), (x - s / 2, top + s)], "traffic sign",
                (40, 200, 230), z)


def _group(sc, rng, cls):
    """A crowd region (cargroup/persongroup): far, wide, one plain label id and no instance index."""
    z = rng.uniform(35, 70)
    width = rng.uniform(8, 20) * sc.fx / z
    height = (1.5 if cls == "car" else 1.8) * sc.fy / z
    x0, y0 = rng.uniform(0, sc.w - width), sc.ground_row(z)
    n = 9
    top = [(x0 + width * i / (n - 1), y0 - height * rng.uniform(.7, 1.0)) for i in range(n)]
    color = (60, 60, 110) if cls == "car" else (60, 50, 45)
    sc.poly(top + [(x0 + width, y0), (x0, y0)], cls, color, z, group=True)


def _tiny(sc, rng):
    """A tiny person far away (< 100 px at 1024x2048), placed where nothing nearer hides it."""
    s = sc.w / SIZE[1]
    w, h = max(1.0, 5 * s), max(2.0, 14 * s)
    z = rng.uniform(120, 150)
    y0 = sc.ground_row(z)
    rows = slice(max(0, int(y0 - h) - 1), int(y0) + 2)
    for x in rng.permutation(np.arange(int(w) + 2, sc.w - int(w) - 2, max(1, int(w)))):
        if (sc.inst[rows, x - int(w) - 1:x + int(w) + 2] < 1000).all():
            _draw_instance(sc, "person", z, (x - sc.u0) * z / sc.fx, rng, size_px=(w, h))
            return


def _split_and_riding(inst, split_id, rider_id, bike_id):
    """Whether the occluded vehicle is in >= 2 parts and the rider still touches its bike (nothing nearer hid them)."""
    parts = cv2.connectedComponents((inst == split_id).astype(np.uint8), connectivity=8)[0] - 1
    rider = cv2.dilate((inst == rider_id).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return parts >= 2 and bool((rider & (inst == bike_id)).any())


def render_frame(rng, size=SIZE):
    """Render one scene: dict of image (H, W, 3) uint8 BGR, label_ids uint8, instance_ids uint16,
    disparity uint16, polygons (dict), camera (dict). Scenes in which nearer objects hide the vehicle split by
    a pole or the rider are redrawn (deterministically, from the same generator)."""
    size = (int(size[0]), int(size[1]))
    cam = _camera(size)
    for _ in range(20):
        sc = _Scene(size, cam, rng)
        if _compose(sc, rng):
            break
    return _finish(sc, rng)


def _compose(sc, rng):
    _background(sc, rng)
    # Objects in the scene, drawn far to near: (depth, kind, params).
    items = []
    classes = list(CLASS_WEIGHTS)
    p = np.array([CLASS_WEIGHTS[c] for c in classes], np.float64)
    for _ in range(rng.integers(5, 13)):
        cls = classes[rng.choice(len(classes), p=p / p.sum())]
        z_min = 18 if cls in ("truck", "bus", "train") else 8
        items.append((z_min + (120 - z_min) * rng.random() ** 1.5, "inst", cls, rng.uniform(-12, 12)))
    for _ in range(rng.integers(1, 5)):  # pedestrians on the sidewalks
        items.append((rng.uniform(8, 35), "inst", "person", rng.choice([-1, 1]) * rng.uniform(4.5, 8)))
    # A row of parked cars that overlap each other.
    side = rng.choice([-1, 1])
    for k in range(rng.integers(2, 4)):
        items.append((10 + 4.5 * k + rng.uniform(0, 1), "inst", "car", side * rng.uniform(3.5, 4.5)))
    # A rider on a bicycle or motorcycle: two overlapping instances.
    z, xm = rng.uniform(9, 40), rng.uniform(-6, 6)
    items.append((z, "rider", ("bicycle", "motorcycle")[rng.integers(2)], xm))
    # A vehicle split in two by a pole in front of it.
    items.append((rng.uniform(14, 30), "split", ("car", "bus", "truck")[rng.integers(3)], rng.uniform(-5, 5)))
    if rng.random() < .8:  # a large instance close by, to one side
        items.append((rng.uniform(6.5, 9), "inst", ("car", "car", "truck")[rng.integers(3)],
                      rng.choice([-1, 1]) * rng.uniform(3, 5)))
    if rng.random() < .3:  # an instance class ignored in evaluation (background for DCME)
        items.append((rng.uniform(15, 40), "inst", ("caravan", "trailer")[rng.integers(2)], rng.uniform(-8, 8)))
    if rng.random() < .7:
        items.append((rng.uniform(35, 70), "group", ("car", "person")[rng.integers(2)], 0.0))
    for _ in range(rng.integers(1, 4)):  # poles and signs on the sidewalk
        items.append((rng.uniform(8, 40), "pole", None, rng.choice([-1, 1]) * rng.uniform(5, 9)))
    items.sort(key=lambda it: -it[0])
    for z, kind, cls, xm in items:
        if kind == "inst":
            _draw_instance(sc, cls, z, xm, rng)
        elif kind == "rider":
            _draw_instance(sc, cls, z + .05, xm, rng, flip=False)
            bike_id = sc.last_id
            _draw_instance(sc, "rider", z, xm, rng, y_lift=.55)
            rider_id = sc.last_id
        elif kind == "split":
            x0, y0, w, h = _draw_instance(sc, cls, z, xm, rng)
            split_id = sc.last_id
            zp = z - 1.0
            _pole(sc, x0 + w * rng.uniform(.4, .6), zp, y0 - h - .05 * sc.h, width_m=max(.3, 3 / sc.fx * zp))
        elif kind == "group":
            _group(sc, rng, cls)
        else:
            x = sc.u0 + sc.fx * xm / z
            _pole(sc, x, z, sc.ground_row(z) - 4 * sc.fy / z, sign=bool(rng.integers(2)))
    _tiny(sc, rng)
    # The ego vehicle's bonnet at the bottom (void, no disparity).
    hood = [(0, sc.h - 1), (0, .93 * sc.h), (.25 * sc.w, .9 * sc.h), (.75 * sc.w, .9 * sc.h), (sc.w - 1, .93 * sc.h),
            (sc.w - 1, sc.h - 1)]
    sc.poly(hood, "ego vehicle", (35, 30, 30), 0.0)
    return _split_and_riding(sc.inst, split_id, rider_id, bike_id)


def _finish(sc, rng):
    cam, size = sc.cam, (sc.h, sc.w)
    # Texture: low-frequency shading and fine noise; slight blur like a real lens.
    h, w = size
    low = cv2.resize(rng.normal(0, 1, (max(2, h // 32), max(2, w // 32))).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    img = sc.image * (1 + .05 * low[..., None]) + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0)
    # Disparity d = baseline * fx / Z, stored as p = 256 d + 1; invalid where Z = 0 and in a few random patches.
    d = np.where(sc.depth > 0, cam["extrinsic"]["baseline"] * sc.fx / np.maximum(sc.depth, 1e-6), 0)
    disp = np.where(sc.depth > 0, np.clip(np.round(d * 256 + 1), 1, 65535), 0).astype(np.uint16)
    for _ in range(rng.integers(2, 6)):
        ph, pw = int(rng.uniform(.02, .08) * h) + 1, int(rng.uniform(.02, .08) * w) + 1
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        disp[y:y + ph, x:x + pw] = 0
    polygons = {"imgHeight": h, "imgWidth": w, "objects": sc.objects}
    return {"image": img, "label_ids": sc.label, "instance_ids": sc.inst, "disparity": disp, "polygons": polygons,
            "camera": cam}


