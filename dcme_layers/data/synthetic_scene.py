"""The synthetic street scenes that dcme_layers.data.synthetic writes as Cityscapes files: a pinhole camera 1.22 m
above a flat road (Cityscapes' own calibration), the background, the layout of the objects (drawn by
``synthetic_objects``) far to near, then texture and disparity (``render_frame``).
"""
import json

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label

from dcme_layers.core import paper
from dcme_layers.data.synthetic_objects import circle, draw_group, draw_instance, draw_pole, draw_tiny_person

__all__ = ["CAMERA", "CLASS_WEIGHTS", "Scene", "render_frame"]

#: Cityscapes' camera (aachen), for paper.FRAME_SIZE; intrinsics are scaled to other sizes.
CAMERA = {"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.0195,
                        "z": 1.22},
          "intrinsic": {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}}
#: Random instances drawn per frame: class and weight (cars and people dominate, as in Cityscapes).
CLASS_WEIGHTS = {"car": 10, "person": 8, "bicycle": 3, "rider": 2, "motorcycle": 1.5, "truck": 1.5, "bus": 1.2,
                 "train": .4}


def _camera(size):
    """Cityscapes' camera with intrinsics scaled to size = (H, W)."""
    sy, sx = size[0] / paper.FRAME_SIZE[0], size[1] / paper.FRAME_SIZE[1]
    cam = json.loads(json.dumps(CAMERA))
    i = cam["intrinsic"]
    i["fx"], i["u0"], i["fy"], i["v0"] = i["fx"] * sx, i["u0"] * sx, i["fy"] * sy, i["v0"] * sy
    return cam


class Scene:
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



def _background(sc, rng):
    """Sky, sidewalk and road with its centre line, buildings along the horizon and vegetation."""
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
        blob = circle(cx, cy, r, 16) + rng.uniform(-.15, .15, (16, 2)) * r
        sc.poly(blob, "vegetation", (40 + rng.uniform(-10, 10), 120 + rng.uniform(-20, 20), 60), z)


def _split_and_riding(inst, split_id, rider_id, bike_id):
    """Whether the occluded vehicle is in >= 2 parts and the rider still touches its bike (nothing nearer hid them)."""
    parts = cv2.connectedComponents((inst == split_id).astype(np.uint8), connectivity=8)[0] - 1
    rider = cv2.dilate((inst == rider_id).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return parts >= 2 and bool((rider & (inst == bike_id)).any())


def render_frame(rng, size=paper.FRAME_SIZE):
    """Render one scene: dict of image (H, W, 3) uint8 BGR, label_ids uint8, instance_ids uint16,
    disparity uint16, polygons (dict), camera (dict). Scenes in which nearer objects hide the vehicle split by
    a pole or the rider are redrawn (deterministically, from the same generator)."""
    size = (int(size[0]), int(size[1]))
    cam = _camera(size)
    for _ in range(20):
        sc = Scene(size, cam, rng)
        if _compose(sc, rng):
            break
    return _finish(sc, rng)


def _compose(sc, rng):
    """The background and the objects, far to near; whether the split vehicle and the rider stayed visible."""
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
            draw_instance(sc, cls, z, xm, rng)
        elif kind == "rider":
            draw_instance(sc, cls, z + .05, xm, rng, flip=False)
            bike_id = sc.last_id
            draw_instance(sc, "rider", z, xm, rng, y_lift=.55)
            rider_id = sc.last_id
        elif kind == "split":
            x0, y0, w, h = draw_instance(sc, cls, z, xm, rng)
            split_id = sc.last_id
            zp = z - 1.0
            draw_pole(sc, x0 + w * rng.uniform(.4, .6), zp, y0 - h - .05 * sc.h, width_m=max(.3, 3 / sc.fx * zp))
        elif kind == "group":
            draw_group(sc, rng, cls)
        else:
            x = sc.u0 + sc.fx * xm / z
            draw_pole(sc, x, z, sc.ground_row(z) - 4 * sc.fy / z, sign=bool(rng.integers(2)))
    draw_tiny_person(sc, rng)
    # The ego vehicle's bonnet at the bottom (void, no disparity).
    hood = [(0, sc.h - 1), (0, .93 * sc.h), (.25 * sc.w, .9 * sc.h), (.75 * sc.w, .9 * sc.h), (sc.w - 1, .93 * sc.h),
            (sc.w - 1, sc.h - 1)]
    sc.poly(hood, "ego vehicle", (35, 30, 30), 0.0)
    return _split_and_riding(sc.inst, split_id, rider_id, bike_id)


def _finish(sc, rng):
    """The frame's files from a composed scene: textured image, labels, disparity with holes, polygons, camera."""
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

