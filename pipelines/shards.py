"""A whole shard of the cache written straight to its files, byte for byte what zarr writes;
and sample ranges of the sharded arrays read straight from those files.

zarr's write of a 256-sample shard and the re-read of its files for checksums cost a median
0.18-0.19 ms per sample (fill-value buffers, coroutines and copies per inner chunk), against
0.09-0.10 ms here, of which compression is 0.03 (benchmarks/RESULTS.md). For the exact codecs
the cache uses (``bytes``, ``vlen-utf8``, ``blosc``, ``zstd`` and ``sharding_indexed`` split along the
sample axis only, with a ``bytes`` + ``crc32c`` index at the end) this module encodes each
array's part of a shard with the same numcodecs codecs zarr calls, and writes each file once.
Any other layout (an array made by another zarr version with other codecs, a partial last
shard) returns None and is written by zarr itself; tests compare both writers' files byte for
byte, except zstd frames: python-zstandard encodes them with a reused context, and those of
sharded chunks (images) with a window over the whole chunk (``ZSTD_CHUNKS``), which zarr
cannot ask for; binary arrays' chunks (masks) are run-length frames of our own
(``kernels.run_length_frame``). Any zstd decoder, zarr's included, reads them (tested).

Reading goes the same way round for the sharded arrays (images, masks): zarr's read of a
batch's rows cost about 0.07 ms per sample, five times the decompression itself.
``ShardReader`` reads each shard's index (checking its crc32c), then only the chunks a range
needs, and decompresses them into the caller's array.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# The file's bytes, in parts (no joined copy), from an array's part of a shard; a binary
# array's encoder also takes which rows of it have a set pixel (``ShardFiles.write``).
Encoder = Callable[..., list[bytes]]
# An array's encoder, the file of shard k relative to the array's folder, samples per shard.
ArrayWriter = tuple[Encoder, Callable[[int], str], int]

# How sharded chunks are zstd-encoded: the level (the array's metadata carries it, and the
# encoder reads it there) and what zarr's codec cannot ask for. A chunk's samples are made from
# a few source images, so most of each sample recurs in an earlier sample of its chunk, further
# back than zstd's fast levels look (a 512 kB window and an 8,192-entry table for a 3.2 MB
# chunk). A window over the whole chunk and a 2**15-entry table find those repeats. With level
# -7, against zarr's own encoding at level -3 (the cache's default before), over brain MR, head
# CT, abdominal MR, speckle and smooth images from 1 to 128 sources: files 9-63 % smaller and
# encoding 3-41 % faster (benchmarks/RESULTS.md, Cache, session 10). Part of the settings a
# store is resumed under, since it decides the bytes.
ZSTD_CHUNKS = {"level": -7, "window": "the whole chunk", "hash_log": 15,
               "binary_arrays": "frames of run-length and raw blocks, zstd's own where larger than 1/32 of the chunk"}
# Binary arrays (the masks) are run-length frames (``kernels.run_length_frame``, figures there),
# except where a chunk's frame would pass 1/RUN_LENGTH_LIMIT of it: masks of fine noise have
# short runs, which zstd's entropy coding packs tighter.
RUN_LENGTH_LIMIT = 32


def _bytes_to_bytes(codecs: list[dict[str, Any]], whole_chunks: bool = False) -> list[Callable[[bytes], bytes]] | None:
    """The encoders of a list of bytes-to-bytes codecs; zstd with ``ZSTD_CHUNKS`` when
    ``whole_chunks`` (the inner chunks of a shard), as numcodecs encodes it otherwise."""
    out: list[Callable[[bytes], bytes]] = []
    for codec in codecs:
        config = codec.get("configuration", {})
        if codec.get("name") == "zstd" and set(config) <= {"level", "checksum"}:
            level, checksum = int(config.get("level", 0)), bool(config.get("checksum"))
            out.append(_zstd(level, checksum, whole_chunks))
        elif codec.get("name") == "blosc" and set(config) == {"cname", "clevel", "shuffle", "typesize", "blocksize"}:
            out.append(_blosc(config).encode)
        elif codec.get("name") == "crc32c" and not config:
            out.append(_append_crc32c)
        else:
            return None
    return out


def _zstd(level: int, checksum: bool, whole_chunks: bool) -> Callable[[Any], bytes]:
    """zstd at ``level``, with ``ZSTD_CHUNKS``'s window and table for a shard's inner chunks
    and otherwise with numcodecs' parameters and frame flags (the same bytes where both bundle
    the same zstd version; 1.5.7 and 1.5.6 agree on the cache's small arrays). One
    compressor per thread, reused (a Dask worker may write several shards at once): numcodecs
    makes a context per call, 10-60 us for each of a shard's small arrays."""
    import zstandard

    if whole_chunks:
        # zstd shrinks a window of 2**27 to the chunk's size (the frame header says the chunk's
        # size); 2**27 is the most that decoders accept by default.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=27, hash_log=ZSTD_CHUNKS["hash_log"], write_checksum=int(checksum), write_content_size=1)
        make = partial(zstandard.ZstdCompressor, compression_params=params)
    else:
        make = partial(zstandard.ZstdCompressor, level=level, write_checksum=checksum, write_content_size=True)
    local = threading.local()

    def encode(data: Any) -> bytes:
        compressor = getattr(local, "compressor", None)
        if compressor is None:
            compressor = local.compressor = make()
        return compressor.compress(data)

    return encode


