"""dcme_layers.evaluation.visualize: the report's figure panels (instances coloured with their CMs, image, vectors)."""
import cv2
import numpy as np
import pytest


def test_figure_panels(tmp_path):
    from dcme_layers.core.encoding import vector_map
    from dcme_layers.evaluation.visualize import colorize_instances, side_by_side, write_png

    labels = np.zeros((30, 50), np.int32)
    labels[2:10, 3:20], labels[15:25, 25:45] = 1, 2
    col = colorize_instances(labels, centers=[[11, 5.5], [34.5, 19.5]])
    assert col.dtype == np.uint8 and col.shape == (30, 50, 3)
    assert not col[labels == 0].any()                      # background black
    assert len({tuple(col[3, 4]), tuple(col[24, 26])}) == 2   # two instances, two colours
    assert tuple(col[5, 11]) == (255, 255, 255)            # CM marked
    image = np.full((60, 100, 3), 90, np.uint8)            # resized to the labels' size
    fig = side_by_side(image, vector_map(labels * 26000), labels)
    assert fig.shape == (30, 3 * 50 + 2 * 4, 3)
    path = write_png(tmp_path / "f" / "fig.png", fig)
    assert np.array_equal(cv2.imread(str(path)), fig) and not list(path.parent.glob(".*"))
    with pytest.raises(ValueError, match="differ in size"):
        side_by_side(image, np.zeros((2, 10, 10), np.float32), labels)
