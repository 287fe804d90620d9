"""Run a trained deploy net (SegNet or FCN-8s) over an encoded split and save its 2-D vector maps to HDF5 (Caffe).

The HDF5 file holds ``vectors`` (N, 2, H, W) float32 in LMDB order, ``frames`` (N,) names, ``done`` (N,) bool, and
attributes ``model``, ``deploy``, ``weights``, ``images_lmdb``, ``height``, ``width``. It is written as
``<out>.partial`` and renamed when every frame is done; a killed run resumes from the frames already done (same
deploy, weights and LMDB, else a clear error).
"""
import glob
import os
import re
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

import models

from dcme_layers.cityscapes import DataError
from dcme_layers.lmdb_io import read_datum_lmdb

# BGR mean that the train nets' Data layers subtract; the deploy nets take mean-subtracted input.
MEAN_BGR = np.array(models.MEAN_BGR, dtype=np.float32)


class InferenceError(DataError):
    """Bad blob file or mismatched inputs; the message names the file."""


def newest_snapshot(prefix):
    """The ``<prefix>_iter_N.caffemodel`` with the largest N, or None."""
    found = [(int(m.group(1)), p) for p in glob.glob(f"{prefix}_iter_*.caffemodel")
             if (m := re.search(r"_iter_(\d+)\.caffemodel$", p))]
    return max(found)[1] if found else None


def load_net(deploy, weights):
    import caffe

    for path in (deploy, weights):
        if not Path(path).is_file():
            raise InferenceError(f"{path}: no such file")
    caffe.set_mode_cpu()
    return caffe.Net(str(deploy), str(weights), caffe.TEST)


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
    path = Path(encoded_split) / "frames.txt"
    if not path.is_file():
        raise InferenceError(f"{path}: missing; run `make encode-data` first")
    return path.read_text().split()


def infer_split(deploy, weights, encoded_split, out, model=""):
    """Predict every frame of ``encoded_split`` (a folder with images/, frames.txt) into the HDF5 file ``out``."""
    out, encoded_split = Path(out), Path(encoded_split)
    images = encoded_split / "images"
    frames = read_frames(encoded_split)
    attrs = dict(model=model, deploy=str(deploy), weights=str(weights), images_lmdb=str(images))
    entries = read_datum_lmdb(images)
    first = next(entries, None)
    entries.close()  # lmdb allows one open environment per path and process
    if first is None:
        raise InferenceError(f"{images}: empty LMDB")
    h, w = first[1].shape[1:]
    if out.exists():
        _, made = check_blobs(out, frames, (h, w))
        other = {k: made.get(k) for k, v in attrs.items() if made.get(k, v) != v}
        if other:
            raise InferenceError(f"{out}: made with other inputs ({other}); delete it or choose another --out")
        return out
    partial = out.with_name(out.name + ".partial")
    net = load_net(deploy, weights)
    if partial.exists():
        with h5py.File(partial, "r") as f:
            same = all(f.attrs.get(k) == v for k, v in attrs.items()) and f["vectors"].shape == (len(frames), 2, h, w)
        if not same:
            raise InferenceError(f"{partial}: left by a run with other inputs; delete it or choose another --out")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(partial, "w") as f:
            f.create_dataset("vectors", (len(frames), 2, h, w), np.float32, chunks=(1, 2, h, w))
            f["frames"] = np.array(frames, dtype=h5py.string_dtype())
            f["done"] = np.zeros(len(frames), bool)
            f.attrs.update(attrs, height=h, width=w)
    with h5py.File(partial, "r+") as f:
        done = f["done"]
        todo = int(len(frames) - done[...].sum())
        bar = tqdm(total=todo, desc=f"infer {model or Path(deploy).stem}", unit="frame")
        for i, (key, image) in enumerate(read_datum_lmdb(images)):
            if i >= len(frames) or not key.endswith(frames[i]):
                raise InferenceError(f"{images}: key {key} does not match frames.txt line {i + 1}")
            if done[i]:
                continue
            f["vectors"][i] = predict(net, image)
            done[i] = True
            f.flush()
            bar.update()
        bar.close()
        if not done[...].all():
            raise InferenceError(f"{images}: fewer entries than {encoded_split / 'frames.txt'}")
    os.replace(partial, out)
    return out


def check_blobs(path, frames, size=None):
    """Validate a blob file against the frame list (and resolution); returns (vectors dataset shape, attrs)."""
    try:
        with h5py.File(path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else n for n in f["frames"][...]]
            shape, attrs = f["vectors"].shape, dict(f.attrs)
    except (OSError, KeyError) as e:
        raise InferenceError(f"{path}: not a blob file of tools/infer.py ({e})") from None
    if names != list(frames):
        raise InferenceError(f"{path}: its frame list differs from the encoded split's frames.txt")
    if size is not None and tuple(shape[2:]) != tuple(size):
        raise InferenceError(f"{path}: blobs are {shape[2]}x{shape[3]}, the encoded split is {size[0]}x{size[1]}")
    return shape, attrs


def read_blob(f, i, path):
    """Frame ``i`` of an open blob file, checked finite."""
    v = f["vectors"][i]
    if not np.isfinite(v).all():
        raise InferenceError(f"{path}: frame {i} ({f['frames'][i]!r}) has NaN/inf in its predicted vector map")
    return v
