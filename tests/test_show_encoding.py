"""tools/show_encoding.py: a frame's CM and bbox vector magnitudes side by side and its vector field as figures."""
import pytest

pytestmark = pytest.mark.slow


def test_show_encoding_figures(repo, tiny_cityscapes, tmp_path):
    import subprocess
    import sys

    import cv2
    r = subprocess.run([sys.executable, "tools/show_encoding.py", "--root", str(tiny_cityscapes), "--frame",
                        "synthval_000001_000019", "--size", "128", "256", "--out", str(tmp_path)],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mag = cv2.imread(str(tmp_path / "synthval_000001_000019_magnitude_cm_vs_bbox.png"))
    vec = cv2.imread(str(tmp_path / "synthval_000001_000019_vectors.png"))
    assert mag.shape == (128, 2 * 256 + 6, 3) and vec.shape == (128, 256, 3)
    assert mag[40:].any() and (mag[40:, :256] != mag[40:, 262:]).any()  # CM and bbox panels differ
    r = subprocess.run([sys.executable, "tools/show_encoding.py", "--root", str(tiny_cityscapes), "--frame", "nope",
                        "--out", str(tmp_path)], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no frame 'nope'" in r.stderr
