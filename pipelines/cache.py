"""The zarr v3 cache of a pre-generated synthetic set: layout, creation, shard writing, checksums.

Layout of ``CACHE.zarr`` (a zarr v3 group, N samples, shard size S, image side H)::

    images      (N, H, H) uint8 (or float16)  chunks (C, H, H), shards (S, H, H), zstd (or lz4, none), crc32c
    masks       (N, H, H) uint8 {0, 1}         chunks (C, H, H), shards (S, H, H), as the images
    labels      (N,) uint8                     chunks (S,)   one chunk per shard
    seeds       (N,) uint64                    chunks (S,)
    source_index(N,) int32                     chunks (S,)
    tasks, source_ids, records (N,) str        chunks (S,)   records: the synth record as JSON
    sources.json   the source images (ids, paths) the samples were made from
    _done/000007.json  shard 7 is finished: its sample range and the crc32c of each of its files

Everything is written and read through zarr's public API with zarr's own codecs. Group attribute
``fmclip`` holds the settings (format, engine version, resolved config, seed, sizes, dataset
identity). C (default 64, the loader's block) samples per chunk: zarr's cost per chunk is about
0.5 ms, so one-sample chunks cap reading and writing near 1,000 samples/s. Each image and mask
chunk ends with its CRC-32C, which zarr checks as it decodes: a damaged chunk is an error when
read, never a different image. A shard is the unit of work: one worker makes all its samples and
writes every array's part of it as whole shards (partial shard writes from parallel writers lose
data in zarr), and the driver commits its ``_done`` marker only afterwards.

Example:
    >>> create_store("c.zarr", settings, spec)                   # doctest: +SKIP
    >>> done = write_shard("c.zarr", 0, seeds[:256])             # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.io import atomic_write_bytes

from .samples import make_samples

FORMAT = "fmclip-cache/2"  # 2: written by zarr's public API, a CRC-32C per chunk; 1 was read by our own reader
# method.md: 200 epochs, each one pass over the k support images synthesised afresh: 200 k samples.
METHOD_EPOCHS = 200
ARRAYS_2D = ("images", "masks")
ARRAYS_1D = {"labels": "uint8", "seeds": "uint64", "source_index": "int32",
             "tasks": str, "source_ids": str, "records": str}
DONE = "_done"


class CacheError(Exception):
    """A cache that cannot be used as asked; the message names the store and the reason."""


def shard_range(shard: int, samples: int, shard_size: int) -> tuple[int, int]:
    return shard * shard_size, min(samples, (shard + 1) * shard_size)


def n_shards(samples: int, shard_size: int) -> int:
    return -(-samples // shard_size)


def shard_keys(shard: int) -> list[str]:
    """The files (relative to the store) that hold this shard's data, one per array."""
    return [f"{name}/c/{shard}/0/0" for name in ARRAYS_2D] + [f"{name}/c/{shard}" for name in ARRAYS_1D]


def crc32c(data: bytes) -> str:
    """The CRC-32C (Castagnoli) of ``data`` as 8 hex digits, the checksum zarr's chunks carry."""
    import google_crc32c

    return f"{google_crc32c.value(data):08x}"


def file_checksums(path: str | Path, shard: int) -> dict[str, str | None]:
    """The CRC-32C of each file of the shard; None where there is no file."""
    sums: dict[str, str | None] = {}
    for key in shard_keys(shard):
        f = Path(path) / key
        sums[key] = crc32c(f.read_bytes()) if f.is_file() else None
    return sums


