"""Run a trained deploy net (SegNet or FCN-8s) over an encoded split and save its 2-D vector maps to HDF5 (Caffe).

The HDF5 file holds ``vectors`` (N, 2, H, W) float32 in LMDB order, ``frames`` (N,) names, and attributes
``model``, ``deploy``, ``weights``, ``images_lmdb``, ``height``, ``width``; ``<out>.job.json`` beside it records
what it was made from (dcme_layers.util.resumable). A killed run resumes from the frames already done.

Vector maps predicted elsewhere (``tools/evaluate.py --predictions``, ``use_predictions``) come as such a file or
as the file of Caffe's own HDF5Output layer (``caffe test`` on a deploy net that reads the images LMDB, as
tools/gpu_check.py's demo stage writes it): datasets ``data`` (N, 2, H, W) and ``label``, the frame names in
``<file>.frames.txt`` beside it (the LMDB order the net read).
"""
import glob
import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from dcme_layers.core import paper
from dcme_layers.data.lmdb_io import check_encoded, read_datum_lmdb
from dcme_layers.net import netfiles
from dcme_layers.util import resumable
from dcme_layers.util.errors import InferenceError, PartialDamaged
from dcme_layers.util.records import digest
from dcme_layers.util.store import Store

__all__ = ["BLOBS", "FRAMES_SUFFIX", "newest_snapshot", "load_net", "predict", "read_frames",
           "infer_split", "read_blob", "use_predictions"]

#: The payload file of a blob file's partial folder.
BLOBS = "vectors.h5"


def newest_snapshot(prefix):
    """The ``<prefix>_iter_N.caffemodel`` with the largest N, or None."""
    found = [(int(m.group(1)), p) for p in glob.glob(f"{prefix}_iter_*.caffemodel")
             if (m := re.search(r"_iter_(\d+)\.caffemodel$", p))]
    return max(found)[1] if found else None


def load_net(deploy, weights):
    """The deploy net with `weights`, both checked first (netfiles: one line naming the file, never Caffe's
    abort, never a net with layers silently left at their fillers)."""
    import caffe

    caffe.set_mode_cpu()
    return netfiles.load_net(deploy, weights)


def predict(net, image_chw):
    """Forward one BGR uint8 (3, H, W) image; returns the net's single output blob, (2, H, W) float32."""
    data = net.blobs[net.inputs[0]]
    if data.data.shape[1:] != image_chw.shape:
        data.reshape(1, *image_chw.shape)
        net.reshape()
    data.data[0] = image_chw.astype(np.float32) - np.float32(paper.MEAN_BGR)[:, None, None]  # as in training
    out = net.forward()[net.outputs[0]][0]
    if out.shape != (2,) + image_chw.shape[1:]:
        raise InferenceError(f"net output {net.outputs[0]} has shape {out.shape}, expected (2, H, W) of the input")
    return out.copy()


def read_frames(encoded_split):
    """The frame names of a finished encoded split, in LMDB order, after checking that its LMDBs are intact
    (lmdb_io.check_encoded)."""
    path = Path(encoded_split) / "frames.txt"
    if not path.is_file():
        raise InferenceError(f"{path}: missing; run `make encode-data` first")
    check_encoded(encoded_split)
    return path.read_text().split()


def infer_split(deploy, weights, encoded_split, out, model="", force=False, log=print):
    """Predict every frame of ``encoded_split`` (a folder with images/, frames.txt) into the HDF5 file ``out``.

    A resumable.Job: ``out`` is built in ``<out>.partial/vectors.h5``; a frame is marked done (with a digest of
    its vectors) only after the HDF5 file was flushed and fsynced, and a resumed run re-checks every done frame
    against its digest (a frame lost to a crash or a full disk is predicted again). An ``out`` of the same deploy,
    weights and images is returned as is; other weights or deploy: DataError unless ``force``.
    """
    out, encoded_split = Path(out), Path(encoded_split)
    frames = read_frames(encoded_split)
    h, w = json.loads((encoded_split / "manifest.json").read_text())["size"]
    images = encoded_split / "images"
    settings = dict(model=model, deploy=str(Path(deploy).resolve()), weights=str(Path(weights).resolve()),
                    images_lmdb=str(images.resolve()), frames=frames, height=h, width=w)
    inputs = [deploy, weights, images / "data.mdb"]
    with resumable.Job(out, settings, inputs, force, payload=BLOBS, what="blob file", log=log) as job:
        if not job.up_to_date():
            net = load_net(deploy, weights)
            job.run(frames, lambda todo: _predictions(net, images, frames, todo), _BlobFile(images, settings, log),
                    desc=f"infer {model or Path(deploy).stem}")
    return out


