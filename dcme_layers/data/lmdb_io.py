"""Caffe Datum LMDBs of the encoded Cityscapes: images and DCME vector maps, keys aligned. Caffe-specific.

Per split, `encode_split` writes under `out/{split}/`:
  images/        LMDB of Datum (channels 3, height, width, data = CHW BGR uint8 bytes; dcme_layers.data.datum)
  vectors/       LMDB of Datum (channels 2, height, width, float_data = CHW float32: dx, dy)
  frames.txt     one frame name per line, in LMDB order
  manifest.json  resolution, anchor, order, counts, source root and files, versions
  job.json       settings and input fingerprint (dcme_layers.util.records)
with identical keys `{index:08d}_{frame name}` in identical order, so two Caffe `Data` layers deliver matching
pairs. Caffe's Data layer never shuffles, so the train split is written in a seeded random permutation of its
frames (`frame_order`): a batch then mixes cities, like SegNet-Tutorial's `shuffle: true` and FCN's random draws,
and the order is reproducible (one fixed permutation for every epoch, as an LMDB allows). Other splits stay sorted.

Atomic and resumable through dcme_layers.util.resumable: written into `out/{split}.partial/`, committed every few
frames (LMDB commits are synced, then the frames are marked done); a killed run resumes there, and only a finished
directory is renamed to `out/{split}/`.
"""
import json
import os
import time
from pathlib import Path

import lmdb
import numpy as np

from dcme_layers.core import paper
from dcme_layers.data import cityscapes, datum
from dcme_layers.util import records, resumable
from dcme_layers.util.errors import DataError, PartialDamaged
from dcme_layers.util.files import atomic_write
from dcme_layers.util.pool import jobs_results
from dcme_layers.util.store import Store

__all__ = ["FORMAT", "TRAIN_SEED", "read_datum_lmdb", "DatumReader", "lmdb_keys", "frame_key", "frame_order",
           "check_encoded", "encode_split", "encode_dataset"]

FORMAT = 1  # bump when the content of the LMDBs changes
#: Seed of the train split's LMDB order (FCN's voc_layers.py uses the same).
TRAIN_SEED = 1337


