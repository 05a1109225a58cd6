"""torch Datasets over synthetic training sets: from a cache (``CachedDataset``) or made on the
fly (``SynthDataset``), with one item interface (anomalib's names)::

    {"image": float32 (1, H, W) in [0, 1], "gt_mask": bool (1, H, W),
     "gt_label": int64 (), "task": str, "source_id": str, "index": int}

Both are iterable datasets that split one epoch's order across DDP ranks and DataLoader workers
so that every sample comes exactly once per epoch (ranks get counts that differ by at most
one). The order is shard-aware: shards in random order, blocks of samples in random order
inside a shard, then a shuffle window; reads are one zarr call per run of consecutive samples.
With ``batch_size=B`` a dataset yields whole batches (what ``default_collate`` would make of B
items), read a window at a time and converted straight into the batch tensors: use it with
``DataLoader(ds, batch_size=None)``, about twice as fast as items. ``as_stored=True`` keeps the image as stored (uint8
0..255 or float16) so that it is converted on the GPU: ``batch["image"].cuda().float().div_(255)``.
Call ``set_epoch(e)`` each epoch, like ``DistributedSampler``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .cache import n_shards, shard_range
from .samples import to_unit

FIELDS = ("images", "masks", "labels", "tasks", "source_ids")


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def epoch_order(samples: int, shard_size: int, block: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The whole epoch's sample order: shards permuted, blocks permuted inside each shard."""
    if not shuffle:
        return np.arange(samples)
    rng = np.random.default_rng([seed, epoch])
    parts = []
    for shard in rng.permutation(n_shards(samples, shard_size)):
        start, stop = shard_range(int(shard), samples, shard_size)
        starts = np.arange(start, stop, block)
        parts += [np.arange(b, min(stop, b + block)) for b in rng.permutation(starts)]
    return np.concatenate(parts)


