"""Caffe Datum LMDBs of the encoded Cityscapes: images and DCME vector maps, keys aligned. Caffe-specific.

Per split, `encode_split` writes under `out/{split}/`:
  images/        LMDB of Datum (channels 3, height, width, data = CHW BGR uint8 bytes)
  vectors/       LMDB of Datum (channels 2, height, width, float_data = CHW float32: dx, dy)
  frames.txt     one frame name per line, in LMDB order
  manifest.json  resolution, anchor, counts, source root and files, versions
with identical keys `{index:08d}_{frame name}` in identical (sorted) order, so two Caffe `Data` layers (which
never shuffle) deliver matching pairs.

Atomic and resumable: everything is written into `out/{split}.partial/`, committed every few frames together
with a progress file; a killed run resumes there with the same configuration. Only a finished directory is
renamed to `out/{split}/`, so a directory of that name is always complete (old or new, never half-written).
caffe_pb2 is imported inside the functions; the pure modules never import Caffe.
"""
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import lmdb
import numpy as np

from dcme_layers import cityscapes
from dcme_layers.cityscapes import DataError, atomic_write

FORMAT = 1  # bump when the content of the LMDBs changes


def _pb2():
    from caffe.proto import caffe_pb2
    return caffe_pb2


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def image_datum(chw, label=None):
    """Serialized Datum of a (3, H, W) uint8 BGR image: channels, height, width and the raw CHW bytes, and
    `label` (an int, e.g. a class index) when given."""
    a = np.ascontiguousarray(chw)
    if a.ndim != 3 or a.dtype != np.uint8:
        raise ValueError(f"image must be (C, H, W) uint8, got {a.shape} {a.dtype}")
    c, h, w = a.shape
    extra = {} if label is None else {"label": int(label)}
    return _pb2().Datum(channels=c, height=h, width=w, data=a.tobytes(), **extra).SerializeToString()


