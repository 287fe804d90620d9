"""tools/demo.py's choice of configuration: the CPU one trains at a reduced size, a CUDA build with a
working GPU gets the paper's resolution; the grid its thresholds are tuned over follows the size."""
import pytest

import helpers

helpers.import_caffe()

from dcme_layers.core.paper import THRESHOLDS
from dcme_layers.core.thresholds import scale_thresholds
from dcme_layers.pipeline.tuning_grid import default_grid
from tools import demo  # noqa: E402


def test_cpu_configuration_is_small_with_scaled_thresholds():
    c = demo.config(gpu=False)
    assert c["device"] == "cpu" and c["size"] == (85, 170)
    assert scale_thresholds("segnet", (85, 170)) == (2.5, 3, 3.75)
    dts, vts, ets = c["grid"]        # from the paper's scaled to the size to about its unscaled (see tools/demo.py)
    assert (min(dts), min(vts), min(ets)) == (2.5, 3, 3.75)
    paper = THRESHOLDS["segnet"]
    assert max(dts) >= paper.dt and max(vts) >= paper.vt and max(ets) >= paper.et
    assert "85x170" in c["encoded"] and "85x170" in c["segnet_prefix"] and "85x170" in c["instances"]
    assert c["slim"] > 1 and f"slim{c['slim']}" in c["segnet_prefix"]   # a slim SegNet: its own snapshots
    n, n_val = c["frames"]
    assert c["data"] != demo.synthetic.ROOT and n > 12 and n_val >= 30     # more training frames, a val set of 30, own root
    assert c["googlenet"]["size"] == (340, 680) and c["min_pixels"] == 50   # crops at the paper's size
    assert c["segnet"]["type"] == "Adam" and c["segnet"]["max_iter"] > 8
    g = c["googlenet"]
    assert g["slim"] > 1 and f"slim{g['slim']}" in c["googlenet_prefix"]   # a slim GoogLeNet: its own snapshots
    assert c["googlenet_solver"]["max_iter"] == g["max_iter"] == c["googlenet_solver"]["snapshot"]


def test_a_changed_configuration_gets_new_snapshot_names(monkeypatch):
    before = demo.config(gpu=False)
    monkeypatch.setitem(demo.CPU, "segnet", dict(demo.CPU["segnet"], max_iter=demo.CPU["segnet"]["max_iter"] + 1))
    after = demo.config(gpu=False)
    assert after["segnet_prefix"] != before["segnet_prefix"]          # no stale weights of the old configuration
    assert after["googlenet_prefix"] == before["googlenet_prefix"]    # GoogLeNet's settings did not change


def test_the_seed_sets_every_random_stream():
    one, two = demo.config(gpu=False, seed=1), demo.config(gpu=False, seed=2)
    assert one["segnet_solver"]["random_seed"] == one["googlenet_solver"]["random_seed"] == 1      # fillers, solvers
    assert two["segnet_solver"]["random_seed"] == two["googlenet_solver"]["random_seed"] == 2
    for key in ("encoded", "instances", "segnet_prefix", "googlenet_prefix"):   # data order, crops, own snapshots
        assert one[key] != two[key] and one[key] == demo.config(gpu=False, seed=1)[key]
    assert one["data"] == two["data"]                                           # the same synthetic frames


def test_gpu_configuration_is_the_papers_resolution():
    c = demo.config(gpu=True)
    assert c["device"] == "gpu" and c["size"] == (340, 680)
    assert c["grid"] == default_grid((340, 680))        # around the paper's setting
    assert THRESHOLDS["segnet"] == tuple(g[len(g) // 2] for g in c["grid"])
    assert c["slim"] == 1 and c["frames"][1] >= 30       # the paper's SegNet, scored on 30 val frames
    assert c["encoded"] != demo.config(gpu=False)["encoded"]


def test_demo_writes_matching_train_and_deploy_nets(tmp_path):
    c = demo.config(gpu=False)
    files = demo.write_solvers(c, tmp_path)
    deploy, train = files["segnet_deploy"].read_text(), files["segnet_train"].read_text()
    width = 64 // c["slim"]                          # conv1_1: 64 channels in the paper's SegNet
    assert f"num_output: {width}\n" in deploy and f"num_output: {width}\n" in train
    assert "num_output: 512\n" not in deploy and "num_output: 512\n" not in train   # conv5: 512 / slim
    g = c["googlenet"]["slim"]
    deploy, train = files["googlenet_deploy"].read_text(), files["googlenet_train"].read_text()
    for text in deploy, train:                       # conv1/7x7_s2: 64 channels, inception_5b/1x1: 384
        assert f"num_output: {64 // g}\n" in text and f"num_output: {384 // g}\n" in text
        assert "num_output: 384\n" not in text and "num_output: 8\n" in text      # the 8 classes stay
    assert "type: \"Adam\"" in files["googlenet"].read_text()


def test_gpu_is_used_only_by_a_cuda_build_whose_device_query_works(tmp_path):
    assert demo.cuda_build("CUDA=1\nCUDNN=1\nCUDA_ARCH=90\n")
    assert not demo.cuda_build("CUDA=0\nCUDNN=0\nCUDA_ARCH=\n")
    assert not demo.gpu_usable(tmp_path / "missing")
    cpu = tmp_path / "cpu"
    cpu.write_text("CUDA=0\nCUDNN=0\n")
    assert not demo.gpu_usable(cpu, caffe="/nonexistent/caffe")   # a CPU build is never asked
    claims = tmp_path / "claims_cuda"
    claims.write_text("CUDA=1\n")
    assert not demo.gpu_usable(claims, caffe="/nonexistent/caffe")  # a CUDA build whose caffe does not run


@pytest.mark.slow
def test_a_cpu_only_caffe_is_never_asked_to_train_on_the_gpu(tmp_path):
    """On the CPU_ONLY build the real `caffe device_query -gpu 0` fails, so even a variant file that claims CUDA
    gets no GPU."""
    variant = (demo.ROOT / ".venv" / ".caffe_variant").read_text()      # written by every `make setup`
    if demo.cuda_build(variant):
        pytest.skip("this .venv uses a CUDA build of Caffe: whether its GPU works is tools/gpu_check.sh's test")
    claims = tmp_path / "claims_cuda"
    claims.write_text("CUDA=1\n")
    assert not demo.gpu_usable(claims)
    assert not demo.gpu_usable()
