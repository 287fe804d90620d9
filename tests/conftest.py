"""Shared pytest fixtures (the tiny synthetic set, its encoding, briefly trained weights and their predictions, the
GoogLeNet smoke run, the real sample's instance crops) and settings (the hypothesis profiles, the `slow` marker).
Tests run from the repository root with the .venv from `make setup`; tests/helpers.py holds the helpers the modules
share and says how DCME_REQUIRE turns a skip into a failure."""
import os
import time

import pytest
from hypothesis import HealthCheck, settings

import helpers

REPO = helpers.REPO
SAMPLE = helpers.SAMPLE

# "ci" (what `make test` selects): the same examples on every run; "dev": random ones. Health checks stay on in
# both, so a strategy that filters most of its examples away fails (filter_too_much).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
assert HealthCheck.filter_too_much not in settings.get_profile("ci").suppress_health_check
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs Caffe, a tool or another subprocess, or takes more than a few "
                                       "seconds; `make test-fast` leaves these out")


def pytest_sessionstart(session):
    """What DCME_REQUIRE names is checked once, first: a missing one stops the run with one line."""
    unknown = sorted(helpers.REQUIRED - set(helpers.KNOWN))
    if unknown:
        pytest.exit(f"DCME_REQUIRE: unknown name {unknown[0]!r} (known: {', '.join(helpers.KNOWN)})", returncode=4)
    for what in sorted(helpers.REQUIRED):
        problem = helpers.PROBLEMS[what]()
        if problem:
            pytest.exit(f"required by DCME_REQUIRE but missing: {problem}", returncode=1)


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def cityscapes_sample():
    """Root of the real Cityscapes sample (leftImg8bit/, gtFine/); skips the test when it is absent (fails when
    DCME_REQUIRE names sample)."""
    problem = helpers.sample_problem()
    if problem:
        helpers.lacking("sample", problem)
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory):
    """Root of a small synthetic Cityscapes (dcme_layers.data.synthetic, seed 0): train 3 + val 2 frames at 256x512 with
    leftImg8bit, gtFine (labelIds, instanceIds, polygons), disparity and camera. Generated once per session
    and shared by all tests, so treat it as read-only (copy it to modify it)."""
    from dcme_layers.data.synthetic import generate
    return generate(tmp_path_factory.mktemp("tiny_cityscapes"), {"train": 3, "val": 2}, size=(256, 512), seed=0)


@pytest.fixture(scope="session")
def encoded(tiny_cityscapes, tmp_path_factory):
    """The tiny set's train and val splits encoded at helpers.ENCODED_SIZE by lmdb_io.encode_dataset (read-only).
    test_encode_data.py has an `encoded` of its own, made by the tool."""
    helpers.import_caffe()
    from dcme_layers.data.lmdb_io import encode_dataset

    out = tmp_path_factory.mktemp("encoded")
    encode_dataset(tiny_cityscapes, out, ["train", "val"], size=helpers.ENCODED_SIZE, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def weights(encoded, tmp_path_factory):
    """A SegNet trained for 4 iterations on the tiny set (so its BatchNorm statistics exist) and an untrained
    GoogLeNet (fillers only): enough to run every step of the pipeline for real."""
    caffe = helpers.import_caffe()
    import models
    from models.segnet import net as segnet

    size = helpers.ENCODED_SIZE
    tmp = tmp_path_factory.mktemp("weights")
    train = tmp / "segnet_train.prototxt"
    train.write_text(str(segnet.train(f"{encoded}/train", f"{encoded}/val", batch_size=1)))
    settings = dict(segnet.SMOKE, max_iter=4, snapshot=4, test_iter=None,
                    base_lr=segnet.SMOKE["base_lr"] * (340 * 680) / (size[0] * size[1]))
    solver = tmp / "solver.prototxt"
    solver.write_text(models.solver(str(train), str(tmp / "segnet"), settings))
    caffe.set_mode_cpu()
    caffe.get_solver(str(solver)).solve()
    classifier = caffe.Net(str(REPO / "prototxt/googlenet_deploy.prototxt"), caffe.TEST)
    classifier.save(str(tmp / "googlenet.caffemodel"))
    return tmp / "segnet_iter_4.caffemodel", tmp / "googlenet.caffemodel"


@pytest.fixture(scope="session")
def clean_blobs(encoded, weights, tmp_path_factory):
    """The vector maps (N, 2, H, W) that an uninterrupted inference of `weights` predicts for the val split."""
    import h5py

    from dcme_layers.net import inference

    out = tmp_path_factory.mktemp("clean") / "pred_vectors.h5"
    inference.infer_split(REPO / "prototxt/segnet_deploy.prototxt", weights[0], encoded / "val", out, "segnet",
                          log=lambda *_: None)
    with h5py.File(out, "r") as f:
        return f["vectors"][...]


@pytest.fixture(scope="session")
def caffe():
    """pycaffe in CPU mode, or a skip (a failure under DCME_REQUIRE=caffe)."""
    caffe = helpers.import_caffe()
    caffe.set_mode_cpu()
    return caffe


@pytest.fixture(scope="session")
def sample_instances(cityscapes_sample, tmp_path_factory):
    """(root, output folder, manifest) of the instance crops extracted from the real sample's train split at
    340x680 (crops.extract_instances, at least 50 pixels)."""
    helpers.import_caffe()
    from dcme_layers.net import crops

    out = tmp_path_factory.mktemp("instances")
    manifest = crops.extract_instances(cityscapes_sample, "train", out, size=(340, 680), min_pixels=50)
    return cityscapes_sample, out, manifest


@pytest.fixture(scope="session")
def smoke(caffe, tmp_path_factory):
    """A short SGD run of GoogLeNet with its generated smoke settings (the paper's solver) at batch 4 for 10
    iterations on separable crops: the losses, the weights, the deploy net and the seconds per iteration."""
    import models
    from models.googlenet import net

    tmp = tmp_path_factory.mktemp("smoke")
    crops, labels = helpers.separable_crops(16)
    helpers.write_lmdb(tmp / "train", crops, labels)
    (tmp / "train.prototxt").write_text(str(net.train(str(tmp / "train"), None, batch_size=4)))
    cfg = dict(net.SMOKE, max_iter=10, random_seed=7)
    (tmp / "solver.prototxt").write_text(models.solver(str(tmp / "train.prototxt"), str(tmp / "snap"), cfg))
    solver = caffe.get_solver(str(tmp / "solver.prototxt"))
    losses = []
    start = time.time()
    for _ in range(cfg["max_iter"]):
        solver.step(1)
        blobs = solver.net.blobs
        losses.append(float(0.3 * blobs["loss1/loss1"].data + 0.3 * blobs["loss2/loss2"].data
                            + blobs["loss3/loss3"].data))
    seconds = (time.time() - start) / cfg["max_iter"]
    weights = tmp / "smoke.caffemodel"
    solver.net.save(str(weights))
    deploy = tmp / "deploy.prototxt"
    deploy.write_text(str(net.deploy()))
    return dict(losses=losses, weights=weights, deploy=deploy, s_per_iter=seconds)


# The user may have set glog variables, and tests that call a tool in-process run cli.quiet(); tests that run
# `caffe train` read its INFO lines, so once the test modules are imported every GLOG_ variable goes.
def pytest_collection_finish(session):
    for name in [k for k in os.environ if k.startswith("GLOG_")]:
        del os.environ[name]
