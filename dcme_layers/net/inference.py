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
from tqdm import tqdm

from dcme_layers.core import paper
from dcme_layers.data.lmdb_io import check_encoded, read_datum_lmdb
from dcme_layers.net import netfiles
from dcme_layers.util import resumable
from dcme_layers.util.errors import InferenceError

# BGR mean that the train nets' Data layers subtract; the deploy nets take mean-subtracted input.
MEAN_BGR = np.array(paper.MEAN_BGR, dtype=np.float32)


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
    data.data[0] = image_chw.astype(np.float32) - MEAN_BGR[:, None, None]
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
    with resumable.Job(out, settings, inputs, force, payload="vectors.h5", what="blob file", log=log) as job:
        if job.up_to_date():
            return out
        net = load_net(deploy, weights)
        done = job.start()
        path = job.partial / "vectors.h5"
        try:
            f = _open_partial(path, frames, h, w, settings)
        except OSError as e:
            done = job.restart(f"{path.name} unreadable ({str(e).splitlines()[0]}), it is redone")
            f = _open_partial(path, frames, h, w, settings)
        with f:
            index = {n: i for i, n in enumerate(frames)}
            intact = {k: v for k, v in done.items() if k in index and resumable.digest(f["vectors"][index[k]]) == v}
            if len(intact) < len(done):
                log(f"{path}: {len(done) - len(intact)} frames marked done are not on disk; predicting them again")
                job.keep(intact)
            bar = tqdm(total=len(frames), initial=len(intact), desc=f"infer {model or Path(deploy).stem}",
                       unit="frame")
            fd = f.id.get_vfd_handle()
            for i, (key, image) in enumerate(read_datum_lmdb(images)):
                if i >= len(frames) or not key.endswith(frames[i]):
                    raise InferenceError(f"{images}: key {key} does not match frames.txt line {i + 1}")
                if frames[i] in intact:
                    continue
                vectors = predict(net, image)
                job.ensure_space(vectors.nbytes + (64 << 10))
                with job.writing(path):
                    f["vectors"][i] = vectors
                    f.flush()
                    os.fsync(fd)
                job.done((frames[i], resumable.digest(vectors)))
                intact[frames[i]] = True
                bar.update()
            bar.close()
        if len(intact) < len(frames):
            raise InferenceError(f"{images}: fewer entries than {encoded_split / 'frames.txt'}")
        job.finish()
    return out


def _open_partial(path, frames, h, w, attrs):
    """The partial HDF5 file, created on first use (vectors (N, 2, H, W) float32, frames (N,), attrs)."""
    if not path.exists():
        with h5py.File(path, "w") as f:
            f.create_dataset("vectors", (len(frames), 2, h, w), np.float32, chunks=(1, 2, h, w), fillvalue=0)
            f["frames"] = np.array(frames, dtype=h5py.string_dtype())
            f.attrs.update({k: v for k, v in attrs.items() if k != "frames"})
    f = h5py.File(path, "r+")
    if f["vectors"].shape != (len(frames), 2, h, w):
        f.close()
        raise OSError(f"vectors of shape {f['vectors'].shape}")
    return f


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
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InferenceError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]}); pass tools/infer.py's "
                             f"output or Caffe's HDF5Output file") from None
    with f:
        if "vectors" in f and "frames" in f:
            _check_predictions(path, f["vectors"], [n.decode() if isinstance(n, bytes) else str(n)
                                                    for n in f["frames"][...]], frames, encoded_split, size)
            return path
        if "data" not in f:
            raise InferenceError(f"{path}: holds neither vectors and frames (tools/infer.py) nor data (Caffe's "
                                 f"HDF5Output); pass one of those files")
        listing = path.with_name(path.name + FRAMES_SUFFIX)
        if not listing.is_file():
            raise InferenceError(f"{path}: a Caffe HDF5Output file needs its frame names in {listing} (one a line, "
                                 f"in the order of the LMDB the net read; tools/gpu_check.py writes it)")
        names = listing.read_text().split()
        _check_predictions(path, f["data"], names, frames, encoded_split, size)
    settings = dict(model=model, predictions=str(path.resolve()), images_lmdb=str((encoded_split / "images").resolve()),
                    frames=frames, height=size[0], width=size[1])
    with resumable.Job(out, settings, [path, listing], force, payload="vectors.h5", what="blob file",
                       log=log) as job:
        if job.up_to_date():
            return Path(out)
        job.start()
        partial = job.partial / "vectors.h5"
        job.ensure_space(path.stat().st_size + (1 << 20))
        with job.writing(partial), h5py.File(path, "r") as src, h5py.File(partial, "w") as dst:
            dst.create_dataset("vectors", data=src["data"][...].astype(np.float32), chunks=(1, 2) + size)
            dst["frames"] = np.array(frames, dtype=h5py.string_dtype())
            dst.attrs.update({k: v for k, v in settings.items() if k != "frames"})
        job.finish()
    return Path(out)


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
