"""The zarr v3 cache of a pre-generated synthetic set: layout, creation, shard writing, checksums.

Layout of ``CACHE.zarr`` (a zarr v3 group, N samples, shard size S, image side H)::

    images      (N, H, H) uint8 (or float16)  chunks (C, H, H), shards (S, H, H), zstd (or lz4, none)
    masks       (N, H, H) uint8 {0, 1}         chunks (C, H, H), shards (S, H, H), as the images
                                               (zstd: frames of run-length blocks, shards.ShardFiles)
    labels      (N,) uint8                     chunks (S,)   one chunk per shard
    seeds       (N,) uint64                    chunks (S,)
    source_index(N,) int32                     chunks (S,)
    tasks, source_ids, records (N,) str        chunks (S,)   records: the synth record as JSON
    sources.json   the source images (ids, paths) the samples were made from
    _done/000007.json  shard 7 is finished: its sample range and the crc32c of each of its files

Group attribute ``fmclip`` holds the settings (engine version, resolved config, seed, sizes,
dataset identity). C (default 64, the loader's block) samples per chunk: zarr's cost per
chunk is about 0.5 ms, so one-sample chunks cap reading and writing near 1,000 samples/s.
A shard is the unit of work: one worker makes all its samples and writes every array's part
of it in whole-shard writes (partial shard writes from parallel writers lose data in zarr),
and the driver commits its ``_done`` marker only afterwards. Whole shards are written by
``shards.ShardFiles``, the bytes zarr writes without its per-write pipeline; zarr writes
anything else (the partial last shard).

Example:
    >>> store = create_store("c.zarr", settings, spec)          # doctest: +SKIP
    >>> checks = write_shard("c.zarr", 0, seeds[:256])           # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .kernels import find_set_rows, to_uint8_into
from .shards import ZSTD_CHUNKS, ShardFiles, atomic_write, crc32c

FORMAT = "fmclip-cache/1"
# method.md: 200 epochs, each one pass over the k support images synthesised afresh: 200 k samples.
METHOD_EPOCHS = 200
ARRAYS_2D = ("images", "masks")
ARRAYS_1D = {"labels": "uint8", "seeds": "uint64", "source_index": "int32",
             "tasks": str, "source_ids": str, "records": str}
DONE = "_done"


class CacheError(Exception):
    """A cache that cannot be used as asked; the message names the store and the reason."""


def quantize(image: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """The stored form of a float image in [0, 1]: uint8 (``rint(image * 255)``, clipped) or
    float16, written into ``out`` (a C-contiguous array of that type) when given."""
    if out is None:
        out = np.empty(np.shape(image), np.uint8 if dtype == "uint8" else np.float16)
    if dtype == "uint8":
        to_uint8_into(np.ascontiguousarray(image, np.float32), out)
    else:
        out[...] = np.asarray(image, np.float32)
    return out


def make_samples(sources: Any, config: Any, seeds: list[int], dtype: str, records: bool = True,
                 reuse: dict[str, Any] | None = None) -> dict[str, Any]:
    """Synthesise the samples with these seeds: stored-form arrays and per-sample metadata
    (without the ``records`` JSON when ``records`` is False), and ``mask_rows``: which rows of
    each mask have a set pixel, for the masks' run-length frames. Sample with seed s starts from
    source image ``source_indices([s], len(sources))``. With ``reuse`` (a dict the caller keeps
    between calls), the image, mask, label and mask-row arrays are made once in it and
    overwritten by the next call: memory touched for the first time costs a page fault per
    4 kB, which was a twentieth of a shard's time."""
    from .sources import source_indices

    n, size = len(seeds), sources.size
    image_dtype = np.dtype(np.uint8 if dtype == "uint8" else np.float16)
    arrays = (reuse or {}).get("arrays")
    if arrays is None or arrays[0].shape != (n, size, size) or arrays[0].dtype != image_dtype:
        # The last: the float32 image each synthesis writes before it is stored, one for all.
        arrays = (np.empty((n, size, size), image_dtype), np.empty((n, size, size), np.uint8), np.empty(n, np.uint8),
                  np.empty((n, size), np.bool_), np.empty((size, size), np.float32))
        if reuse is not None:
            reuse["arrays"] = arrays
    out: dict[str, Any] = dict(zip(("images", "masks", "labels", "mask_rows"), arrays))
    # Per-sample Python work (source draws, JSON) runs in tight loops before and after the
    # synthesis loop: interleaved with synthesis, whose kernels evict its code and data from
    # the caches, it cost about twice as much (0.071 vs 0.038 ms per sample).
    chosen = source_indices(seeds, len(sources)).tolist()
    with collection_paused():
        made = _synthesize_rows(sources, config, seeds, chosen, dtype, out, arrays[-1])
        out["seeds"] = np.array(seeds, np.uint64)
        out["source_index"] = np.array(chosen, np.int32)
        out["tasks"] = np.array([record.task for record in made], dtype=object)
        out["source_ids"] = np.array([sources.source_id(src) for src in chosen], dtype=object)
        if records:
            out["records"] = np.array([record.to_json() for record in made], dtype=object)
        del made  # freed while collection is paused, so never promoted to an older generation
    return out


