"""Structural anomalies: CutPaste (hard paste) and its enhanced variant, Poisson blending."""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .base import Context, Task, mark
from .draws import uniform
from .geometry import random_rotation, window
from .masks import random_foreground_point

# Per-pixel residual bound of the CG solve, in intensity units of [0, 1] images, per dimension.
# Measured against an exact sparse solve (benchmarks/synth_speed.py --only poisson): max error
# 0.02-0.07 grey levels of 255 in 2D (multigrid-preconditioned; 1e-4 gave 0.01-0.03 for one more
# iteration in five of eight cases), 0.1-0.35 in 3D (diagonal-preconditioned). The bound users
# are promised is 1 grey level.
POISSON_TOLERANCE = {2: 2e-4, 3: 1e-4}
POISSON_MAX_ITER = 2000


def solve_window(target: np.ndarray, guide: np.ndarray, mask: np.ndarray, mixed: bool,
                 tol: float | None = None, clip: bool = False) -> np.ndarray:
    """Solve the masked Poisson problem on a window; returns the window with the
    masked pixels replaced (float32, clipped to [0, 1] if ``clip``). ``target``/``guide`` are
    float32, ``mask`` bool, all of one 2D or 3D shape; the window must reach one pixel past
    the mask unless the mask touches the image border there. ``tol``: the residual bound,
    by default :data:`POISSON_TOLERANCE` of the window's dimension."""
    tol = POISSON_TOLERANCE[target.ndim] if tol is None else tol
    solve = kernels.poisson_2d if target.ndim == 2 else kernels.poisson_3d
    out, _, n_boundary = solve(np.ascontiguousarray(target, dtype=np.float32),
                               np.ascontiguousarray(guide, dtype=np.float32),
                               np.ascontiguousarray(mask, dtype=np.uint8), mixed, tol, POISSON_MAX_ITER, clip)
    # no boundary edge: the window (which reaches past the mask wherever the image allows) is all mask
    if n_boundary == 0 and mask.any():
        raise ValueError("the mask covers the whole image: Poisson blending needs boundary pixels outside it")
    return out


def _source_sampler(params: dict, lesion_centre: np.ndarray, ndim: int):
    """The affine map from image position p to source position: s = matrix @ p + offset."""
    rot = np.asarray(params["rotation"], np.float64)
    matrix = rot.T / params["scale"]
    offset = np.asarray(params["source_centre"], np.float64) - matrix @ lesion_centre
    return matrix, offset


def _warp_source(source_channel: np.ndarray, lo, hi, matrix, offset) -> np.ndarray:
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)), np.float32)
    if source_channel.ndim == 2:
        kernels.affine_sample_2d(source_channel, out, lo[0], lo[1], matrix, offset)
    else:
        kernels.affine_sample_3d(source_channel, out, np.array(lo, np.float64), matrix, offset)
    return out


class CutPaste(Task):
    """Paste a rotated, scaled patch of a normal image (another one, or the same) hard
    inside the mask."""

    name = "cutpaste"
    keeps_range = True

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        cfg = ctx.config
        ndim = len(ctx.spatial_shape)
        scale = math.exp(uniform(rng, (math.log(cfg.cutpaste_scale[0]), math.log(cfg.cutpaste_scale[1]))))
        rotation = random_rotation(rng, ndim, math.radians(cfg.cutpaste_max_rotation_deg))
        if ctx.source is None and ctx.foreground is not None:
            # a patch of the same image: take it from the anatomy, not the background
            centre = [float(c) for c in random_foreground_point(rng, ctx.foreground, ctx.foreground_points)]
        else:
            reach = (np.asarray(lesion.hi) - np.asarray(lesion.lo)) / 2.0 / scale * math.sqrt(ndim)
            centre = [uniform(rng, (r, n - 1 - r)) if n - 1 - r > r else (n - 1) / 2.0
                      for r, n in zip(reach, ctx.spatial_shape)]
        return {"source_centre": centre, "rotation": rotation, "scale": scale}

    def _patch(self, out, lesion, params, ctx, lo, hi, channel):
        source = out if ctx.source is None else ctx.source
        matrix, offset = _source_sampler(params, lesion.centre, lesion.mask.ndim)
        return _warp_source(np.ascontiguousarray(source[channel]), lo, hi, matrix, offset)

    def apply_lesion(self, out, lesion, params, ctx, mask):
        # read every channel's patch before writing: with a self-source, the paste must
        # not see its own output
        patches = [self._patch(out, lesion, params, ctx, lesion.lo, lesion.hi, c) for c in range(out.shape[0])]
        for c, patch in enumerate(patches):
            out[c][lesion.window][lesion.mask] = patch[lesion.mask]
        mark(mask, lesion)
        return lesion.window


class Poisson(CutPaste):
    """Blend the same kind of patch seamlessly: solve the exact masked Poisson problem with
    the patch's gradients (or mixed gradients) as guidance and the image on the boundary."""

    name = "poisson"
    keeps_range = False  # the solve can overshoot [0, 1]

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        params = super().sample_lesion(rng, image, lesion, ctx)
        params["mixed"] = bool(rng.random() < ctx.config.poisson_mixed_probability)
        return params

    def apply_lesion(self, out, lesion, params, ctx, mask):
        lo, hi = lesion.grown(1, ctx.spatial_shape)
        win = window(lo, hi)
        local = lesion.mask_in(lo, hi)
        guides = [self._patch(out, lesion, params, ctx, lo, hi, c) for c in range(out.shape[0])]
        for c, guide in enumerate(guides):
            out[c][win] = solve_window(out[c][win], guide, local, params["mixed"])
        mark(mask, lesion)
        return win
