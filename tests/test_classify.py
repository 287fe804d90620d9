"""dcme_layers.net.classify: the deploy-net Classifier of the decoded instances, checked against its own GoogLeNet
and against the train net reading the extracted crops."""
import numpy as np
import pytest

from helpers import frame_and_id, read_lmdb, write_lmdb
from dcme_layers.data import cityscapes
from dcme_layers.net import classify, crops
from dcme_layers.util import errors

pytestmark = pytest.mark.slow


def test_classifier(smoke, sample_instances):
    clf = classify.Classifier(smoke["deploy"], smoke["weights"], batch_size=4)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)
    labels = np.zeros((60, 100), np.int32)
    labels[5:20, 5:30], labels[30:55, 40:90], labels[0:3, 95:100] = 1, 2, 3
    labels[40:50, 0:10] = 5  # id 4 absent
    ids, conf = clf.classify(image, labels)
    assert ids.shape == conf.shape == (5,) and conf.dtype == np.float32
    assert set(ids.tolist()) <= set(cityscapes.INSTANCE_LABEL_IDS)
    probs = clf.probabilities(image, labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert conf[3] == 0 and np.array_equal(conf[[0, 1, 2, 4]], probs[[0, 1, 2, 4]].max(axis=1))
    # the same crops in one batch of 5 through a net of its own (the classifier ran batches of 4 and 1)
    import caffe
    net = caffe.Net(str(smoke["deploy"]), str(smoke["weights"]), caffe.TEST)
    batch = crops.instance_crops(image, labels, clf.crop, clf.margin)
    net.blobs["data"].reshape(*batch.shape)
    net.blobs["data"].data[...] = batch
    np.testing.assert_allclose(probs, net.forward()["prob"].reshape(5, -1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ids, np.array(cityscapes.INSTANCE_LABEL_IDS)[probs.argmax(axis=1)])
    ids, conf = clf.classify(image, np.zeros((60, 100), np.int32))
    assert ids.shape == conf.shape == (0,)
    with pytest.raises(errors.DataError, match="nope.caffemodel: no such file"):
        classify.Classifier(smoke["deploy"], smoke["deploy"].parent / "nope.caffemodel")
    with pytest.raises(errors.DataError, match="deploy.prototxt: not a caffemodel"):
        classify.Classifier(smoke["deploy"], smoke["deploy"])


def test_classifier_rejects_weights_without_the_8_way_classifier(caffe, smoke, tmp_path):
    """Caffe would silently skip a classifier of another size (e.g. ImageNet's) and classify at random."""
    from models.googlenet import net

    (tmp_path / "five.prototxt").write_text(str(net.deploy(num_classes=5)))
    caffe.Net(str(tmp_path / "five.prototxt"), caffe.TEST).save(str(tmp_path / "five.caffemodel"))
    with pytest.raises(errors.DataError, match=r"five.caffemodel: layer 'loss3/classifier_cs' has blobs "
                                                   r"\[\(5, 1024\), \(5,\)\], .* needs \[\(8, 1024\), \(8,\)\]"):
        classify.Classifier(smoke["deploy"], tmp_path / "five.caffemodel")


def test_classifier_sees_what_training_saw(caffe, smoke, sample_instances, tmp_path):
    """Classifier on a frame's decoded-style labels gives the same probabilities as the train net (TEST phase)
    reading the extracted LMDB crops of the same instances: crops, channel order and mean agree end to end."""
    from models.googlenet import net

    root, out, _ = sample_instances
    entries = read_lmdb(out / "train")
    name = frame_and_id(entries[0][0])[0]
    mine = [(k, frame_and_id(k)[1]) for k, _, _ in entries if frame_and_id(k)[0] == name]
    frame = next(f for f in cityscapes.list_frames(root, "train") if f.name == name)
    image, ids = cityscapes.load_frame(frame, (340, 680))
    labels = np.zeros(ids.shape, np.int32)
    for k, (_, iid) in enumerate(mine):
        labels[ids == iid] = k + 1
    write_lmdb(tmp_path / "one", [e[2].transpose(1, 2, 0) for e in entries if e[0] in dict(mine)],
               [e[1] for e in entries if e[0] in dict(mine)])
    (tmp_path / "t.prototxt").write_text(str(net.train(str(tmp_path / "one"), str(tmp_path / "one"),
                                                           test_batch_size=len(mine))))
    tnet = caffe.Net(str(tmp_path / "t.prototxt"), caffe.TEST, weights=str(smoke["weights"]))
    tnet.forward()
    scores = tnet.blobs["loss3/classifier_cs"].data.astype(np.float64)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    # LMDB order (keys sorted) = the order of `mine` = labels 1..K
    got = classify.Classifier(smoke["deploy"], smoke["weights"]).probabilities(image, labels)
    np.testing.assert_allclose(got, expected, atol=1e-4)
