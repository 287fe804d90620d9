"""dcme_layers.evaluation.export: label maps upsampled to the ground truth's size as the exact inverse of the
subsampling, and masks written as the cityscapesscripts evaluator reads them."""
import cv2
import numpy as np
from hypothesis import given, settings, strategies as st

from dcme_layers.evaluation import export


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 60), st.integers(0, 2 ** 31 - 1))
def test_nearest_upsampling_inverts_subsampling(h, w, seed):
    lab = np.random.default_rng(seed).integers(0, 5, (h, w)).astype(np.int32)
    full = export.upsample_labels(lab, (3 * h + h // 3 + 1, 3 * w + w // 5 + 2))
    back = cv2.resize(full, (w, h), interpolation=cv2.INTER_NEAREST)   # what cityscapes.subsample does
    assert np.array_equal(back, lab)


def test_naive_upsampling_is_not_the_inverse_of_the_subsampling(tmp_path):
    """At the 3x of Cityscapes (1024x2048 <-> 340x680): subsampling, then the exact inverse, then subsampling again
    gives the label map back; cv2.resize(INTER_NEAREST) upwards (the "naive" choice) shifts the masks by about a
    pixel, so most instance borders move, and its exported masks differ."""
    from dcme_layers.data import cityscapes

    rng = np.random.default_rng(0)
    lab = np.zeros((340, 680), np.int32)
    for k in range(1, 30):                                   # 29 random rectangles
        y, x = rng.integers(0, 320), rng.integers(0, 660)
        lab[y:y + rng.integers(3, 20), x:x + rng.integers(3, 20)] = k
    size = (1024, 2048)
    exact, naive = export.upsample_labels(lab, size), export.upsample_labels_naive(lab, size)
    assert np.array_equal(cityscapes.subsample_ids(exact, lab.shape), lab)
    back = cityscapes.subsample_ids(naive, lab.shape)
    assert not np.array_equal(back, lab)
    assert np.count_nonzero(back != lab) > 0.2 * np.count_nonzero(lab)   # a border row/column of most instances
    moved = np.count_nonzero(exact != naive)
    assert moved > 0.1 * np.count_nonzero(exact)
    # export_frame takes the choice: the masks written differ between the two.
    one = (lab == 1).astype(np.int32)
    export.export_frame(tmp_path / "a", "f", one, [26], [1.0], size, upsample="nearest")
    export.export_frame(tmp_path / "b", "f", one, [26], [1.0], size, upsample="naive")
    a, b = (cv2.imread(str(tmp_path / d / "masks" / "f_001.png"), cv2.IMREAD_GRAYSCALE) for d in "ab")
    assert np.array_equal(a > 0, exact == 1) and np.array_equal(b > 0, naive == 1) and not np.array_equal(a, b)


def test_exported_masks_read_back_as_the_evaluator_reads_them(tmp_path):
    """Masks are 1-bit PNGs cut from each instance's box: read as cityscapesscripts does (PIL, convert("L"),
    != 0), every mask equals its instance in the upsampled label map, also where boxes overlap."""
    from PIL import Image

    rng = np.random.default_rng(3)
    lab = np.zeros((34, 68), np.int32)
    lab[2:30, 3:40] = 1
    lab[8:20, 10:25] = 2                                   # inside 1's box: 1 is a frame around it
    lab[rng.random(lab.shape) < 0.05] = 3                  # scattered pixels everywhere
    size = (102, 204)
    txt = export.export_frame(tmp_path, "f", lab, [26, 24, 33], [0.9, 0.8, 0.7], size)
    full = export.upsample_labels(lab, size)
    lines = txt.read_text().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines, 1):
        png = Image.open(tmp_path / line.split(" ")[0])
        assert png.mode == "1" and png.size == (size[1], size[0])
        assert np.array_equal(np.array(png.convert("L")) != 0, full == i)


def test_bilinear_mask_matches_full_image_interpolation():
    from scipy.ndimage import map_coordinates

    m = np.zeros((34, 68), bool)
    m[5:20, 10:30] = True
    m[0:6, 60:68] = True                                # touching the border
    size = (102, 205)
    crop, rs, cs = export.bilinear_mask(m, size)
    got = np.zeros(size, bool)
    got[rs, cs] = crop
    yy, xx = np.mgrid[:size[0], :size[1]]
    ref = map_coordinates(m.astype(float), [yy * 34 / size[0], xx * 68 / size[1]], order=1, mode="nearest") > 0.5
    assert np.array_equal(got, ref)
