"""The epoch machinery the datasets of :mod:`pipelines.loader` share: the shard-aware epoch order, its
split across DDP ranks and DataLoader workers, ``set_epoch`` semantics, and the conversion of read samples
into items or whole batches (anomalib's names), made in shared memory in DataLoader workers.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
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
    """What ``default_collate`` makes of the items at ``rows`` of each read window, in order: the
    rows gathered, then converted straight into the (shared-memory) batch tensors."""
    def gather(key: str) -> np.ndarray:
        return np.concatenate([d[key][rows] for d, rows in parts])

    n = sum(len(rows) for _, rows in parts)
    # Labels and indices share one block: a caller who keeps them keeps only them (images and
    # masks in that block would keep every kept batch's images alive).
    labels, index = _new_tensors([((n,), torch.int64), ((n,), torch.int64)])
    labels.numpy()[:] = gather("labels")
    index.numpy()[:] = gather("index")
    return {"image": _unit(gather("images"), as_stored), "gt_mask": _mask(gather("masks")), "gt_label": labels,
            "task": [str(t) for t in gather("tasks")], "source_id": [str(s) for s in gather("source_ids")],
            "index": index}


def _item(d: dict[str, np.ndarray], k: int, as_stored: bool) -> dict[str, Any]:
    return {"image": _unit(d["images"][k], as_stored), "gt_mask": _mask(d["masks"][k]),
            "gt_label": torch.tensor(int(d["labels"][k]), dtype=torch.int64), "task": str(d["tasks"][k]),
            "source_id": str(d["source_ids"][k]), "index": int(d["index"][k])}