def changed_files(path: str | Path, shard: int, marker: dict[str, Any]) -> list[str]:
    """The shard's files whose CRC-32C is not the one its marker recorded (missing files included)."""
    actual = file_checksums(path, shard)
    return [key for key in sorted(set(marker["crc32c"]) | set(actual)) if actual.get(key) != marker["crc32c"].get(key)]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """The store's settings, or None when ``path`` is not a finished-initialised fmclip cache.
    A cache of an older format is a :class:`CacheError` that says so."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file() or not (Path(path) / DONE).is_dir():
        return None
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    settings = attrs.get("fmclip")
    if not isinstance(settings, dict) or not str(settings.get("format", "")).startswith("fmclip-cache/"):
        return None
    if settings["format"] != FORMAT:
        raise CacheError(f"{path}: a cache of format {settings['format']}, which this version cannot read "
                         f"({FORMAT}); make it again with fmclip generate --overwrite")
    return settings


def is_ours(path: Path) -> bool:
    """True for a store this module made, of any format (even half-initialised): safe to delete on
    --overwrite."""
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return str(attrs.get("fmclip", {}).get("format", "")).startswith("fmclip-cache/")


# The compressors of images and masks (``--compressor``; benchmarks/RESULTS.md, "Compressors"):
# zstd at its fast level -7 by default, whose frames span a chunk, so that the source images that
# recur in a chunk are found; lz4 (blosc, its fastest level); none (49 kB a 224^2 uint8 image).
COMPRESSORS = ("zstd", "lz4", "none")
ZSTD_LEVEL = -7


def compressors(name: str, dtype: str) -> list[Any]:
    """The zarr codecs of ``--compressor name`` for an image array of ``dtype``, each chunk ending
    with its CRC-32C."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    if name == "lz4":
        size = np.dtype(dtype).itemsize  # byte shuffle groups the bytes of multi-byte values
        codec = [BloscCodec(cname="lz4", clevel=1, shuffle="shuffle" if size > 1 else "noshuffle", typesize=size)]
    elif name == "zstd":
        codec = [ZstdCodec(level=ZSTD_LEVEL)]
    elif name == "none":
        codec = []
    else:
        raise ValueError(f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")
    return [*codec, Crc32cCodec()]


def create_store(path: str | Path, settings: dict[str, Any], spec: dict[str, Any]) -> None:
    """Create the empty group and arrays; ``_done/`` is made last, so a store killed while
    being created is recognised as such (no ``_done``) and made again."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    path = Path(path)
    n, size, s, c = settings["samples"], settings["size"], settings["shard_size"], settings["chunk_size"]
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"fmclip": settings})
    img_dtype = "uint8" if settings["dtype"] == "uint8" else "float16"
    for name, dt in (("images", img_dtype), ("masks", "uint8")):
        group.create_array(name, shape=(n, size, size), dtype=dt, chunks=(c, size, size),
                           shards=(s, size, size), fill_value=0, compressors=compressors(settings["compressor"], dt),
                           dimension_names=("sample", "y", "x"))
    for name, dt in ARRAYS_1D.items():
        group.create_array(name, shape=(n,), dtype=dt, chunks=(s,), dimension_names=("sample",),
                           fill_value="" if dt is str else 0, compressors=[ZstdCodec(level=1), Crc32cCodec()])
    atomic_write_text(path / "sources.json", json.dumps(spec))
    (path / DONE).mkdir()


def prepare_store(path: str | Path, settings: dict[str, Any], spec: dict[str, Any], overwrite: bool) -> set[int]:
    """Create the store, or reopen one made with the same settings; returns the finished shards.
    A store made with other settings is refused unless ``overwrite``."""
    path = Path(path)
    try:
        existing = read_settings(path)
    except CacheError:  # a cache of an older format: replaced with --overwrite, refused otherwise
        if not overwrite:
            raise
        existing = None
    if existing is not None and existing != settings and not overwrite:
        changed = sorted(k for k in set(existing) | set(settings) if existing.get(k) != settings.get(k))
        raise CacheError(f"{path}: made with other settings (differs in: {', '.join(changed)}); "
                         f"use --overwrite to replace it, or another --out")
    if existing == settings:
        for orphan in [*path.glob(".*.tmp"), *(path / DONE).glob(".*.tmp")]:  # a writer killed mid-write
            orphan.unlink(missing_ok=True)
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
    other settings (``--overwrite`` in the same process) is loaded again."""
    try:
        identity = (path, (Path(path) / "zarr.json").read_bytes())
    except OSError:
        raise CacheError(f"{path}: not an initialised fmclip cache") from None
    if _STATE.get("identity") != identity:
        import zarr

        import synth

        from .sources import SourceSet

        settings = read_settings(path)
        if settings is None:
            raise CacheError(f"{path}: not an initialised fmclip cache")
        spec = json.loads((Path(path) / "sources.json").read_text())
        # write_empty_chunks: zarr's default (False) compares every chunk with the fill value before
        # writing it; the markers' checksums expect every chunk's file
        zarr.config.set({"threading.max_workers": 1, "array.write_empty_chunks": True})
        group = zarr.open_group(path, mode="r+")
        _STATE.clear()
        _STATE.update(path=path, identity=identity, settings=settings, sources=SourceSet(spec),
                      config=synth.SynthesisConfig.from_dict(settings["config"]),
                      arrays={name: group[name] for name in [*ARRAYS_2D, *ARRAYS_1D]})
    return _STATE


def write_shard(path: str, shard: int, seeds: list[int]) -> dict[str, Any]:
    """Make and write one whole shard; returns its range and file checksums (the driver
    commits the marker). Runs in a worker process: local pool or Dask."""
    state = _state(path)
    settings = state["settings"]
    start, stop = shard_range(shard, settings["samples"], settings["shard_size"])
    # Whole shards only: a partial write racing another writer of the same shard loses data.
    assert len(seeds) == stop - start and start % settings["shard_size"] == 0, (shard, start, stop, len(seeds))
    data = make_samples(state["sources"], state["config"], seeds, settings["dtype"])
    for name, array in state["arrays"].items():
        array[start:stop] = data[name]
    return {"shard": shard, "start": start, "stop": stop, "crc32c": file_checksums(path, shard)}
