"""What every task shares: the sampling context and the per-lesion loop.

A task has two steps. ``sample`` draws a JSON-ready parameter dict from a numpy
Generator (everything random, down to the seeds of noise fields, is in it);
``apply`` turns an image and those parameters into the anomalous image and its
mask, deterministically. Masks rendered while sampling are handed to ``apply``
through the context so they are not rendered twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..config import SynthesisConfig
from ..profiles import cuts_to_anatomy
from .masks import Lesion, render, sample_lesions

# The ground truth marks every pixel whose value changed by more than this: two grey levels of the
# stored 8-bit image. A blurred mask spreads density changes past the lesion's own mask.
CHANGE_TOLERANCE = 2.0 / 255.0


@dataclass
class Context:
    """What a task may look at besides the image and its parameters."""

    config: SynthesisConfig
    spatial_shape: tuple[int, ...]
    foreground: np.ndarray | None = None  # bool, spatial shape
    source: np.ndarray | None = None  # (C, *spatial) float32; None means the image itself
    lesions: list[Lesion] | None = None  # rendered while sampling (a cache, never required)
    foreground_points: list = field(default_factory=list)  # lazily built index of anatomy pixels
    _scale: float = field(init=False, default=1.0)

    def __post_init__(self):
        self._scale = min(self.spatial_shape) / float(self.config.reference_size)

    @property
    def scale(self) -> float:
        """Pixels at this image size per pixel at the reference size (224)."""
        return self._scale


class Task:
    """Base class: one lesion loop around ``sample_lesion``/``apply_lesion``."""

    name: ClassVar[str] = ""
    # mask kinds this task uses; None means the configured mix
    mask_kinds: ClassVar[dict[str, float] | None] = None
    # True for tasks whose outputs are interpolations of input values (warps, pastes): they
    # stay in [0, 1] without clipping
    keeps_range: ClassVar[bool] = False
    # False for tasks that use only a shape lesion's window and geometry, never its raster
    needs_raster: ClassVar[bool] = True

    def sample(self, rng: np.random.Generator, image: np.ndarray, ctx: Context) -> dict:
        count = int(rng.integers(1, ctx.config.max_anomalies + 1))
        lesions = self.sample_masks(rng, count, ctx)
        ctx.lesions = lesions
        return {"lesions": [{"mask": lesion.params, **self.sample_lesion(rng, image, lesion, ctx)}
                            for lesion in lesions]}

    def sample_masks(self, rng, count: int, ctx: Context) -> list[Lesion]:
        kinds = self.mask_kinds if self.mask_kinds is not None else dict(ctx.config.mask.kinds)
        return sample_lesions(rng, ctx.spatial_shape, ctx.foreground, ctx.config.mask, kinds, count,
                              ctx.foreground_points)

    def apply(self, image: np.ndarray, params: dict, ctx: Context, out: np.ndarray | None = None,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``params``; ``out`` (float32) and ``mask`` (float32 or uint8: the tasks write
        only 0 and 1) are optional buffers to write into (saves two full-size copies per sample
        on large volumes)."""
        out, mask = output_buffers(image, ctx, out, mask)
        windows = []
        for i, lesion_params in enumerate(params["lesions"]):
            lesion = (ctx.lesions[i] if ctx.lesions
                      else render(lesion_params["mask"], ctx.spatial_shape, self.needs_raster))
            touched = self.apply_lesion(out, lesion, lesion_params, ctx, mask)
            windows.append(touched)
            if not self.keeps_range:
                # only the lesion's window changed, so only it needs clipping (a full-image clip
                # costs more than a small lesion on a 3D volume)
                region = out[(slice(None),) + touched]
                np.clip(region, 0.0, 1.0, out=region)
        cut = ctx.foreground is not None and cuts_to_anatomy(ctx.config.modality)
        for touched in windows:
            settle(image, out, mask, touched, ctx.foreground if cut else None)
        return out, mask

    def sample_lesion(self, rng, image, lesion: Lesion, ctx: Context) -> dict:
        raise NotImplementedError

    def apply_lesion(self, out: np.ndarray, lesion: Lesion, params: dict, ctx: Context,
                     mask: np.ndarray) -> tuple[slice, ...]:
        """Modify ``out`` (C, *spatial) in place, mark the anomaly in ``mask`` and return the
        window (spatial slices) outside which nothing changed."""
        raise NotImplementedError


def output_buffers(image, ctx: Context, out, mask):
    """The output image (a copy of ``image``) and an empty mask, in the given buffers if any."""
    if out is None:
        out = image.astype(np.float32, copy=True)
    else:
        np.copyto(out, image)
    if mask is None:
        mask = np.zeros(ctx.spatial_shape, np.float32)
    else:
        mask.fill(0)
    return out, mask


def settle(image: np.ndarray, out: np.ndarray, mask: np.ndarray, touched: tuple[slice, ...],
           anatomy: np.ndarray | None) -> None:
    """Inside a lesion's window: outside ``anatomy`` (when given) the image and mask go back to normal;
    then every pixel changed by more than ``CHANGE_TOLERANCE`` is marked, so the mask covers the change."""
    both = (slice(None),) + touched
    if anatomy is not None:
        outside = ~anatomy[touched]
        np.copyto(out[both], image[both], where=outside)
        mask[touched][outside] = 0
    changed = (np.abs(out[both] - image[both]) > CHANGE_TOLERANCE).any(axis=0)
    mask[touched][changed] = 1


def mark(mask: np.ndarray, lesion: Lesion) -> None:
    """Set the lesion's pixels in the full-size ``mask``: a maximum, since the mask holds
    only 0 and 1 (half the cost of a boolean index)."""
    window = mask[lesion.window]
    np.maximum(window, lesion.mask, out=window)
