"""``BatchLoader``: the batches of a ``CachedDataset`` or ``SynthDataset`` (with ``batch_size``)
from DataLoader workers through a ring of shared-memory slots made once, not new shared memory
per batch.

Why: with ``DataLoader(ds, batch_size=None)`` every batch is new shared memory, and on the
machines we measure (VMs) a fresh page costs about 3 us: 2.5 ms per 3.2 MB image block, more
than reading and decompressing the batch. Each block's file descriptor also costs a socket round
trip. Here each worker writes its batches, as stored (uint8 or float16), into slots of a ring
made when the loader is made and handed to the workers when they start; the DataLoader carries
only the slot's number and the names. The main process copies the slot into tensors of its own
(converting to float32 unless ``as_stored``; into pinned memory with ``pin_memory``, as the
DataLoader's pinning copies each batch anyway) and frees the slot, so a batch you keep is yours.

A worker may not reuse a slot before the main process has copied it out: a semaphore per worker
counts its free slots. Each worker has ``prefetch_factor + 2`` slots: the batches the DataLoader
lets it have in flight, the one the main process is copying, and the one it is writing. It
waits only when the main process is behind (or, at an epoch's end, when the DataLoader hands
the finished workers' share of requests to the last one). Waiting cannot deadlock: the main
process copies each worker's batches in order, so the slots a worker waits for are freed by
copies that come before anything the main process waits for from that worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .loader import _convert, _Split, gather_rows


class _Ring:
    """Slots of whole batches in shared memory: ``images``/``masks`` (workers, slots, B, H, W) as
    stored and bool, ``labels``/``index`` (workers, slots, B) int64, and a semaphore per worker
    counting its free slots. Pickled to the workers when they start (torch passes the blocks'
    file descriptors then, once)."""

    def __init__(self, workers: int, slots: int, batch: int, hw: tuple[int, int], dtype: np.dtype,
                 context: Any) -> None:
        self.slots = slots
        shape = (workers, slots, batch, *hw)
        self.images = torch.from_numpy(np.zeros(0, dtype)).new_zeros(shape).share_memory_()
        self.masks = torch.zeros(shape, dtype=torch.bool).share_memory_()
        self.labels = torch.zeros(shape[:3], dtype=torch.int64).share_memory_()
        self.index = torch.zeros(shape[:3], dtype=torch.int64).share_memory_()
        self.free = [context.Semaphore(slots) for _ in range(workers)]


class _RingWorker(IterableDataset):
    """What each DataLoader worker iterates: its part of the dataset's next pass, each batch
    written into its next ring slot; yields ``(worker, slot, n, names)``."""

    def __init__(self, dataset: _Split, ring: _Ring) -> None:
        self.dataset, self.ring = dataset, ring

    def __iter__(self) -> Iterator[tuple[int, int, int, dict[str, list[str]]]]:
        info = get_worker_info()
        if info is None:
            raise RuntimeError("BatchLoader's ring is for DataLoader workers; num_workers=0 reads in-process")
        ring, worker = self.ring, info.id
        free = ring.free[worker]
        # A pass that the main process abandoned (a loop left early) dropped the batches in flight
        # without copying them: their slots are free now, so the count starts full again (the
        # main process releases nothing between passes). Drained and refilled, as macOS has no
        # get_value().
        while free.acquire(block=False):
            pass
        for _ in range(ring.slots):
            free.release()
        images, masks = ring.images[worker].numpy(), ring.masks[worker].numpy()
        labels, index = ring.labels[worker].numpy(), ring.index[worker].numpy()
        parent = os.getppid()
        for k, parts in enumerate(self.dataset.next_pass_batches()):
            slot = k % ring.slots
            while not free.acquire(timeout=1.0):
                if os.getppid() != parent:  # the main process is gone: nobody will free a slot
                    return
            n = sum(len(rows) for _, rows in parts)
            names = gather_rows(parts, images[slot], masks[slot], labels[slot], index[slot])
            yield worker, slot, n, names


class BatchLoader:
    """Batches of a dataset made with ``batch_size`` from ``num_workers`` spawned DataLoader
    workers through shared-memory slots made once (see the module's docstring): the same
    batches, in the same order, as ``DataLoader(ds, batch_size=None, num_workers=W)``, faster.

    Example:
        >>> ds = CachedDataset("cache.zarr", seed=0, batch_size=64)          # doctest: +SKIP
        >>> loader = BatchLoader(ds, num_workers=2)                           # doctest: +SKIP
        >>> for epoch in range(3):                                            # doctest: +SKIP
        ...     ds.set_epoch(epoch)
        ...     for batch in loader: ...        # batch["image"]: (64, 1, H, W) float32
    """

    def __init__(self, dataset: _Split, *, num_workers: int = 2, prefetch_factor: int = 2,
                 persistent_workers: bool = True, pin_memory: bool = False,
                 multiprocessing_context: str = "spawn", timeout: float = 0, worker_init_fn: Any = None) -> None:
        if dataset.batch_size is None:
            raise ValueError("BatchLoader needs a dataset made with batch_size=B (it moves whole batches)")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, not {num_workers}")
        self.dataset, self.num_workers = dataset, int(num_workers)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self._loader: DataLoader | None = None
        if self.num_workers:
            hw, dtype = dataset.stored_layout()
            self._hw = hw
            self._ring = _Ring(self.num_workers, prefetch_factor + 2, int(dataset.batch_size),
                               hw, dtype, mp.get_context(multiprocessing_context))
            self._loader = DataLoader(_RingWorker(dataset, self._ring), batch_size=None, num_workers=self.num_workers,
                                      prefetch_factor=prefetch_factor, persistent_workers=persistent_workers,
                                      multiprocessing_context=multiprocessing_context, timeout=timeout,
                                      worker_init_fn=worker_init_fn)

    def __len__(self) -> int:
        """Batches per epoch on this rank: each worker's part of the samples is cut into
        batches of its own (so with W workers up to W batches are short)."""
        n, parts, size = len(self.dataset), max(self.num_workers, 1), int(self.dataset.batch_size)
        counts = [(w + 1) * n // parts - w * n // parts for w in range(parts)]
        return sum(c // size if self.dataset.drop_last else -(-c // size) for c in counts)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._loader is None:
            yield from self.dataset
            return
        ring = self._ring
        for worker, slot, n, names in self._loader:
            try:
                image, mask = self._copy_out(ring.images[worker, slot, :n], ring.masks[worker, slot, :n])
                labels = ring.labels[worker, slot, :n].clone()
                index = ring.index[worker, slot, :n].clone()
            finally:  # a failed copy must not leave the worker waiting for this slot
                ring.free[worker].release()
            yield {"image": image, "gt_mask": mask, "gt_label": labels, **names, "index": index}

    def _copy_out(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's images (as the dataset's ``as_stored`` asks) and masks, in new tensors with
        the channel axis added. numpy converts: single-threaded, so the main process takes one
        core, not torch's intra-op threads from the workers."""
        n = images.shape[0]
        dtype = images.dtype if self.dataset.as_stored else torch.float32
        image = torch.empty((n, 1, *self._hw), dtype=dtype, pin_memory=self.pin_memory)
        mask = torch.empty((n, 1, *self._hw), dtype=torch.bool, pin_memory=self.pin_memory)
        _convert(images.numpy(), image.numpy()[:, 0])
        mask.numpy()[:, 0] = masks.numpy()
        return image, mask