def read_datum_lmdb(path):
    """Iterate (key, array) over a Datum LMDB in key order (the order Caffe's Data layer reads it).
    DataError at once if `path` is not an LMDB directory."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise DataError(f"{path}: not an LMDB directory (no data.mdb)")
    return _iter_lmdb(path)


def _iter_lmdb(path):
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                yield key.decode(), datum.datum_to_array(value)
    finally:
        env.close()


class DatumReader:
    """Random access to a Datum LMDB by key: ``reader[key]`` is the array (datum_to_array). A context manager
    (lmdb allows one open environment per path and process)."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise DataError(f"{self.path}: not an LMDB directory (no data.mdb)")
        self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False)

    def __getitem__(self, key):
        with self.env.begin() as txn:
            value = txn.get(key.encode())
        if value is None:
            raise DataError(f"{self.path}: no entry {key}; re-run make encode-data")
        return datum.datum_to_array(value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.env.close()


def lmdb_keys(path):
    """All keys of an LMDB, in order."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return _keys(env)
    finally:
        env.close()


def frame_key(index, name):
    """The LMDB key of the frame ``name`` at position ``index``."""
    return f"{index:08d}_{name}"


def _versions():
    import importlib.metadata as md
    out = {}
    for p in ("numpy", "opencv-python-headless", "cityscapesScripts", "lmdb", "protobuf"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def frame_order(n, split, seed=TRAIN_SEED):
    """LMDB position -> index into the sorted frames: a permutation seeded with `seed` for the train split (Caffe's
    Data layer reads an LMDB in key order and never shuffles), the sorted order for every other split or when
    `seed` is None."""
    if split != "train" or seed is None:
        return list(range(n))
    return [int(i) for i in np.random.RandomState(seed).permutation(n)]


def _open_env(path, n, size):
    h, w = size
    per_frame = h * w * (3 + 2 * 4) + 4096
    map_size = max(64 << 20, 2 * per_frame * n)
    return lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False)


def _keys(env):
    """All keys of an open LMDB, in order."""
    with env.begin() as txn:
        return [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]


def check_encoded(split_dir):
    """Raise DataError naming the file unless `split_dir` is a finished encoded split whose LMDBs have the sizes
    and the entry count recorded when it was written (e.g. not truncated since); returns its manifest."""
    split_dir = Path(split_dir)
    records.verify(split_dir, "encoded split (make encode-data)")
    manifest = json.loads((split_dir / "manifest.json").read_text())
    for name in ("images", "vectors"):
        env = lmdb.open(str(split_dir / name), readonly=True, lock=False)
        try:
            n = env.stat()["entries"]
        finally:
            env.close()
        if n != manifest["frames"]:
            raise DataError(f"{split_dir / name}: {n} entries, manifest.json says {manifest['frames']}; re-run "
                            f"make encode-data with --force")
    return manifest


def encode_split(root, split, out, size=paper.SIZE, anchor="cm", workers=None, force=False,
                 commit_every=16, seed=TRAIN_SEED, progress=True, log=print):
    """Encode one split of a Cityscapes root into out/{split}/ (see the module docstring); return its manifest.

    A resumable.Job: an output of the same configuration and unchanged input files is left as is (returned);
    one whose inputs changed is redone; one of another configuration raises DataError unless force=True (which
    always redoes). A `{split}.partial` of a killed run is resumed. Bad input raises DataError naming the file and
    keeps what was committed. `seed`: the train split's LMDB order (frame_order).
    """
    if anchor not in ("cm", "bbox"):
        raise DataError(f"unknown anchor {anchor!r}")
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise DataError(f"size {size[0]}x{size[1]}: height and width must be positive")
    frames = cityscapes.list_frames(root, split)
    if not frames:
        raise DataError(f"{Path(root) / 'gtFine' / split}: no *_gtFine_instanceIds.png frames")
    order = frame_order(len(frames), split, seed)
    settings = {"format": FORMAT, "split": split, "size": list(size), "anchor": anchor,
                "root": str(Path(root).resolve()), "frames": [f.name for f in frames],
                "seed": seed if order != sorted(order) else None}
    frames = [frames[i] for i in order]
    inputs = {frame_key(i, f.name): [f.image, f.instance_ids, f.label_ids] for i, f in enumerate(frames)}
    with resumable.Job(Path(out) / split, settings, inputs, force, what="encoded split", log=log) as job:
        if job.up_to_date():
            log(f"{job.final}: up to date ({len(frames)} frames), skipped")
        else:
            _encode(job, frames, workers, commit_every, progress)
        manifest = json.loads((job.final / "manifest.json").read_text())
    return manifest


def _encode(job, frames, workers, commit_every, progress):
    """Write the encoded split of ``job`` (its settings say size and anchor), resuming its partial."""
    datum.caffe_pb2()  # import pycaffe once here, before forking workers, rather than in every worker
    keys = [frame_key(i, f.name) for i, f in enumerate(frames)]
    size, anchor = tuple(job.record["settings"]["size"]), job.record["settings"]["anchor"]
    # every frame must have the full-resolution size of the first one (1024x2048 in Cityscapes)
    input_shape = cityscapes.read_instance_ids(frames[0].instance_ids).shape
    workers = max(1, int(workers or os.cpu_count() or 1))
    by_key = dict(zip(keys, frames))

    def produce(todo):
        return jobs_results(_encode_datums, [(k, by_key[k], size, anchor, input_shape) for k in todo], workers)

    store = _EncodedSplit(frames, keys, job.record["settings"], input_shape)
    done = job.run(keys, produce, store, batch=commit_every, desc=f"encode {frames[0].split}" if progress else None)
    job.log(f"{job.final}: {len(frames)} frames, {sum(int(v) for v in done.values())} instances")


def _encode_datums(args):
    """(key, (image Datum, vector Datum, instance count)) of one frame: ``args`` = (key, frame, size, anchor,
    input shape); runs in a pool worker."""
    key, frame, size, anchor, input_shape = args
    image, vmap, n = cityscapes.encode_frame(frame, size, anchor, input_shape)
    return key, (datum.image_datum(image), datum.float_datum(vmap), n)


class _EncodedSplit(Store):
    """The images and vectors LMDBs of a partial encoded split, one transaction each per batch of frames."""
    target = "images"

    def __init__(self, frames, keys, settings, input_shape):
        self.frames, self.keys, self.settings, self.input_shape = frames, keys, settings, input_shape
        self.partial, self.envs = None, []

    def open(self, partial, done):
        self.partial = partial
        self.envs = [_open_env(partial / name, len(self.keys), self.settings["size"]) for name in ("images", "vectors")]
        # in LMDB order only a prefix counts as done; entries past it (a kill before their done lines) are rewritten
        n = next((i for i, k in enumerate(self.keys) if k not in done), len(self.keys))
        if any(_keys(env)[:n] != self.keys[:n] for env in self.envs):
            raise PartialDamaged("done.txt and the LMDBs disagree")
        return {k: done[k] for k in self.keys[:n]}

    def nbytes(self, batch):
        return sum(len(image) + len(vectors) for _, (image, vectors, _) in batch)

    def write(self, batch):
        images, vectors = self.envs
        with images.begin(write=True) as ti, vectors.begin(write=True) as tv:
            for key, (image, vmap, _) in batch:
                ti.put(key.encode(), image)
                tv.put(key.encode(), vmap)
        return [(key, str(n)) for key, (_, _, n) in batch]

    def complete(self, done):
        manifest = _manifest(self.frames, self.settings, self.input_shape, done)
        atomic_write(self.partial / "frames.txt", lambda t: t.write_text("".join(f.name + "\n" for f in self.frames)))
        atomic_write(self.partial / "manifest.json", lambda t: t.write_text(json.dumps(manifest, indent=1) + "\n"))

    def close(self):
        for env in self.envs:
            env.close()
        self.envs = []


def _manifest(frames, settings, input_shape, done):
    """manifest.json of an encoded split (see the module docstring); ``done``: {key: instance count}."""
    root, anchor, seed = settings["root"], settings["anchor"], settings["seed"]
    return {
        "split": frames[0].split, "size": settings["size"], "input_size": list(input_shape), "anchor": anchor,
        "frames": len(frames), "instances": int(sum(int(v) for v in done.values())),
        "instances_per_frame": {k: int(v) for k, v in done.items()},
        "key_format": "{index:08d}_{frame name}",
        "order": f"seeded permutation (numpy RandomState({seed})) of the sorted frames"
                 if seed is not None else "sorted frame names",
        "images": {"lmdb": "images", "datum": "uint8 data, channels 3 (BGR), height, width"},
        "vectors": {"lmdb": "vectors", "datum": "float_data float32, channels 2 (dx, dy), height, width",
                    "encoding": f"dcme_layers.core.encoding.vector_map(anchor={anchor!r}) at the encoded resolution"},
        "source": {"root": root, "files": [[os.path.relpath(f.image, root), os.path.relpath(f.instance_ids, root)]
                                           for f in frames]},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def encode_dataset(root, out, splits=None, **kw):
    """encode_split for each split (default: those of `root` with leftImg8bit and gtFine); {split: manifest}."""
    splits = list(splits or cityscapes.available_splits(root))
    if not splits:
        raise DataError(f"{root}: no split with both leftImg8bit/ and gtFine/ (is it a Cityscapes root?)")
    return {s: encode_split(root, s, out, **kw) for s in splits}