def _predictions(net, images, frames, todo):
    """(frame, (2, H, W) vectors) of each frame in ``todo``, in the order of the images LMDB, whose keys are
    checked against ``frames`` (frames.txt)."""
    todo = set(todo)
    for i, (key, image) in enumerate(read_datum_lmdb(images)):
        if i >= len(frames) or not key.endswith(frames[i]):
            raise InferenceError(f"{images}: key {key} does not match frames.txt line {i + 1}")
        if frames[i] in todo:
            yield frames[i], predict(net, image)


class _BlobFile(Store):
    """The partial blob file: each frame's vectors written, flushed and fsynced, then marked done with their
    digest; a resumed run keeps only the done frames whose vectors still have it."""
    target = BLOBS

    def __init__(self, images, settings, log):
        self.images, self.settings, self.log = images, settings, log
        self.frames = settings["frames"]
        self.index = {n: i for i, n in enumerate(self.frames)}
        self.path, self.file = None, None

    def open(self, partial, done):
        self.path = partial / self.target
        try:
            self.file = _open_partial(self.path, self.settings)
        except OSError as e:
            raise PartialDamaged(f"{self.path.name} unreadable ({str(e).splitlines()[0]}), it is redone") from None
        vectors = self.file["vectors"]
        intact = {k: v for k, v in done.items() if k in self.index and digest(vectors[self.index[k]]) == v}
        if len(intact) < len(done):
            self.log(f"{self.path}: {len(done) - len(intact)} frames marked done are not on disk; predicting them "
                     f"again")
        return intact

    def nbytes(self, batch):
        return sum(vectors.nbytes + (64 << 10) for _, vectors in batch)  # + room for HDF5's own metadata

    def write(self, batch):
        for name, vectors in batch:
            self.file["vectors"][self.index[name]] = vectors
        self.file.flush()
        os.fsync(self.file.id.get_vfd_handle())
        return [(name, digest(vectors)) for name, vectors in batch]

    def complete(self, done):
        if len(done) < len(self.frames):
            raise InferenceError(f"{self.images}: fewer entries than {self.images.parent / 'frames.txt'}")

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def _open_partial(path, settings):
    """The partial HDF5 file, created on first use: vectors (N, 2, H, W) float32, frames (N,), the settings as
    attributes. OSError when it is unreadable or of another shape."""
    frames, h, w = settings["frames"], settings["height"], settings["width"]
    if not path.exists():
        with h5py.File(path, "w") as f:
            f.create_dataset("vectors", (len(frames), 2, h, w), np.float32, chunks=(1, 2, h, w), fillvalue=0)
            _write_names(f, frames, settings)
    f = h5py.File(path, "r+")
    shape = f["vectors"].shape
    if shape != (len(frames), 2, h, w):
        f.close()
        raise OSError(f"vectors of shape {shape}")
    return f


def _write_names(f, frames, attrs):
    """A blob file's frame names and attributes (the job's settings but the frames)."""
    f["frames"] = np.array(frames, dtype=h5py.string_dtype())
    f.attrs.update({k: v for k, v in attrs.items() if k != "frames"})


def read_blob(f, i, path):
    """Frame ``i`` of an open blob file, checked finite."""
    v = f["vectors"][i]
    if not np.isfinite(v).all():
        raise InferenceError(f"{path}: frame {i} ({f['frames'][i]!r}) has NaN/inf in its predicted vector map")
    return v


#: Beside a Caffe HDF5Output file: its frame names, one a line, in the order of the LMDB the net read.
FRAMES_SUFFIX = ".frames.txt"


