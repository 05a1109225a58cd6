"""Training batches from a cache, and the split of its samples into training and validation.

A run is a stream of global batches. Pass p over the training samples follows the loader's shard-aware
order (``epochs.epoch_order`` with epoch p) with the samples shuffled inside windows of whole batches, so
a window's samples are read together. Global batch b is pass ``b // per_pass``'s batch ``b % per_pass``;
DDP rank r of W takes rows ``[r B/W, (r+1) B/W)`` of it, and DataLoader worker w of n makes the batches
``b = start + w, start + w + n, ...``, which the DataLoader hands out round robin in that order. So the
samples of every step depend on neither the rank count nor the worker count (a 2-rank run sees, step by
step, the samples of a 1-process run with the same global batch), and a run resumed at batch b sees what
the uninterrupted run saw.

Example:
    >>> ds = CachedDataset("cache.zarr")                                              # doctest: +SKIP
    >>> train, val = split_samples(tasks_of("cache.zarr"), val_tasks=[], val_fraction=0.05,
    ...                            val_samples=256, seed=0)                           # doctest: +SKIP
    >>> batches = TrainBatches(ds, train, batch_size=8, seed=0, start=0, stop=1000)   # doctest: +SKIP
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .epochs import _batch, epoch_order
from .loader import CachedDataset

READ_WINDOW = 256  # samples read together (four of the cache's 64-sample chunks)


class SplitError(ValueError):
    """Training and validation samples cannot be chosen as asked."""


def expand_tasks(names: list[str]) -> list[str]:
    """Task families (``density``) and task names (``poisson``) as task names; identity cannot be held out."""
    import synth

    tasks: list[str] = []
    for name in names:
        if name == "identity":
            raise SplitError("identity cannot be held out: its samples are the normal class of every validation")
        if name in synth.FAMILIES:
            tasks += synth.FAMILIES[name]
        elif any(name in members for members in synth.FAMILIES.values()):
            tasks.append(name)
        else:
            known = sorted({*synth.FAMILIES} - {"identity"} | {t for f in synth.FAMILIES.values() for t in f})
            raise SplitError(f"unknown task or family {name!r} in train.val_tasks; known: {', '.join(known)}")
    return tasks


def tasks_of(path: str) -> np.ndarray:
    """Every sample's task name, in sample order."""
    import zarr

    return np.array(zarr.open_group(path, mode="r")["tasks"][:].tolist(), dtype=str)


def split_samples(tasks: np.ndarray, *, val_tasks: list[str], val_fraction: float, val_samples: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) sample indices, sorted and disjoint.

    With ``val_tasks``, the held-out tasks never train: validation takes up to ``val_samples / 2`` of
    their samples and as many identity samples (at most half of them), and training takes the rest of
    the other tasks. Otherwise validation is a seeded ``val_fraction`` of all samples, at most
    ``val_samples``.
    """
    rng = np.random.default_rng([seed, 0x7A1])
    n = len(tasks)
    if val_tasks:
        held = np.isin(tasks, expand_tasks(val_tasks))
        if not held.any():
            raise SplitError(f"no sample of the cache has a task of train.val_tasks {val_tasks}")
        normal = np.flatnonzero(tasks == "identity")
        anomalous = rng.permutation(np.flatnonzero(held))[: val_samples - val_samples // 2]
        normals = rng.permutation(normal)[: min(len(anomalous), len(normal) // 2)]
        val = np.sort(np.concatenate([anomalous, normals]))
        train = np.setdiff1d(np.flatnonzero(~held), val)
    else:
        count = min(val_samples, int(round(n * val_fraction)))
        val = np.sort(rng.choice(n, count, replace=False)) if count else np.zeros(0, np.int64)
        train = np.setdiff1d(np.arange(n), val)
    return train.astype(np.int64), val.astype(np.int64)


def read_samples(dataset: CachedDataset, indices: np.ndarray) -> dict[str, Any]:
    """The samples at ``indices`` (in that order) as one batch, as the loader makes them."""
    order = np.argsort(indices, kind="stable")
    d = dataset._read(np.asarray(indices)[order])  # sorted: whole runs of chunks
    rows = np.empty_like(order)
    rows[order] = np.arange(len(order))
    return _batch([(d, rows)], as_stored=False)


class TrainBatches(IterableDataset):
    """Global batches ``[start, stop)`` of a run over ``indices`` of ``dataset``; this rank's rows of each.

    Use with ``DataLoader(batches, batch_size=None, num_workers=n)`` (spawned workers for CUDA).
    """

    def __init__(self, dataset: CachedDataset, indices: np.ndarray, *, batch_size: int, seed: int, start: int,
                 stop: int, rank: int = 0, world_size: int = 1, window: int = READ_WINDOW) -> None:
        if batch_size % world_size:
            raise SplitError(f"train.batch_size {batch_size} must be a multiple of the {world_size} DDP ranks")
        if len(indices) < batch_size:
            raise SplitError(f"{len(indices)} training samples cannot fill one batch of {batch_size}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.is_train = np.zeros(dataset.samples, bool)
        self.is_train[indices] = True
        self.n_train = int(self.is_train.sum())
        self.per_pass = self.n_train // batch_size  # the last partial batch of a pass is dropped
        self.window = max(batch_size, window // batch_size * batch_size)

    def pass_order(self, p: int) -> np.ndarray:
        """Pass ``p``'s training samples in batch order (``per_pass`` whole batches)."""
        ds = self.dataset
        order = epoch_order(ds.samples, ds.shard_size, ds.block, self.seed, p, True)
        order = order[self.is_train[order]]
        rng = np.random.default_rng([self.seed, p, 0xB47])
        for at in range(0, len(order), self.window):
            rng.shuffle(order[at:at + self.window])
        return order[: self.per_pass * self.batch_size]

    def _rows(self, order: np.ndarray, k: int) -> np.ndarray:
        """This rank's samples of batch ``k`` of a pass."""
        share = self.batch_size // self.world_size
        at = k * self.batch_size + self.rank * share
        return order[at:at + share]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        per_window = self.window // self.batch_size
        # This worker's batches, grouped by (pass, read window): each group's samples are read together.
        groups = itertools.groupby(range(self.start + worker, self.stop, workers),
                                   key=lambda b: (b // self.per_pass, b % self.per_pass // per_window))
        current, order = -1, np.zeros(0, np.int64)
        for (p, _), batches in groups:
            if p != current:
                current, order = p, self.pass_order(p)
            rows = [self._rows(order, b % self.per_pass) for b in batches]
            wanted = np.concatenate(rows)
            ascending = np.sort(wanted)  # samples of a pass are distinct
            d = self.dataset._read(ascending)
            positions = np.searchsorted(ascending, wanted)
            for part in np.split(positions, np.cumsum([len(r) for r in rows])[:-1]):
                yield _batch([(d, part)], as_stored=False)