def _synthesize_rows(sources: Any, config: Any, seeds: list[int], chosen: list[int], dtype: str,
                     out: dict[str, Any], scratch: np.ndarray) -> list[Any]:
    """Each sample synthesised into its rows of ``out`` (images, masks, labels, mask rows);
    returns the records (a function of its own, so that no local outlives the loop holding one).

    The engine writes each mask straight into its uint8 row and each image into ``scratch``,
    one float32 array for all. A new pair of float32 outputs per sample, converted afterwards,
    cost 0.038-0.042 ms a sample more than synthesis alone, against 0.023-0.025 this way: the
    new outputs were out of L2 by the time they were read, and each mask was written twice."""
    import synth

    made = []
    for i, (seed, src) in enumerate(zip(seeds, chosen)):
        image, fg = sources.read(src)
        result, mask, record = synth.synthesize(image, rng=int(seed), foreground=fg, config=config,
                                                source_id=sources.source_id(src), out=scratch, mask=out["masks"][i])
        quantize(result, dtype, out=out["images"][i])
        out["labels"][i] = find_set_rows(mask, out["mask_rows"][i])
        made.append(record)
    return made


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a block (and resumed only if it was on).

    For the records of a shard's samples, kept until the shard's JSON is written: collection
    passes that find them alive promote them, and the promotions trigger full collections,
    which walk every object of the process (numba's and numpy's: 50-60 ms each). One process
    making 64 shards spent 0.005 ms a sample collecting (1 % of generation), against none for
    synthesis whose outputs are dropped at once. The samples' objects form no cycles: reference
    counting frees them all when the shard is done."""
    if not gc.isenabled():  # paused by the caller, or by another thread's shard
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def shard_range(shard: int, samples: int, shard_size: int) -> tuple[int, int]:
    return shard * shard_size, min(samples, (shard + 1) * shard_size)


def n_shards(samples: int, shard_size: int) -> int:
    return -(-samples // shard_size)


def shard_keys(shard: int) -> list[str]:
    """The files (relative to the store) that hold this shard's data, one per array."""
    return [f"{name}/c/{shard}/0/0" for name in ARRAYS_2D] + [f"{name}/c/{shard}" for name in ARRAYS_1D]


# File checksums by the name markers record them under: crc32c since generation computes it
# as it writes; sha256 in markers of stores written before.
CHECKSUMS = {"crc32c": lambda data: crc32c([data]), "sha256": lambda data: hashlib.sha256(data).hexdigest()}


