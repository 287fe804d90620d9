"""dcme_layers.data.synthetic_scene, one synthetic Cityscapes frame: the classes, instance sizes and shapes, crowds
and depths that the pipeline needs to meet."""
import cv2
import numpy as np

from dcme_layers.data import cityscapes as cs, synthetic_scene


def _components(mask):
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_scene_content_at_full_resolution():
    """Per frame at 1024x2048: several classes, a tiny (< 100 px) and a large instance, an instance split in two,
    riders overlapping their bikes; over a few frames also crowd regions and disparity-based depths 5-150 m."""
    classes, groups, split, riding = set(), set(), 0, 0
    for i in range(3):
        fr = synthetic_scene.render_frame(np.random.default_rng([0, 0, i]), (1024, 2048))
        ids = fr["instance_ids"].astype(np.int32)
        inst = cs.instance_map(ids)
        keys, counts = np.unique(inst[inst > 0], return_counts=True)
        classes |= {int(k) // 1000 for k in keys}
        groups |= {int(g) for g in np.unique(ids) if g in cs.INSTANCE_LABEL_IDS}
        assert len(keys) >= 6
        assert counts.min() < 100
        if i != 1:  # frames 0 and 2 of this seed have a large instance close by (80% of frames do)
            assert counts.max() > 0.04 * 1024 * 2048
        split += any(_components(inst == k) >= 2 for k in keys)
        rider = (ids // 1000 == 25)
        bikes = np.isin(ids // 1000, [32, 33])
        riding += (cv2.dilate(rider.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & bikes).any()
        # depth from disparity: Z = baseline * fx / d with d = (p - 1) / 256
        p = fr["disparity"].astype(np.float64)
        valid = (p > 0) & (inst > 0)
        z = fr["camera"]["extrinsic"]["baseline"] * fr["camera"]["intrinsic"]["fx"] / ((p[valid] - 1) / 256)
        assert 5 < z.min() and z.max() < 155
        assert (p == 0).any()  # invalid patches and sky
        assert fr["polygons"]["imgWidth"] == 2048 and len(fr["polygons"]["objects"]) > 10
    assert len(classes) >= 4
    assert split == 3, "a frame without an instance split into disjoint parts"
    assert riding == 3, "a frame without a rider overlapping its bike"
    assert groups, "no crowd region (plain instance-class id) in 3 frames"