def split(order: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Contiguous part ``part`` of ``parts``: keeps the runs of consecutive samples together."""
    n = len(order)
    return order[part * n // parts:(part + 1) * n // parts]


def runs(indices: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive indices, at most ``limit`` long."""
    out: list[tuple[int, int]] = []
    for i in indices.tolist():
        if out and out[-1][1] == i and i - out[-1][0] < limit:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


class _Split(IterableDataset):
    """The epoch order, its split across ranks and workers, and the two ways to iterate it:
    items (``batch_size=None``, for ``DataLoader(ds, batch_size=B)``) or whole batches read and
    converted at once (``batch_size=B``, for ``DataLoader(ds, batch_size=None)``)."""

    samples: int
    shard_size: int

    def __init__(self, *, shuffle: bool, seed: int, window: int, block: int, batch_size: int | None,
                 drop_last: bool, as_stored: bool, rank: int | None, world_size: int | None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, not {batch_size}")
        self.shuffle, self.seed, self.window, self.block = shuffle, seed, window, block
        self.batch_size, self.drop_last, self.as_stored = batch_size, drop_last, as_stored
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.epoch, self._passes = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """The next pass is epoch ``epoch``. Persistent DataLoader workers keep the copy they
        started with, so each copy also moves one epoch on per pass: pass k after
        ``set_epoch(e)`` is epoch e + k, which is what calling ``set_epoch`` each epoch asks."""
        self.epoch, self._passes = int(epoch), 0

    def _next_epoch(self) -> int:
        epoch = self.epoch + self._passes
        self._passes += 1
        return epoch

    def __len__(self) -> int:
        """Samples of this rank per epoch (items, whatever ``batch_size`` is)."""
        return len(split(np.arange(self.samples), self.rank, self.world_size))

    def my_indices(self, epoch: int) -> np.ndarray:
        """This rank's and this DataLoader worker's samples for this epoch."""
        order = epoch_order(self.samples, self.shard_size, self.block, self.seed, epoch, self.shuffle)
        mine = split(order, self.rank, self.world_size)
        info = get_worker_info()
        return split(mine, info.id, info.num_workers) if info is not None else mine

    def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The stored-form ``FIELDS`` of these samples, in this order, plus their ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Random access to one sample (slower than iterating: one read per item)."""
        if not 0 <= index < self.samples:
            raise IndexError(f"sample {index} out of range (0..{self.samples - 1})")
        return _item(self._read(np.array([index])), 0, self.as_stored)

    def _rng(self, epoch: int) -> np.random.Generator:
        info = get_worker_info()
        return np.random.default_rng([self.seed, epoch, self.rank, info.id if info else 0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.batch_size is not None:
            yield from (_batch(parts, self.as_stored) for parts in self.next_pass_batches())
            return
        epoch = self._next_epoch()
        indices = self.my_indices(epoch)
        reads = (self._read(indices[at:at + self.block]) for at in range(0, len(indices), self.block))
        items = (_item(d, k, self.as_stored) for d in reads for k in range(len(d["index"])))
        if not self.shuffle or self.window <= 1:
            yield from items
            return
        rng = self._rng(epoch)
        buffer: list[dict[str, Any]] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= self.window:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        rng.shuffle(buffer)  # type: ignore[arg-type]
        yield from buffer

    def next_pass_batches(self) -> Iterator[list[tuple[dict[str, np.ndarray], np.ndarray]]]:
        """The next pass's batches of this worker as ``(read window, its rows)`` lists, not yet
        gathered: ``_batch`` gathers them into new tensors."""
        epoch = self._next_epoch()
        return self._batch_parts(self.my_indices(epoch), self._rng(epoch))

    def stored_layout(self) -> tuple[tuple[int, int], np.dtype]:
        """(height, width) and dtype of the images as stored (before conversion)."""
        raise NotImplementedError

    def _batch_parts(self, indices: np.ndarray, rng: np.random.Generator
                     ) -> Iterator[list[tuple[dict[str, np.ndarray], np.ndarray]]]:
        """Windows of ``window`` samples read together, shuffled inside and cut into batches; a
        window's remainder opens the next batch, so only this worker's last batch is short.
        Batches are gathered row by row from the windows as read (no shuffled copy)."""
        size = int(self.batch_size or 1)
        step = max(size, self.window) if self.shuffle else size
        pending: list[tuple[dict[str, np.ndarray], np.ndarray]] = []  # (window, its rows) of the next batch
        count = 0
        for at in range(0, len(indices), step):
            d = self._read(indices[at:at + step])
            rows = rng.permutation(len(d["index"])) if self.shuffle else np.arange(len(d["index"]))
            while len(rows):
                take = min(size - count, len(rows))
                pending.append((d, rows[:take]))
                rows, count = rows[take:], count + take
                if count == size:
                    yield pending
                    pending, count = [], 0
        if pending and not self.drop_last:
            yield pending


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor to hand to the DataLoader. In a worker it lives in shared memory from the
    start, as ``default_collate`` makes its batches: sending it to the main process then costs
    no copy (a copy into shared memory was most of a batch's cost)."""
    return _new_tensors([(shape, dtype)])[0]


def _new_tensors(specs: list[tuple[tuple[int, ...], torch.dtype]]) -> list[torch.Tensor]:
    """Empty tensors of these shapes and dtypes, in a worker all views of one shared-memory
    block: the DataLoader passes one file descriptor for them, not one each (each is a socket
    round trip to the worker's descriptor-sharing thread)."""
    if get_worker_info() is None:
        return [torch.empty(shape, dtype=dtype) for shape, dtype in specs]
    offsets, total = [], 0
    for shape, dtype in specs:
        total = -(-total // 8) * 8  # every view starts 8-byte aligned
        offsets.append(total)
        total += math.prod(shape) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(max(total, 1))
    return [torch.empty(0, dtype=dtype).set_(storage, offset // dtype.itemsize, shape)
            for (shape, dtype), offset in zip(specs, offsets)]


def _unit(stored: np.ndarray, as_stored: bool) -> torch.Tensor:
    """Stored images (uint8 or float16) as float32 in [0, 1] (or as stored), with the channel
    axis added. numpy converts: single-threaded, where torch's 2-thread ops fought zarr's thread."""
    dtype = torch.from_numpy(stored[:0]).dtype if as_stored else torch.float32
    out = _new_tensor((*stored.shape[:-2], 1, *stored.shape[-2:]), dtype)
    _convert(stored, out.numpy().reshape(stored.shape))
    return out


def _convert(stored: np.ndarray, out: np.ndarray) -> None:
    """Stored images into ``out``: as stored, or float32 in [0, 1] (``samples.to_unit``)."""
    if out.dtype == stored.dtype:
        out[...] = stored
    else:
        to_unit(stored, out=out)


def _mask(stored: np.ndarray) -> torch.Tensor:
    """Stored masks {0, 1} as bool with the channel axis added (anomalib's ``gt_mask``)."""
    out = _new_tensor((*stored.shape[:-2], 1, *stored.shape[-2:]), torch.bool)
    np.not_equal(stored, 0, out=out.numpy().reshape(stored.shape))
    return out


def _batch(parts: list[tuple[dict[str, np.ndarray], np.ndarray]], as_stored: bool) -> dict[str, Any]:
    """What ``default_collate`` makes of the items at ``rows`` of each read window, in order:
    images and masks converted row by row straight into the (shared-memory) batch tensors."""
    n = sum(len(rows) for _, rows in parts)
    stored = parts[0][0]["images"]
    dtype = torch.from_numpy(stored[:0]).dtype if as_stored else torch.float32
    images = _new_tensor((n, 1, *stored.shape[-2:]), dtype)
    masks = _new_tensor((n, 1, *stored.shape[-2:]), torch.bool)
    # Labels and indices share one block: a caller who keeps them keeps only them (images and
    # masks in that block would keep every kept batch's images alive).
    labels, index = _new_tensors([((n,), torch.int64), ((n,), torch.int64)])
    names = gather_rows(parts, images.numpy()[:, 0], masks.numpy()[:, 0], labels.numpy(), index.numpy())
    return {"image": images, "gt_mask": masks, "gt_label": labels, **names, "index": index}


def gather_rows(parts: list[tuple[dict[str, np.ndarray], np.ndarray]], images: np.ndarray, masks: np.ndarray,
                labels: np.ndarray, index: np.ndarray) -> dict[str, list[str]]:
    """Write the rows of a batch into these arrays (their first ``n`` rows): images converted
    to ``images.dtype`` (uint8 to float32 in [0, 1]), masks to bool. Returns the batch's
    ``task`` and ``source_id`` lists."""
    def gather(key: str) -> np.ndarray:
        return np.concatenate([d[key][rows] for d, rows in parts])

    stored = gather("images")
    k = len(stored)
    _convert(stored, images[:k])
    np.not_equal(gather("masks"), 0, out=masks[:k])

    labels[:k] = gather("labels")
    index[:k] = gather("index")
    return {"task": [str(t) for t in gather("tasks")], "source_id": [str(s) for s in gather("source_ids")]}


def _item(d: dict[str, np.ndarray], k: int, as_stored: bool) -> dict[str, Any]:
    return {"image": _unit(d["images"][k], as_stored), "gt_mask": _mask(d["masks"][k]),
            "gt_label": torch.tensor(int(d["labels"][k]), dtype=torch.int64), "task": str(d["tasks"][k]),
            "source_id": str(d["source_ids"][k]), "index": int(d["index"][k])}


class CachedDataset(_Split):
    """Samples of a cache made by ``fmclip generate``; opens the store lazily in each worker.

    Example:
        >>> ds = CachedDataset("cache.zarr", seed=0, batch_size=64)          # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=None, num_workers=2,
        ...                     multiprocessing_context="spawn")              # doctest: +SKIP
        >>> for epoch in range(3):                                            # doctest: +SKIP
        ...     ds.set_epoch(epoch)
        ...     for batch in loader: ...        # batch["image"]: (64, 1, H, W) float32
    """

    def __init__(self, path: str | Path, *, shuffle: bool = True, seed: int = 0, window: int = 256,
                 block: int = 64, batch_size: int | None = None, drop_last: bool = False,
                 as_stored: bool = False, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(shuffle=shuffle, seed=seed, window=window, block=block, batch_size=batch_size,
                         drop_last=drop_last, as_stored=as_stored, rank=rank, world_size=world_size)
        from .cache import CacheError, finished_shards, read_settings

        self.path = str(path)
        settings = read_settings(self.path)
        if settings is None:
            raise FileNotFoundError(f"{self.path}: not an fmclip cache")
        done, total = len(finished_shards(self.path)), n_shards(settings["samples"], settings["shard_size"])
        if done < total:  # it would report its full length and fail, or read fill values, mid-epoch
            raise CacheError(f"{self.path}: unfinished cache ({done} of {total} shards written); run the same "
                             "fmclip generate command again to finish it")
        self.samples, self.shard_size = settings["samples"], settings["shard_size"]
        self._size, self._dtype = int(settings["size"]), settings["dtype"]
        self._arrays: dict[str, Any] | None = None
        self._meta: dict[int, dict[str, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"], state["_meta"] = None, {}  # each worker opens its own
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:
            import zarr

            # Few threads per worker: the DataLoader workers are the parallelism.
            zarr.config.set({"async.concurrency": 4, "threading.max_workers": 1})
            group = zarr.open_group(self.path, mode="r")
            self._arrays = {k: group[k] for k in FIELDS}
        return self._arrays

    def stored_layout(self) -> tuple[tuple[int, int], np.dtype]:
        return (self._size, self._size), np.dtype(self._dtype)

    def _shard_meta(self, shard: int) -> dict[str, np.ndarray]:
        # Labels and names are small: read a whole shard's once (one chunk each) and keep the
        # last few (a worker's part of the epoch walks the shards one after another).
        if shard not in self._meta:
            a = self._open()
            start, stop = shard_range(shard, self.samples, self.shard_size)
            if len(self._meta) >= 4:
                self._meta.pop(next(iter(self._meta)))
            self._meta[shard] = {k: a[k][start:stop] for k in ("labels", "tasks", "source_ids")}
        return self._meta[shard]

    def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        a = self._open()
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("labels", "tasks", "source_ids")}
        n, hw = len(indices), (self._size, self._size)
        rows = {"images": np.empty((n, *hw), self._dtype), "masks": np.empty((n, *hw), np.uint8)}
        at = 0
        for start, stop in runs(indices, self.shard_size):
            for name, target in rows.items():
                target[at:at + stop - start] = a[name][start:stop]
            at += stop - start
            for shard in range(start // self.shard_size, (stop - 1) // self.shard_size + 1):
                first, last = shard_range(shard, self.samples, self.shard_size)
                lo, hi = max(start, first), min(stop, last)
                meta, off = self._shard_meta(shard), first
                for k in ("labels", "tasks", "source_ids"):
                    parts[k].append(meta[k][lo - off:hi - off])
        out = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
        out.update(rows, index=np.asarray(indices, dtype=np.int64))
        return out


class SynthDataset(_Split):
    """The same samples as ``fmclip generate`` would cache, synthesised on the fly: sample i
    uses seed ``spawn_seeds(seed, samples)[i]`` and is stored-form (``dtype`` uint8 or float16)
    before conversion, so it equals sample i of a cache made with the same settings exactly.

    Example:
        >>> ds = SynthDataset("prepared/brainmri", samples=10_000, seed=0)   # doctest: +SKIP
        >>> next(iter(ds))["image"].shape                                    # doctest: +SKIP
        torch.Size([1, 224, 224])
    """

    def __init__(self, data: str | Path, *, samples: int, seed: int, size: int = 224, config: Any = None,
                 support: str | None = None, dtype: str = "uint8", shard_size: int = 256,
                 shuffle: bool = True, window: int = 1, block: int = 64, batch_size: int | None = None,
                 drop_last: bool = False, as_stored: bool = False, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__(shuffle=shuffle, seed=seed, window=window, block=block, batch_size=batch_size,
                         drop_last=drop_last, as_stored=as_stored, rank=rank, world_size=world_size)
        import synth

        from .sources import source_spec

        self.spec = source_spec(data, size=size, support=support)
        self.samples, self.shard_size, self.dtype = int(samples), int(shard_size), dtype
        self.config = json.dumps((config or synth.SynthesisConfig()).to_dict())
        self.seeds = np.array(synth.spawn_seeds(seed, samples), dtype=np.uint64)
        self._sources: Any = None
        self._config: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sources"], state["_config"] = None, None
        return state

    def stored_layout(self) -> tuple[tuple[int, int], np.dtype]:
        return (self.spec["size"], self.spec["size"]), np.dtype(self.dtype)

    def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        import synth

        from .samples import make_samples
        from .sources import SourceSet

        if self._sources is None:
            self._sources = SourceSet(self.spec)
            self._config = synth.SynthesisConfig.from_dict(json.loads(self.config))
        made = make_samples(self._sources, self._config, [int(self.seeds[i]) for i in indices], self.dtype,
                            records=False)
        out = {k: made[k] for k in FIELDS}
        out["index"] = np.asarray(indices, dtype=np.int64)
        return out
