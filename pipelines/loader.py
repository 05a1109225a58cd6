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
from pathlib import Path
from typing import Any

import numpy as np

from .cache import (
    CacheError,
    changed_files,
    finished_shards,
    n_shards,
    read_marker,
    read_settings,
    shard_range,
)
from .epochs import FIELDS, _Split, runs


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
        self.path = str(path)
        settings = read_settings(self.path)
        if settings is None:
            raise FileNotFoundError(f"{self.path}: not an fmclip cache")
        done, total = len(finished_shards(self.path)), n_shards(settings["samples"], settings["shard_size"])
        if done < total:  # it would report its full length and fail, or read fill values, mid-epoch
            raise CacheError(f"{self.path}: unfinished cache ({done} of {total} shards written); run the same "
                             "fmclip generate command again to finish it")
        for shard in range(total):  # a missing chunk file would read as zeros: label 0, a black image
            missing = [key for key, digest in read_marker(self.path, shard)["crc32c"].items()
                       if digest is not None and not (Path(self.path) / key).is_file()]
            if missing:
                raise CacheError(f"{self.path}: damaged cache, shard {shard} lacks {', '.join(missing)}; "
                                 f"check it with fmclip verify {self.path}")
        self.samples, self.shard_size = settings["samples"], settings["shard_size"]
        self._size, self._dtype = int(settings["size"]), settings["dtype"]
        self._arrays: dict[str, Any] | None = None
        self._meta: dict[int, dict[str, np.ndarray]] = {}
        self._checked: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"], state["_meta"], state["_checked"] = None, {}, set()  # each worker opens its own
        return state

    def _check(self, shard: int) -> None:
        """The shard's files are those generate wrote (their CRC-32C against its marker), checked once
        per worker before its first read: zarr checks each chunk, but a chunk moved from another
        shard or file is intact and would be read as this one."""
        if shard in self._checked:
            return
        bad = changed_files(self.path, shard, read_marker(self.path, shard))
        if bad:
            raise CacheError(f"{self.path}: shard {shard} does not hold what fmclip generate wrote "
                             f"({', '.join(bad)}); check it with fmclip verify {self.path}")
        self._checked.add(shard)

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
            self._check(shard)
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
            for shard in range(start // self.shard_size, (stop - 1) // self.shard_size + 1):
                first, last = shard_range(shard, self.samples, self.shard_size)
                lo, hi = max(start, first), min(stop, last)
                meta, off = self._shard_meta(shard), first  # checks the shard first
                for k in ("labels", "tasks", "source_ids"):
                    parts[k].append(meta[k][lo - off:hi - off])
            for name, target in rows.items():
                target[at:at + stop - start] = a[name][start:stop]
            at += stop - start
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
