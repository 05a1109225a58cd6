"""Making samples: which source image each seed starts from, the synthesis, and the stored form.

One place for what a sample is, shared by the cache writer (``cache.write_shard``), ``verify``'s
replay and the on-the-fly dataset (``loader.SynthDataset``)::

    data = make_samples(SourceSet(spec), config, seeds, "uint8")   # images (n, H, W) uint8, masks, ...
    batch = to_unit(data["images"])                                 # float32 in [0, 1]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

STORED_TYPES = ("uint8", "float16")
_SOURCE_KEY = 0x5EED  # the source draw's stream, spawned off the sample's seed


def source_indices(seeds: Sequence[int], n_sources: int) -> np.ndarray:
    """The source image of each sample (int64), from its seed alone: drawn from a stream spawned off
    the seed (not the seed's own stream, which synthesis uses),
    ``default_rng(SeedSequence(seed, spawn_key=(0x5EED,))).integers(n_sources)``.

    Example:
        >>> source_indices([1, 2, 3], 5).tolist() == source_indices([1, 2, 3], 5).tolist()
        True
    """
    return np.array([np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SOURCE_KEY,)))
                     .integers(n_sources) for seed in seeds], np.int64)


def to_stored(image: np.ndarray, dtype: str) -> np.ndarray:
    """The stored form of float images in [0, 1]: uint8 ``rint(image * 255)`` (clipped), or float16.

    Example:
        >>> to_stored(np.array([0.0, 0.5, 1.2], np.float32), "uint8").tolist()
        [0, 128, 255]
    """
    if dtype == "uint8":  # OpenCV's saturating cast rounds half to even, as np.rint: one pass, not four
        image = np.ascontiguousarray(image, np.float32)
        return cv2.multiply(image.reshape(1, -1), 255.0, dtype=cv2.CV_8U).reshape(image.shape)
    if dtype == "float16":
        return np.asarray(image, np.float32).astype(np.float16)
    raise ValueError(f"unknown stored type {dtype!r}; choose one of {', '.join(STORED_TYPES)}")


def to_unit(stored: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stored images back as float32 in [0, 1] (uint8 divided by 255; float16 widened), into ``out``
    (float32, the same shape) when given: the one inverse of :func:`to_stored`.

    Example:
        >>> to_unit(np.array([0, 255], np.uint8)).tolist()
        [0.0, 1.0]
    """
    if out is None:
        out = np.empty(stored.shape, np.float32)
    out[...] = stored
    if stored.dtype == np.uint8:
        np.divide(out, np.float32(255), out=out)
    return out


def make_samples(sources: Any, config: Any, seeds: Sequence[int], dtype: str, records: bool = True) -> dict[str, Any]:
    """Synthesise the samples with these seeds from ``sources`` (a :class:`~pipelines.sources.SourceSet`):
    images (n, H, W) in stored form, masks uint8 {0, 1}, labels, seeds, source indices, tasks, source
    ids and (unless ``records`` is False) each sample's synthesis record as JSON."""
    import synth

    chosen = source_indices(seeds, len(sources)).tolist()
    n, size = len(seeds), sources.size
    images = np.empty((n, size, size), np.dtype(dtype))
    masks = np.empty((n, size, size), np.uint8)
    made = []
    for i, (seed, src) in enumerate(zip(seeds, chosen)):
        image, foreground = sources.read(src)
        result, mask, record = synth.synthesize(image, rng=int(seed), foreground=foreground, config=config,
                                                source_id=sources.source_id(src))
        images[i] = to_stored(result, dtype)
        masks[i] = mask
        made.append(record)
    out: dict[str, Any] = {
        "images": images, "masks": masks,
        "labels": masks.reshape(n, -1).any(axis=1).astype(np.uint8),
        "seeds": np.array(seeds, np.uint64),
        "source_index": np.array(chosen, np.int32),
        "tasks": np.array([r.task for r in made], dtype=object),
        "source_ids": np.array([sources.source_id(src) for src in chosen], dtype=object),
    }
    if records:
        out["records"] = np.array([r.to_json() for r in made], dtype=object)
    return out