def float_datum(chw):
    """Serialized Datum of a (C, H, W) float array in float_data (field 6, float32, CHW order).

    The header (channels, height, width) is serialized by caffe_pb2; float_data is appended as one packed field,
    which protobuf parsers (Caffe's C++ and caffe_pb2 alike) accept for a repeated float. It is 20x faster than
    filling the repeated field from Python and 20% smaller than the unpacked encoding caffe_pb2 would write.
    """
    a = np.asarray(chw)
    if a.ndim != 3:
        raise ValueError(f"float datum must be (C, H, W), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("float datum holds NaN or inf")
    c, h, w = a.shape
    head = _pb2().Datum(channels=c, height=h, width=w).SerializeToString()
    body = np.ascontiguousarray(a, "<f4").tobytes()
    return head + b"\x32" + _varint(len(body)) + body


def datum_to_array(value):
    """A serialized Datum as a numpy array (C, H, W): uint8 from `data`, else float32 from `float_data`."""
    d = _pb2().Datum()
    d.ParseFromString(value)
    shape = (d.channels, d.height, d.width)
    if d.data:
        return np.frombuffer(d.data, np.uint8).reshape(shape)
    return np.fromiter(d.float_data, np.float32, count=len(d.float_data)).reshape(shape)


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
                yield key.decode(), datum_to_array(value)
    finally:
        env.close()


def lmdb_keys(path):
    """All keys of an LMDB, in order."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]
    finally:
        env.close()


def frame_key(index, name):
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


# --- parallel per-frame jobs (also classify.extract_instances) ------------------------------------------------

def _init_worker():
    import cv2
    cv2.setNumThreads(1)  # one frame per process; OpenCV's own threads would only oversubscribe


def _encode_one(job):
    index, frame, size, anchor, expect_shape, delay = job
    image, vmap, n = cityscapes.encode_frame(frame, size, anchor, expect_shape)
    if delay:
        time.sleep(delay)
    return index, image_datum(image), float_datum(vmap), n


def jobs_results(job, jobs, workers, serial_single_thread=True):
    """`job(j)` for each of `jobs`, in order: in a pool of `workers` forked processes, each with OpenCV
    single-threaded; with `workers` <= 1 in this process, whose OpenCV is then made single-threaded too only if
    `serial_single_thread`."""
    if workers <= 1:
        if serial_single_thread:
            _init_worker()
        for j in jobs:
            yield job(j)
        return
    import multiprocessing as mp
    with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(job, jobs, chunksize=1)


# --- atomic, resumable writing ----------------------------------------------------------------------------

def _config(root, split, frames, size, anchor):
    return {"format": FORMAT, "split": split, "size": [int(size[0]), int(size[1])], "anchor": anchor,
            "root": str(Path(root).resolve()), "frames": [f.name for f in frames]}


def _config_id(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _describe(m):
    root = m.get("config", {}).get("root")
    return f"anchor {m.get('anchor')}, size {m.get('size')}, {m.get('frames')} frames of {root}"


def _open_env(path, frames, size):
    h, w = size
    per_frame = h * w * (3 + 2 * 4) + 4096
    map_size = max(64 << 20, 2 * per_frame * len(frames))
    return lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False)


def _count(env):
    return env.stat()["entries"]


def _prefix_ok(env, keys):
    with env.begin() as txn:
        got = [k.decode() for k in txn.cursor().iternext(keys=True, values=False)]
    return got[:len(keys)] == keys


def encode_split(root, split, out, size=cityscapes.SIZE, anchor="cm", workers=None, force=False,
                 commit_every=16, delay=0.0, progress=True, log=print):
    """Encode one split of a Cityscapes root into out/{split}/ (see the module docstring); return its manifest.

    An existing complete output with the same configuration is left as is (returned). One with another
    configuration raises DataError unless force=True, in which case it is replaced only once the new one is
    complete. A `{split}.partial` left by a killed run with the same configuration is resumed; bad input raises
    DataError naming the file and keeps what was committed. `delay` (seconds per frame) is for tests only.
    """
    out = Path(out)
    frames = cityscapes.list_frames(root, split)
    if not frames:
        raise DataError(f"{Path(root) / 'gtFine' / split}: no *_gtFine_instanceIds.png frames")
    if anchor not in ("cm", "bbox"):
        raise ValueError(f"unknown anchor {anchor!r}")
    size = (int(size[0]), int(size[1]))
    config = _config(root, split, frames, size, anchor)
    cid = _config_id(config)
    final, partial = out / split, out / f"{split}.partial"

    if final.exists():
        manifest_path = final / "manifest.json"
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("config_id") == cid:
            log(f"{final}: up to date ({len(frames)} frames), skipped")
            return old
        if not force:
            what = f"another configuration ({_describe(old)})" if old else "no valid manifest.json"
            raise DataError(f"{final}: exists with {what}; use --force to replace it or another --out")

    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / f".{split}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DataError(f"{out / split}: another encoder is writing it (lock {lock.name})") from None
    try:
        return _encode_locked(frames, config, cid, final, partial, size, anchor, workers, commit_every, delay,
                              progress, log)
    finally:
        lock.close()


def _encode_locked(frames, config, cid, final, partial, size, anchor, workers, commit_every, delay, progress,
                   log):
    from tqdm import tqdm

    _pb2()  # import pycaffe once here, before forking workers, rather than in every worker
    keys = [frame_key(i, f.name) for i, f in enumerate(frames)]
    cfg_path, prog_path = partial / "config.json", partial / "progress.tsv"
    if partial.exists():
        try:
            resumable = json.loads(cfg_path.read_text()).get("config_id") == cid
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            log(f"{partial}: left by a run with another configuration, removed")
            shutil.rmtree(partial)
    if not partial.exists():
        tmp = partial.with_name(partial.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps({"config_id": cid, "config": config}) + "\n")
        (tmp / "progress.tsv").write_text("")
        os.replace(tmp, partial)

    img_env = _open_env(partial / "images", frames, size)
    vec_env = _open_env(partial / "vectors", frames, size)
    try:
        # only newline-terminated lines are complete (a kill may cut the last one)
        rows = [l.split("\t") for l in prog_path.read_text().split("\n")[:-1]]
        rows = rows[:next((k for k, r in enumerate(rows) if len(r) != 2), len(rows))]
        done = min(_count(img_env), _count(vec_env), len(rows))
        rows = rows[:done]
        if [r[0] for r in rows] != keys[:done] or not (_prefix_ok(img_env, keys[:done]) and
                                                          _prefix_ok(vec_env, keys[:done])):
            log(f"{partial}: inconsistent, starting over")
            done, rows = 0, []
            for env in (img_env, vec_env):
                with env.begin(write=True) as txn:
                    txn.drop(txn.cursor().db, delete=False)
        atomic_write(prog_path, lambda tmp: tmp.write_text("".join("\t".join(r) + "\n" for r in rows)))
        if done:
            log(f"{partial}: resuming after {done} of {len(frames)} frames")

        workers = max(1, int(workers or os.cpu_count() or 1))
        # every frame must have the full-resolution size of the first one (1024x2048 in Cityscapes)
        input_shape = cityscapes.read_instance_ids(frames[0].instance_ids).shape
        jobs = [(i, frames[i], size, anchor, input_shape, delay) for i in range(done, len(frames))]
        bar = tqdm(total=len(frames), initial=done, desc=f"encode {config['split']}", unit="frame",
                   disable=not progress)
        pending = []

        def commit():
            with img_env.begin(write=True) as ti, vec_env.begin(write=True) as tv:
                for i, img, vec, n in pending:
                    ti.put(keys[i].encode(), img)
                    tv.put(keys[i].encode(), vec)
            with open(prog_path, "a") as f:
                f.write("".join(f"{keys[i]}\t{n}\n" for i, _, _, n in pending))
            rows.extend([keys[i], str(n)] for i, _, _, n in pending)
            pending.clear()

        try:
            for i, img, vec, n in jobs_results(_encode_one, jobs, workers):
                pending.append((i, img, vec, n))
                if len(pending) >= commit_every:
                    commit()
                bar.update(1)
        finally:
            if pending:  # keep the frames finished before an error or interrupt
                commit()
            bar.close()
    finally:
        img_env.close()
        vec_env.close()

    manifest = {
        "config_id": cid, "config": {k: v for k, v in config.items() if k != "frames"},
        "split": config["split"], "size": list(size), "input_size": list(input_shape), "anchor": anchor,
        "frames": len(frames), "instances": int(sum(int(r[1]) for r in rows)),
        "instances_per_frame": {r[0]: int(r[1]) for r in rows},
        "key_format": "{index:08d}_{frame name}",
        "images": {"lmdb": "images", "datum": "uint8 data, channels 3 (BGR), height, width"},
        "vectors": {"lmdb": "vectors", "datum": "float_data float32, channels 2 (dx, dy), height, width",
                    "encoding": f"dcme_layers.encoding.vector_map(anchor={anchor!r}) at the encoded resolution"},
        "source": {"root": config["root"],
                   "files": [[os.path.relpath(f.image, config["root"]), os.path.relpath(f.instance_ids, config["root"])]
                             for f in frames]},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(partial / "frames.txt", lambda tmp: tmp.write_text("".join(f.name + "\n" for f in frames)))
    atomic_write(partial / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
    old = final.with_name(final.name + f".old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    for p in (final / "config.json", final / "progress.tsv"):
        p.unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    log(f"{final}: {len(frames)} frames, {manifest['instances']} instances")
    return manifest


def encode_dataset(root, out, splits=None, **kw):
    """encode_split for each split (default: those of `root` with leftImg8bit and gtFine); {split: manifest}."""
    splits = list(splits or cityscapes.available_splits(root))
    if not splits:
        raise DataError(f"{root}: no split with both leftImg8bit/ and gtFine/ (is it a Cityscapes root?)")
    return {s: encode_split(root, s, out, **kw) for s in splits}