def file_checksums(path: str | Path, shard: int, algorithm: str = "crc32c") -> dict[str, str | None]:
    """The checksum of each file of the shard; None where zarr wrote none (an all-fill chunk,
    from a store written before empty chunks were written too)."""
    digest = CHECKSUMS[algorithm]
    sums: dict[str, str | None] = {}
    for key in shard_keys(shard):
        f = Path(path) / key
        sums[key] = digest(f.read_bytes()) if f.is_file() else None
    return sums


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, [text.encode()], durable=True)


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """The store's settings, or None when ``path`` is not a finished-initialised fmclip cache."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file() or not (Path(path) / DONE).is_dir():
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    settings = attrs.get("fmclip")
    return settings if isinstance(settings, dict) and settings.get("format") == FORMAT else None


def is_ours(path: Path) -> bool:
    """True for a store this module made (even half-initialised): safe to delete on --overwrite."""
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("fmclip", {}).get("format") == FORMAT


# The compressors of images and masks (``--compressor``; benchmarks/RESULTS.md, "Compressors").
# zstd's fast level -7 by default, its frames spanning a chunk (``shards.ZSTD_CHUNKS``): a
# chunk's samples come from few source images, which recur in it, so the files are 3-11x smaller
# than lz4's where 1-12 sources recur (few-shot sets), at about lz4's speed, and 1.5x smaller
# from 48 brain slices, where lz4 (blosc, its fastest level) encodes 1.8x faster and stays an
# option; none skips compression (49 kB a 224^2 uint8 image).
COMPRESSORS = ("zstd", "lz4", "none")


def compressor(name: str, dtype: str) -> Any:
    """The zarr codec of ``--compressor name`` for an array of ``dtype`` (None: no compression)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "lz4":
        size = np.dtype(dtype).itemsize  # byte shuffle groups the bytes of multi-byte values
        return BloscCodec(cname="lz4", clevel=1, shuffle="shuffle" if size > 1 else "noshuffle", typesize=size)
    if name == "zstd":
        return ZstdCodec(level=ZSTD_CHUNKS["level"])
    if name == "none":
        return None
    raise ValueError(f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")


def create_store(path: str | Path, settings: dict[str, Any], spec: dict[str, Any]) -> None:
    """Create the empty group and arrays; ``_done/`` is made last, so a store killed while
    being created is recognised as such (no ``_done``) and made again."""
    import zarr
    from zarr.codecs import ZstdCodec

    path = Path(path)
    n, size, s, c = settings["samples"], settings["size"], settings["shard_size"], settings["chunk_size"]
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"fmclip": settings})
    img_dtype = "uint8" if settings["dtype"] == "uint8" else "float16"
    for name, dt in (("images", img_dtype), ("masks", "uint8")):
        group.create_array(name, shape=(n, size, size), dtype=dt, chunks=(c, size, size),
                           shards=(s, size, size), fill_value=0, compressors=compressor(settings["compressor"], dt),
                           dimension_names=("sample", "y", "x"))
    # zstd level 1, not zarr's default (3): the records' JSON, most of these bytes, is encoded 2.5x
    # faster into 11 % less (a shard's 137 kB: 0.51 against 0.20 ms, 40 against 36 kB).
    for name, dt in ARRAYS_1D.items():
        group.create_array(name, shape=(n,), dtype=dt, chunks=(s,), dimension_names=("sample",),
                           fill_value="" if dt is str else 0, compressors=ZstdCodec(level=1))
    atomic_write_text(path / "sources.json", json.dumps(spec))
    (path / DONE).mkdir()


def prepare_store(path: str | Path, settings: dict[str, Any], spec: dict[str, Any], overwrite: bool) -> set[int]:
    """Create the store, or reopen one made with the same settings; returns the finished shards.
    A store made with other settings is refused unless ``overwrite``."""
    path = Path(path)
    existing = read_settings(path)
    if existing is not None and existing != settings and not overwrite:
        changed = sorted(k for k in set(existing) | set(settings) if existing.get(k) != settings.get(k))
        raise CacheError(f"{path}: made with other settings (differs in: {', '.join(changed)}); "
                         f"use --overwrite to replace it, or another --out")
    if existing == settings:
        return finished_shards(path)
    if path.exists():
        if is_ours(path) or (path.is_dir() and not any(path.iterdir())):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            raise CacheError(f"{path}: exists and is not an fmclip cache; refusing to replace it")
    create_store(path, settings, spec)
    return set()


def finished_shards(path: str | Path) -> set[int]:
    return {int(p.stem) for p in (Path(path) / DONE).glob("*.json")}


def mark_done(path: str | Path, shard: int, start: int, stop: int, sums: dict[str, str | None]) -> None:
    marker = Path(path) / DONE / f"{shard:06d}.json"
    atomic_write_text(marker, json.dumps({"shard": shard, "start": start, "stop": stop, "crc32c": sums}))


def read_marker(path: str | Path, shard: int) -> dict[str, Any] | None:
    marker = Path(path) / DONE / f"{shard:06d}.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


# -- the worker side: one process-wide state per store, loaded lazily (spawned and Dask workers alike)

_STATE: dict[str, Any] = {}
_BUFFERS = threading.local()  # per thread: a Dask worker may run several shards at once


