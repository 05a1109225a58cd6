"""Density anomalies: a Gaussian intensity change and its enhanced variant, a pathology
texture blended in through a blurred mask."""
from __future__ import annotations

import numpy as np

from ..kernels import gaussian_blur, gaussian_radius
from .base import Context, Task, mark
from .draws import uniform
from .geometry import window
from .textures import render_texture, sample_texture


def _blurred_mask(lesion, sigma: float, shape):
    """The lesion mask blurred with a truncated Gaussian, on the lesion window grown by
    the kernel radius; returns (window slices, blurred float32 window)."""
    lo, hi = lesion.grown(gaussian_radius(sigma), shape)
    return window(lo, hi), gaussian_blur(lesion.mask_in(lo, hi, np.float32), sigma)


class GaussianIntensity(Task):
    """X' = X + gamma * noise inside the blurred mask; noise is a Gaussian-filtered random
    field, min-max scaled to [0, 1]; |gamma| in [0.4, 0.6], either sign."""

    name = "gaussian_intensity"

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        cfg = ctx.config
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return {"gamma": sign * uniform(rng, cfg.intensity_gamma),
                "noise_sigma": uniform(rng, cfg.intensity_noise_sigma) * ctx.scale,
                "blur_sigma": uniform(rng, cfg.mask_blur_sigma) * ctx.scale,
                "noise_seed": int(rng.integers(2 ** 63))}

    def apply_lesion(self, out, lesion, params, ctx, mask):
        win, weight = _blurred_mask(lesion, params["blur_sigma"], ctx.spatial_shape)
        noise = np.random.default_rng(params["noise_seed"]).standard_normal(weight.shape, np.float32)
        noise = gaussian_blur(noise, params["noise_sigma"])
        lo, hi = float(noise.min()), float(noise.max())
        noise = (noise - lo) / (hi - lo) if hi > lo else np.zeros_like(noise)
        delta = np.float32(params["gamma"]) * noise * weight
        for c in range(out.shape[0]):
            out[c][win] += delta
        mark(mask, lesion)
        return win


class PathologyTexture(Task):
    """X' = X (1 - M') + (X (1 - beta) + beta T') M' with M' the blurred mask and T' a
    texture from the modality's pathology profile; beta in [0.2, 0.8]."""

    name = "pathology_texture"

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        cfg = ctx.config
        return {"beta": uniform(rng, cfg.texture_beta),
                "blur_sigma": uniform(rng, cfg.mask_blur_sigma) * ctx.scale,
                "texture": sample_texture(rng, cfg.modality)}

    def apply_lesion(self, out, lesion, params, ctx, mask):
        win, weight = _blurred_mask(lesion, params["blur_sigma"], ctx.spatial_shape)
        texture = render_texture(params["texture"], weight.shape, ctx.scale)
        weight *= np.float32(params["beta"])
        for c in range(out.shape[0]):
            region = out[c][win]
            region += weight * (texture - region)
        mark(mask, lesion)
        return win