def use_predictions(path, encoded_split, out, model="", force=False, log=print):
    """Vector maps predicted elsewhere, checked against ``encoded_split`` as infer_split's own output is (frame
    names and order, shape (N, 2, H, W) at its size, finite values): InferenceError naming the file otherwise.

    tools/infer.py's file is used in place and returned; a Caffe HDF5Output file (datasets data, label; names in
    ``<path>.frames.txt``) becomes infer's format in ``out``, a resumable.Job like infer_split's, and ``out`` is
    returned."""
    path, encoded_split = Path(path), Path(encoded_split)
    frames = read_frames(encoded_split)
    size = tuple(json.loads((encoded_split / "manifest.json").read_text())["size"])
    listing = _checked_listing(path, frames, encoded_split, size)
    if listing is None:
        return path
    settings = dict(model=model, predictions=str(path.resolve()), images_lmdb=str((encoded_split / "images").resolve()),
                    frames=frames, height=size[0], width=size[1])
    with resumable.Job(out, settings, [path, listing], force, payload=BLOBS, what="blob file", log=log) as job:
        if not job.up_to_date():
            job.run(["vectors"], lambda todo: [(k, _caffe_output(path)) for k in todo], _ConvertedBlobs(path, settings))
    return Path(out)


def _checked_listing(path, frames, encoded_split, size):
    """Check the prediction file ``path`` against the encoded split (_check_predictions); None when it is
    tools/infer.py's own file, the file of its frame names when it is Caffe's HDF5Output."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InferenceError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]}); pass tools/infer.py's "
                             f"output or Caffe's HDF5Output file") from None
    with f:
        if "vectors" in f and "frames" in f:
            _check_predictions(path, f["vectors"], [n.decode() if isinstance(n, bytes) else str(n)
                                                    for n in f["frames"][...]], frames, encoded_split, size)
            return None
        if "data" not in f:
            raise InferenceError(f"{path}: holds neither vectors and frames (tools/infer.py) nor data (Caffe's "
                                 f"HDF5Output); pass one of those files")
        listing = path.with_name(path.name + FRAMES_SUFFIX)
        if not listing.is_file():
            raise InferenceError(f"{path}: a Caffe HDF5Output file needs its frame names in {listing} (one a line, "
                                 f"in the order of the LMDB the net read; tools/gpu_check.py writes it)")
        _check_predictions(path, f["data"], listing.read_text().split(), frames, encoded_split, size)
    return listing


def _caffe_output(path):
    """The vector maps of a Caffe HDF5Output file, (N, 2, H, W) float32."""
    with h5py.File(path, "r") as src:
        return src["data"][...].astype(np.float32)


class _ConvertedBlobs(Store):
    """infer's blob file made from a Caffe HDF5Output file in one step (a resumed run makes it again)."""
    target = BLOBS

    def __init__(self, source, settings):
        self.source, self.settings, self.path = source, settings, None

    def open(self, partial, done):
        self.path = partial / self.target
        return {}

    def nbytes(self, batch):
        return self.source.stat().st_size + (1 << 20)

    def write(self, batch):
        (key, vectors), = batch
        with h5py.File(self.path, "w") as dst:
            dst.create_dataset("vectors", data=vectors, chunks=(1, 2, self.settings["height"], self.settings["width"]))
            _write_names(dst, self.settings["frames"], self.settings)
        return [(key, "")]


def _check_predictions(path, vectors, names, frames, encoded_split, size):
    """InferenceError naming ``path`` unless its vector maps ``vectors`` (an HDF5 dataset) and frame ``names``
    are those of the encoded split's ``frames`` at ``size``, and finite."""
    listing = encoded_split / "frames.txt"
    if len(names) != len(frames):
        raise InferenceError(f"{path}: {len(names)} frames, {listing} lists {len(frames)}; score it with the "
                             f"--encoded split it was predicted from")
    for i, (got, want) in enumerate(zip(names, frames)):
        if got != want:
            raise InferenceError(f"{path}: frame {i} is {got}, line {i + 1} of {listing} is {want}; score it with "
                                 f"the --encoded split it was predicted from, in its order")
    if vectors.shape != (len(frames), 2) + size:
        raise InferenceError(f"{path}: vector maps of shape {vectors.shape}, {encoded_split} needs "
                             f"{(len(frames), 2) + size} (frames, dx/dy, its height and width)")
    for i in range(len(frames)):
        if not np.isfinite(vectors[i]).all():
            raise InferenceError(f"{path}: frame {i} ({frames[i]}) has NaN/inf in its predicted vector map")