def _run_length(level: int, width: int) -> Callable[[np.ndarray, np.ndarray | None], bytes]:
    """The encoder of a binary uint8 array's chunks, ``encode(chunk, rows_set)``: a run-length
    frame (``rows_set``: which rows of ``width`` bytes have a set pixel; found when None), or
    ``_zstd(level)``'s frame where that would exceed 1/``RUN_LENGTH_LIMIT`` of the chunk."""
    from .kernels import find_set_rows, run_length_frame

    zstd = _zstd(level, False, whole_chunks=True)
    local = threading.local()

    def encode(chunk: np.ndarray, rows_set: np.ndarray | None = None) -> bytes:
        flat = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        if rows_set is None:
            rows_set = np.empty(flat.size // width, np.bool_)
            find_set_rows(flat.reshape(-1, width), rows_set)
        size = 16 + flat.size // RUN_LENGTH_LIMIT
        out = getattr(local, "out", None)
        if out is None or out.size != size:
            out = local.out = np.empty(size, np.uint8)
        written = run_length_frame(flat, width, np.ascontiguousarray(rows_set, np.bool_).reshape(-1), out)
        return zstd(flat) if written > out.size else out[:written].tobytes()

    return encode


def _blosc(config: dict[str, Any]) -> Any:
    """numcodecs' Blosc as zarr's ``BloscCodec`` configures it (typesize from the array's type,
    not from the bytes it is given)."""
    import numcodecs

    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[config["shuffle"]]
    return numcodecs.Blosc.from_config({"cname": config["cname"], "clevel": int(config["clevel"]), "shuffle": shuffle,
                                        "blocksize": int(config["blocksize"]), "typesize": int(config["typesize"])})


def chunk_decoder(name: str) -> Callable[..., Any]:
    """``decode(data, out=None)`` of the cache's compressor named ``name`` in zarr metadata
    (``zstd`` or ``blosc``); both read their parameters from the chunk's own header."""
    import numcodecs

    return {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc}[name]().decode


def _append_crc32c(data: bytes) -> bytes:
    data = bytes(data)
    return data + crc32c_value([data]).to_bytes(4, "little")


def _chain(codecs: list[dict[str, Any]], dtype: np.dtype, whole_chunks: bool = False) -> Encoder | None:
    """The encoder of a codec list whose first codec turns arrays into bytes."""
    if not codecs:
        return None
    first, config = codecs[0].get("name"), codecs[0].get("configuration", {})
    rest = _bytes_to_bytes(codecs[1:], whole_chunks)
    if rest is None:
        return None
    if first == "bytes" and config.get("endian", "little") == "little" and dtype.kind in "biuf":
        little = dtype.newbyteorder("<")

        def to_bytes(a: np.ndarray) -> Any:
            return np.ascontiguousarray(a, dtype=little).reshape(-1).view(np.uint8)
    elif first == "vlen-utf8" and not config and dtype.kind == "O":
        from numcodecs.vlen import VLenUTF8

        to_bytes = VLenUTF8().encode
    else:
        return None

    def encode(a: np.ndarray, rows_set: np.ndarray | None = None) -> list[bytes]:  # rows_set: unused
        data = to_bytes(a)
        for step in rest:
            data = step(data)
        return [bytes(data)]

    return encode


def _sharded(config: dict[str, Any], shard_shape: list[int], dtype: np.dtype, binary: bool = False) -> Encoder | None:
    """``sharding_indexed`` with chunks split along the first axis only (so zarr's Morton order
    of the chunks is plain order) and the index at the end; a ``binary`` uint8 array's chunks
    in run-length frames where its codecs are ``bytes`` and ``zstd`` (no checksum)."""
    chunk = config.get("chunk_shape")
    if (set(config) - {"chunk_shape", "codecs", "index_codecs", "index_location"}
            or config.get("index_location", "end") != "end" or not chunk or list(chunk[1:]) != shard_shape[1:]
            or shard_shape[0] % chunk[0]):
        return None
    codecs = config.get("codecs", [])
    inner = _chain(codecs, dtype, whole_chunks=True)  # None unless every codec is one we encode
    run_length = None
    zstd_config = codecs[-1].get("configuration", {}) if codecs else {}
    if (binary and inner is not None and dtype == np.uint8 and len(shard_shape) > 1
            and [c.get("name") for c in codecs] == ["bytes", "zstd"] and not zstd_config.get("checksum")):
        run_length = _run_length(int(zstd_config.get("level", 0)), shard_shape[-1])
    index_codecs = config.get("index_codecs", [])
    if inner is None or not index_codecs or index_codecs[0].get("name") != "bytes":
        return None
    index_steps = _bytes_to_bytes(index_codecs[1:])
    if index_steps is None or index_codecs[0].get("configuration", {}).get("endian", "little") != "little":
        return None
    step, count, extra = chunk[0], shard_shape[0] // chunk[0], len(shard_shape) - 1

    def encode(a: np.ndarray, rows_set: np.ndarray | None = None) -> list[bytes]:
        if run_length is None:
            parts = [part for k in range(count) for part in inner(a[k * step:(k + 1) * step])]
        else:
            parts = [run_length(a[k * step:(k + 1) * step], None if rows_set is None else rows_set[k * step:(k + 1) * step])
                     for k in range(count)]
        sizes = np.array([len(p) for p in parts], np.uint64)
        index = np.empty((count, *[1] * extra, 2), "<u8")
        index[..., 1] = sizes.reshape(count, *[1] * extra)
        index[..., 0] = (np.cumsum(sizes) - sizes).reshape(count, *[1] * extra)
        tail = index.tobytes()
        for step_fn in index_steps:
            tail = bytes(step_fn(tail))
        return [*parts, tail]

    return encode


def _array_writer(meta: dict[str, Any], binary: bool = False) -> ArrayWriter | None:
    """An encoder for one whole chunk (a shard) of the array described by ``meta`` (its
    zarr.json), the key of chunk k, and the number of samples per chunk; None if unknown.
    ``binary``: the array holds 0 and 1 (``_sharded``)."""
    grid = meta.get("chunk_grid", {})
    keys = meta.get("chunk_key_encoding", {})
    if (meta.get("zarr_format") != 3 or grid.get("name") != "regular" or meta.get("storage_transformers")
            or keys.get("name") != "default" or keys.get("configuration", {}).get("separator", "/") != "/"):
        return None
    chunk_shape = list(grid.get("configuration", {}).get("chunk_shape", []))
    shape = meta.get("shape", [])
    if len(chunk_shape) != len(shape) or not chunk_shape or chunk_shape[1:] != shape[1:]:
        return None
    dtype = np.dtype(object) if meta.get("data_type") == "string" else np.dtype(meta.get("data_type", "V"))
    codecs = meta.get("codecs", [])
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        encoder = _sharded(codecs[0].get("configuration", {}), chunk_shape, dtype, binary)
    else:
        encoder = _chain(codecs, dtype)
    if encoder is None:
        return None
    tail = "/0" * (len(shape) - 1)
    return encoder, lambda k: f"c/{k}{tail}", chunk_shape[0]


class ShardFiles:
    """Writes whole shards of some arrays of a zarr v3 store directly to their files.

    Example:
        >>> writer = ShardFiles.open("cache.zarr", ["images", "masks"])   # doctest: +SKIP
        >>> writer.write(0, {"images": images, "masks": masks})           # doctest: +SKIP
        {'images/c/0/0/0': '9f2c...', 'masks/c/0/0/0': '41d7...'}
    """

    def __init__(self, path: Path, writers: dict[str, ArrayWriter]) -> None:
        self.path, self.writers = path, writers

    @classmethod
    def open(cls, path: str | Path, names: list[str], binary: tuple[str, ...] = ()) -> ShardFiles | None:
        """The writer for these arrays of the store, or None if any of them has a layout that
        this module does not encode (zarr then writes it). The arrays named in ``binary`` hold
        0 and 1 only (masks): where zstd compresses them, their chunks are run-length frames."""
        writers = {}
        for name in names:
            try:
                meta = json.loads((Path(path) / name / "zarr.json").read_text())
            except (OSError, ValueError):
                return None
            writer = _array_writer(meta, name in binary)
            if writer is None:
                return None
            writers[name] = writer
        return cls(Path(path), writers)

    def write(self, shard: int, data: dict[str, np.ndarray],
              rows_set: dict[str, np.ndarray] | None = None) -> dict[str, str] | None:
        """Write chunk ``shard`` of every array from ``data`` (exactly one chunk's samples
        each); returns the crc32c of each file written, by key relative to the store. A
        partial chunk returns None and writes nothing: zarr pads those with its fill value.
        ``rows_set``: for binary arrays, which rows (of the last axis) have a set pixel, as
        ``kernels.find_set_rows`` finds them (each row is read otherwise)."""
        if any(len(data[name]) != samples for name, (_, _, samples) in self.writers.items()):
            return None
        sums = {}
        for name, (encode, key, _) in self.writers.items():
            parts = encode(data[name], (rows_set or {}).get(name))
            relative = f"{name}/{key(shard)}"
            target = self.path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # no fsync, as zarr writes: only the driver's marker, written after, is fsynced
            sums[relative] = atomic_write(target, parts, durable=False)
        return sums


def crc32c_value(parts: list[bytes]) -> int:
    """The CRC-32C of the concatenated ``parts``: the check zarr's shard index carries."""
    import google_crc32c

    value = 0
    for part in parts:
        value = google_crc32c.extend(value, part)
    return value


def crc32c(parts: list[bytes]) -> str:
    """``crc32c_value`` as 8 hex digits: the cache's file checksum (10x faster than sha256,
    which cost 1 % of generation)."""
    return f"{crc32c_value(parts):08x}"


def atomic_write(path: Path, parts: list[bytes], durable: bool) -> str:
    """Write ``parts`` to ``path`` through a temporary file renamed over it, so that readers
    see the old file or the whole new one, never half; fsync first when ``durable``. Returns
    the crc32c of what was written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return crc32c(parts)


_MISSING = np.uint64(2**64 - 1)  # the index entry of a chunk zarr did not write (all fill value)


class ShardReader:
    """Rows of a sharded array of the cache (``images`` or ``masks``) read straight from its
    shard files, for the layouts ``ShardFiles`` writes; ``open`` returns None for others.

    Example:
        >>> reader = ShardReader.open("cache.zarr", "images")   # doctest: +SKIP
        >>> rows = np.empty((10, 224, 224), np.uint8)            # doctest: +SKIP
        >>> reader.read(300, 310, rows)                         # doctest: +SKIP
    """

    def __init__(self, folder: Path, shard_size: int, chunk: int, tail: tuple[int, ...], dtype: np.dtype,
                 decode: Callable[[bytes, np.ndarray], Any] | None) -> None:
        self.folder, self.shard_size, self.chunk, self.dtype = folder, shard_size, chunk, dtype
        self.tail, self.decode, self.per_shard = tail, decode, shard_size // chunk
        self._indexes: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | Path, name: str) -> ShardReader | None:
        try:
            meta = json.loads((Path(path) / name / "zarr.json").read_text())
        except (OSError, ValueError):
            return None
        codecs = meta.get("codecs", [])
        if _array_writer(meta) is None or len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            return None  # not a layout ShardFiles writes, or not sharded
        config = codecs[0]["configuration"]
        names = [c.get("name") for c in config["codecs"]]
        if (names not in (["bytes"], ["bytes", "zstd"], ["bytes", "blosc"])
                or [c.get("name") for c in config["index_codecs"]] != ["bytes", "crc32c"]):
            return None
        decode = chunk_decoder(names[-1]) if names[-1] != "bytes" else None
        shard_size = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        return cls(Path(path) / name, shard_size, int(config["chunk_shape"][0]), tuple(meta["shape"][1:]), dtype,
                   decode)

    def _index(self, shard: int, fh: Any) -> np.ndarray:
        """(offset, nbytes) of each chunk of the shard, from the end of its file."""
        if shard not in self._indexes:
            size = self.per_shard * 16
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - size - 4))  # a truncated file reads short
            raw = fh.read(size + 4)
            if len(raw) != size + 4 or crc32c_value([raw[:size]]) != int.from_bytes(raw[size:], "little"):
                raise OSError(f"{fh.name}: damaged shard index (checksum mismatch); run fmclip verify")
            if len(self._indexes) >= 64:
                self._indexes.pop(next(iter(self._indexes)))
            self._indexes[shard] = np.frombuffer(raw[:size], "<u8").reshape(self.per_shard, 2)
        return self._indexes[shard]

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows [start, stop) into ``out`` (C-contiguous, ``stop - start`` rows): each shard's file
        opened once, each chunk the range touches decompressed once."""
        pos = start
        while pos < stop:
            shard = pos // self.shard_size
            shard_stop = min(stop, (shard + 1) * self.shard_size)
            with open(self.folder / "c" / str(shard) / "/".join("0" * len(self.tail)), "rb") as fh:
                index = self._index(shard, fh)
                while pos < shard_stop:
                    k = (pos - shard * self.shard_size) // self.chunk
                    first = shard * self.shard_size + k * self.chunk
                    end = min(first + self.chunk, shard_stop)
                    self._chunk(fh, k, index[k], pos - first, out[pos - start:end - start])
                    pos = end

    def _chunk(self, fh: Any, k: int, entry: np.ndarray, skip: int, rows: np.ndarray) -> None:
        """Rows ``skip:skip + len(rows)`` of chunk ``k`` (index ``entry``) into ``rows``: decoded
        straight into them when they are the whole chunk."""
        offset, nbytes = entry
        if offset == _MISSING:
            rows[...] = 0
            return
        fh.seek(int(offset))
        raw = fh.read(int(nbytes))
        whole = skip == 0 and len(rows) == self.chunk
        target = rows if whole else np.empty((self.chunk, *self.tail), self.dtype)
        try:
            if self.decode is None:
                target.reshape(-1).view(np.uint8)[...] = np.frombuffer(raw, np.uint8)
            else:
                self.decode(raw, out=target)
        except (ValueError, RuntimeError) as exc:
            raise OSError(f"{fh.name}: chunk {k} cannot be decoded ({exc}); run fmclip verify") from None
        if not whole:
            rows[...] = target[skip:skip + len(rows)]