# The variables that set a process's OpenMP, numba, MKL and OpenBLAS threads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def single_thread() -> tuple[dict[str, str | None], int, int]:
    """One thread per worker process: parallelism is across processes, and idle OpenMP or
    numba threads would spin against the serial kernels. Returns what it replaced, for
    ``single_threaded``."""
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"  # read by the libraries of the processes spawned from here
    import cv2
    import numcodecs.blosc

    opencv = cv2.getNumThreads()
    cv2.setNumThreads(1)
    blosc = numcodecs.blosc.set_nthreads(1)  # blosc would use every core when called from the main thread
    return saved, opencv, blosc


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put environment variables back as ``saved`` holds them (None: unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """``single_thread`` for the time of a block, then this process's settings back: the process
    that makes shards beside its workers may be the user's own."""
    saved, opencv, blosc = single_thread()
    try:
        yield
    finally:
        import cv2
        import numcodecs.blosc

        restore_environ(saved)
        cv2.setNumThreads(opencv)
        numcodecs.blosc.set_nthreads(blosc)


def _state(path: str) -> dict[str, Any]:
    """The worker's state for the store at ``path`` as it is now: a store replaced there with
    other settings (``--overwrite`` in the same process) is loaded again. Reading zarr.json
    costs 0.01 ms a shard; its inode and time stamp could repeat when a store is remade."""
    try:
        identity = (path, (Path(path) / "zarr.json").read_bytes())
    except OSError:
        raise CacheError(f"{path}: not an initialised fmclip cache") from None
    if _STATE.get("identity") != identity:
        import synth

        from .sources import SourceSet

        settings = read_settings(path)
        if settings is None:
            raise CacheError(f"{path}: not an initialised fmclip cache")
        spec = json.loads((Path(path) / "sources.json").read_text())
        _STATE.clear()
        _STATE.update(path=path, identity=identity, settings=settings, sources=SourceSet(spec),
                      config=synth.SynthesisConfig.from_dict(settings["config"]),
                      files=ShardFiles.open(path, [*ARRAYS_2D, *ARRAYS_1D], binary=("masks",)))
    return _STATE


def _zarr_arrays(state: dict[str, Any]) -> dict[str, Any]:
    """The store's arrays through zarr, opened on first need: only shards that ``ShardFiles``
    does not write use them, and importing zarr costs a starting worker 0.15-0.2 s."""
    if "arrays" not in state:
        import zarr

        # write_empty_chunks: zarr's default (False) compares every chunk with the fill value
        # before writing it, which cost 5x the compression itself (0.28 vs 0.05 ms per mask).
        zarr.config.set({"async.concurrency": 4, "threading.max_workers": 1, "array.write_empty_chunks": True})
        group = zarr.open_group(state["path"], mode="r+")
        state["arrays"] = {name: group[name] for name in [*ARRAYS_2D, *ARRAYS_1D]}
    return state["arrays"]


def _write_arrays(arrays: dict[str, Any], where: slice, data: dict[str, Any]) -> None:
    """All arrays' parts of a shard in one zarr event-loop round trip: eight separate writes
    cost a fixed ~1.5 ms each, a third of the whole write time of a 128-sample shard."""
    import asyncio

    try:
        from zarr.core.sync import sync  # zarr's own bridge to its event loop (not public API)
    except ImportError:  # a zarr that moved it: the same writes, one round trip each
        for name, array in arrays.items():
            array[where] = data[name]
        return

    async def write_all() -> None:
        await asyncio.gather(*(a.async_array.setitem(where, data[name]) for name, a in arrays.items()))

    sync(write_all())


def write_shard(path: str, shard: int, seeds: list[int]) -> dict[str, Any]:
    """Make and write one whole shard; returns its range and file checksums (the driver
    commits the marker). Runs in a worker process: local pool or Dask."""
    state = _state(path)
    settings = state["settings"]
    start, stop = shard_range(shard, settings["samples"], settings["shard_size"])
    # Whole shards only: a partial write racing another writer of the same shard loses data.
    assert len(seeds) == stop - start and start % settings["shard_size"] == 0, (shard, start, stop, len(seeds))
    data = make_samples(state["sources"], state["config"], seeds, settings["dtype"], reuse=_BUFFERS.__dict__)
    # Our direct writer when it knows the layout (the bytes zarr would write, in half the time
    # of zarr's write and checksum re-read); zarr for anything else, such as a partial last shard.
    sums = state["files"].write(shard, data, {"masks": data["mask_rows"]}) if state["files"] is not None else None
    if sums is None:
        _write_arrays(_zarr_arrays(state), slice(start, stop), data)
        sums = file_checksums(path, shard)
    return {"shard": shard, "start": start, "stop": stop, "crc32c": sums}
