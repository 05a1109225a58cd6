"""The task pool: draws a task by weight, samples its record, applies records."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .config import SynthesisConfig
from .records import ENGINE_VERSION, SynthesisRecord
from .tasks import TASKS, Context
from .tasks.draws import cumulative, weighted_index


class TaskPool:
    """Draws one task per sample with the configured probabilities (default: identity,
    structural, density and deformation families equally, original and enhanced variant
    equally) and runs it on a single channel-first image (C, *spatial).

    Example:
        >>> import numpy as np
        >>> from synth import TaskPool
        >>> pool = TaskPool()
        >>> image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
        >>> out, mask, record = pool(image, seed=3)
        >>> out.shape, mask.shape, record.task in pool.task_names
        ((1, 64, 64), (64, 64), True)
    """

    def __init__(self, config: SynthesisConfig | None = None):
        self.config = config or SynthesisConfig()
        weights = [(n, w) for n, w in self.config.task_weights if w > 0]
        self.task_names = [n for n, _ in weights]
        p = np.array([w for _, w in weights], np.float64)
        self.probabilities = p / p.sum()
        self._cumulative = cumulative(self.probabilities)
        self.tasks = {name: TASKS[name]() for name in TASKS}

    def sample(self, image: np.ndarray, seed: int, foreground=None, source=None, task: str | None = None,
               source_id: str | None = None) -> tuple[SynthesisRecord, Context]:
        """Draw a record for ``image`` from ``seed`` (deterministic)."""
        rng = np.random.Generator(np.random.PCG64(seed))  # default_rng(seed), without its dispatch
        name = task or self.task_names[weighted_index(rng, self._cumulative)]
        if name not in self.tasks:
            raise ValueError(f"unknown task {name!r}; known tasks: {sorted(self.tasks)}")
        ctx = Context(self.config, image.shape[1:], foreground, source)
        params = self.tasks[name].sample(rng, image, ctx)
        record = SynthesisRecord(name, seed, image.shape[1:], params, self.config.modality, source_id)
        return record, ctx

    def apply(self, image: np.ndarray, record: SynthesisRecord, foreground=None, source=None,
              ctx: Context | None = None, out=None, mask=None) -> tuple[np.ndarray, np.ndarray]:
        """Apply a record to ``image``; returns (anomalous image, mask)."""
        if tuple(image.shape[1:]) != tuple(record.spatial_shape):
            raise ValueError(f"record was made for spatial shape {record.spatial_shape}; "
                             f"the image has {tuple(image.shape[1:])}")
        if record.engine_version != ENGINE_VERSION:
            raise ValueError(f"record made by synthesis engine {record.engine_version}; this is "
                             f"{ENGINE_VERSION}, which may not reproduce it exactly")
        if ctx is None:
            config = self.config
            if record.modality != config.modality:
                config = _with_modality(config, record.modality)
            ctx = Context(config, image.shape[1:], foreground, source)
        params = record.params
        return self.tasks[record.task].apply(image, params, ctx, out, mask)

    def __call__(self, image, seed: int, foreground=None, source=None, task=None, source_id=None,
                 out=None, mask=None):
        """Sample and apply; ``out`` (C, *spatial, float32) and ``mask`` (*spatial, float32 or
        uint8) are optional buffers to write into."""
        record, ctx = self.sample(image, seed, foreground, source, task, source_id)
        out, mask = self.apply(image, record, foreground, source, ctx, out, mask)
        return out, mask, record


@functools.lru_cache(maxsize=32)
def _with_modality(config: SynthesisConfig, modality: str) -> SynthesisConfig:
    return dataclasses.replace(config, modality=modality)


@functools.lru_cache(maxsize=32)
def _pool_for_equal(config: SynthesisConfig | None) -> TaskPool:
    return TaskPool(config)


# Pools by the identity of their config object (kept alive here, so that its id stays its own):
# hashing a config's fields costs 0.8 us a call, and a config equal to a cached one but not the
# same object (the cache's workers load theirs from the store) another 0.8 to compare them.
_POOLS: dict[int, tuple[SynthesisConfig | None, TaskPool]] = {}


def pool_for(config: SynthesisConfig | None) -> TaskPool:
    """A cached pool per configuration (pools hold no per-sample state); equal configs share one."""
    hit = _POOLS.get(id(config))
    if hit is not None:  # its config is held in the entry, so no other object has this id
        return hit[1]
    pool = _pool_for_equal(config)
    if len(_POOLS) >= 32:
        _POOLS.clear()
    _POOLS[id(config)] = (config, pool)
    return pool
