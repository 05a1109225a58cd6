"""torch Datasets over synthetic training sets: from a cache (``CachedDataset``) or made on the
fly (``SynthDataset``), with one item interface (anomalib's names)::

    {"image": float32 (1, H, W) in [0, 1], "gt_mask": float32 (1, H, W) in {0, 1},
     "gt_label": int64 (), "task": str, "source_id": str, "index": int}

Both are iterable datasets that split one epoch's order across DDP ranks and DataLoader workers
so that every sample comes exactly once per epoch (ranks get counts that differ by at most
one). The order is shard-aware: shards in random order, blocks of samples in random order
inside a shard, then a shuffle buffer of ``window`` samples; reads are one zarr call per run
of consecutive samples, which is what makes the cache fast. Call ``set_epoch(e)`` each epoch,
like ``DistributedSampler``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info


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
    for shard in rng.permutation(-(-samples // shard_size)):
        start, stop = shard * shard_size, min(samples, (shard + 1) * shard_size)
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
    samples: int
    shard_size: int

    def __init__(self, *, shuffle: bool, seed: int, window: int, block: int,
                 rank: int | None, world_size: int | None) -> None:
        self.shuffle, self.seed, self.window, self.block = shuffle, seed, window, block
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(split(np.arange(self.samples), self.rank, self.world_size))

    def my_indices(self) -> np.ndarray:
        """This rank's and this DataLoader worker's samples for the current epoch."""
        order = epoch_order(self.samples, self.shard_size, self.block, self.seed, self.epoch, self.shuffle)
        mine = split(order, self.rank, self.world_size)
        info = get_worker_info()
        return split(mine, info.id, info.num_workers) if info is not None else mine

    def _items(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        indices = self.my_indices()
        if not self.shuffle or self.window <= 1:
            yield from self._items(indices)
            return
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, info.id if info else 0])
        buffer: list[dict[str, Any]] = []
        for item in self._items(indices):
            buffer.append(item)
            if len(buffer) >= self.window:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
        rng.shuffle(buffer)  # type: ignore[arg-type]
        yield from buffer


def _item(image: np.ndarray, mask: np.ndarray, label: int, task: str, source_id: str, index: int) -> dict[str, Any]:
    img = torch.from_numpy(np.ascontiguousarray(image)[None])
    img = img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()
    return {"image": img, "gt_mask": torch.from_numpy(np.ascontiguousarray(mask)[None]).float(),
            "gt_label": torch.tensor(int(label), dtype=torch.int64), "task": task, "source_id": source_id,
            "index": int(index)}


class CachedDataset(_Split):
    """Samples of a cache made by ``fmclip generate``; opens the store lazily in each worker.

    Example:
        >>> ds = CachedDataset("cache.zarr", seed=0)                         # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=32, num_workers=2,
        ...                     multiprocessing_context="spawn")              # doctest: +SKIP
        >>> for epoch in range(3):                                            # doctest: +SKIP
        ...     ds.set_epoch(epoch)
        ...     for batch in loader: ...
    """

    def __init__(self, path: str | Path, *, shuffle: bool = True, seed: int = 0, window: int = 256,
                 block: int = 64, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(shuffle=shuffle, seed=seed, window=window, block=block, rank=rank, world_size=world_size)
        from .cache import read_settings

        self.path = str(path)
        settings = read_settings(self.path)
        if settings is None:
            raise FileNotFoundError(f"{self.path}: not an fmclip cache")
        self.samples, self.shard_size = settings["samples"], settings["shard_size"]
        self._arrays: dict[str, Any] | None = None
        self._meta: tuple[int, dict[str, np.ndarray]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"], state["_meta"] = None, None  # each worker opens its own handles
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:
            import zarr

            # Few threads per worker: the DataLoader workers are the parallelism.
            zarr.config.set({"async.concurrency": 4, "threading.max_workers": 1})
            group = zarr.open_group(self.path, mode="r")
            self._arrays = {k: group[k] for k in ("images", "masks", "labels", "tasks", "source_ids")}
        return self._arrays

    def _shard_meta(self, shard: int) -> dict[str, np.ndarray]:
        # Labels and names are small: read a whole shard's once (one chunk each) and keep it.
        if self._meta is None or self._meta[0] != shard:
            a = self._open()
            start, stop = shard * self.shard_size, min(self.samples, (shard + 1) * self.shard_size)
            self._meta = (shard, {k: a[k][start:stop] for k in ("labels", "tasks", "source_ids")})
        return self._meta[1]

    def _items(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        a = self._open()
        limit = min(self.block, self.shard_size)
        for start, stop in runs(indices, limit):
            images, masks = a["images"][start:stop], a["masks"][start:stop]
            for k, i in enumerate(range(start, stop)):
                shard = i // self.shard_size
                meta, off = self._shard_meta(shard), i - shard * self.shard_size
                yield _item(images[k], masks[k], meta["labels"][off], str(meta["tasks"][off]),
                            str(meta["source_ids"][off]), i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Random access to one sample (slower than iterating: one read per item)."""
        a = self._open()
        return _item(a["images"][index], a["masks"][index], a["labels"][index], str(a["tasks"][index]),
                     str(a["source_ids"][index]), index)


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
                 shuffle: bool = True, window: int = 1, block: int = 64, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__(shuffle=shuffle, seed=seed, window=window, block=block, rank=rank, world_size=world_size)
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        import synth

        from .cache import make_samples
        from .sources import SourceSet

        if self._sources is None:
            self._sources = SourceSet(self.spec)
            self._config = synth.SynthesisConfig.from_dict(json.loads(self.config))
        d = make_samples(self._sources, self._config, [int(self.seeds[index])], self.dtype)
        return _item(d["images"][0], d["masks"][0], d["labels"][0], str(d["tasks"][0]), str(d["source_ids"][0]), index)

    def _items(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        for i in indices.tolist():
            yield self[i]
