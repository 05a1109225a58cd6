"""Deformation anomalies: source/sink deformation and its enhanced variant, a guided
deformation that respects the anatomy."""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..draws import uniform
from ..geometry import identity, inverse, random_rotation, shape_matrix, window
from ..masks import Lesion, random_foreground_point, render
from ..profiles import organ_profile
from .base import Context, Task, mark

# Bilinear (trilinear) sampling reads up to sqrt(3) px from the sampling point: keeping
# |u(p)| <= distance_to_background(p) - 1.75 keeps every value read inside the anatomy.
ROOM_MARGIN = 1.75


def _warp(out, lesion: Lesion, mode: int, alpha: float, k: float, stiffness: float, room) -> np.ndarray:
    """Warp every channel of ``out`` on the lesion window; returns the moved-pixel window."""
    centre = np.asarray(lesion.params["centre"], np.float64)
    inv = inverse(lesion.params["matrix"])
    changed = np.zeros(lesion.mask.shape, np.uint8)
    room = np.zeros((0,) * lesion.mask.ndim, np.float32) if room is None else room
    for c in range(out.shape[0]):
        src = np.ascontiguousarray(out[c])  # read whole, written back only after the warp: no copy
        dst = np.empty(lesion.mask.shape, np.float32)
        if lesion.mask.ndim == 2:
            kernels.radial_warp_2d(src, dst, changed, lesion.lo[0], lesion.lo[1], centre[0], centre[1], inv,
                                   mode, alpha, k, stiffness, room, ROOM_MARGIN)
        else:
            kernels.radial_warp_3d(src, dst, changed, np.array(lesion.lo, np.int64), centre, inv, mode,
                                   alpha, k, stiffness, room, ROOM_MARGIN)
        out[c][lesion.window] = dst
    return changed.view(bool)


class SourceDeformation(Task):
    """Push tissue radially away from a centre inside an ellipse (source), or pull it in
    (sink): a pixel at normalised radius d samples radius d ** alpha, alpha = 2 ** U(0.5, 2)
    (its inverse for a sink)."""

    name = "source_deformation"
    keeps_range = True
    mask_kinds = {"ellipse": 1.0}

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        cfg = ctx.config
        strength = float(2.0 ** uniform(rng, cfg.source_exponent))
        sink = bool(rng.random() < cfg.sink_probability)
        return {"direction": "sink" if sink else "source", "strength": strength}

    def apply_lesion(self, out, lesion, params, ctx, mask):
        alpha = params["strength"] if params["direction"] == "source" else 1.0 / params["strength"]
        _warp(out, lesion, kernels.SOURCE, alpha, 0.0, 1.0, None)
        mark(mask, lesion)
        return lesion.window


def _peak_of_profile(stiffness: float) -> float:
    """max over d in [0, 1] of d * (1 - d^2) ** stiffness (displacement per unit k and radius)."""
    d = 1.0 / math.sqrt(1.0 + 2.0 * stiffness)
    return d * (1.0 - d * d) ** stiffness


class GuidedDeformation(Task):
    """A smooth mass effect u(p) = -k (1 - d^2)^s (p - c) centred inside the anatomy, with
    radius, stiffness s and maximum displacement from the modality's organ profile. The
    field never folds (k < 1) and is bounded by the distance to the anatomy's edge, so no
    tissue is pulled across it. The mask marks the pixels that moved."""

    name = "guided_deformation"
    keeps_range = True

    def sample_masks(self, rng, count: int, ctx: Context) -> list[Lesion]:
        organ = organ_profile(ctx.config.modality)
        ndim = len(ctx.spatial_shape)
        side = min(ctx.spatial_shape)
        points = ctx.foreground_points
        lesions = []
        for _ in range(count):
            if ctx.foreground is None:
                centre = [uniform(rng, (0, n - 1)) for n in ctx.spatial_shape]
            else:
                centre = _deep_point(rng, ctx.foreground, points)
            radius = uniform(rng, organ["radius"]) * side
            semi = [radius * uniform(rng, (0.75, 1.25)) for _ in range(ndim)]
            matrix = shape_matrix(semi, random_rotation(rng, ndim), identity(ndim))
            lesions.append(render({"kind": "ellipse", "centre": centre, "matrix": matrix}, ctx.spatial_shape))
        return lesions

    def sample_lesion(self, rng, image, lesion, ctx: Context) -> dict:
        organ = organ_profile(ctx.config.modality)
        stiffness = uniform(rng, organ["stiffness"])
        max_displacement = uniform(rng, organ["max_displacement"]) * min(ctx.spatial_shape)
        matrix = lesion.params["matrix"]
        longest = max(math.sqrt(sum(row[j] ** 2 for row in matrix)) for j in range(len(matrix)))
        k = min(0.9, max_displacement / (longest * _peak_of_profile(stiffness)))
        return {"organ": organ["organ"], "stiffness": stiffness, "k": k, "max_displacement": max_displacement,
                "bounded_by_foreground": ctx.foreground is not None}

    def apply_lesion(self, out, lesion, params, ctx, mask):
        room = None
        if params["bounded_by_foreground"]:
            if ctx.foreground is None:
                raise ValueError("this guided_deformation record was sampled with a foreground mask; "
                                 "pass the same foreground to replay it")
            room = _room(ctx.foreground, lesion, params["max_displacement"])
        changed = _warp(out, lesion, kernels.GUIDED, 1.0, params["k"], params["stiffness"], room)
        mask[lesion.window][changed] = 1.0
        return lesion.window


# A centre whose cube of this half-size is all anatomy is more than this far from the
# background, so its neighbours have room to move and the anomaly is never empty.
CENTRE_DEPTH = 4


def _deep_point(rng, foreground: np.ndarray, points: list, tries: int = 32) -> list[float]:
    """A random anatomy point at least CENTRE_DEPTH px from the background."""
    r = CENTRE_DEPTH
    for _ in range(tries):
        point = random_foreground_point(rng, foreground, points)
        if all(r <= c < n - r for c, n in zip(point, foreground.shape)) \
                and foreground[tuple(slice(c - r, c + r + 1) for c in point)].all():
            return [float(c) for c in point]
    import scipy.ndimage as ndi  # rare path: thin anatomy

    depth = ndi.distance_transform_edt(np.pad(foreground, 1))[(slice(1, -1),) * foreground.ndim]
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    if depth[deepest] <= ROOM_MARGIN + 1.0:
        raise ValueError("the foreground is too thin for a guided deformation (no point is more than "
                         f"{ROOM_MARGIN + 1.0} px from the background)")
    return [float(c) for c in deepest]


def _room(foreground: np.ndarray, lesion: Lesion, max_displacement: float) -> np.ndarray | None:
    """Distance to the nearest background pixel on the lesion window, or None where the bound
    cannot bind. Computed on a window grown by more than any displacement, which is all the
    accuracy the bound needs."""
    margin = int(math.ceil(max_displacement + ROOM_MARGIN)) + 2
    lo, hi = lesion.grown(margin, foreground.shape)
    fg = np.ascontiguousarray(foreground[window(lo, hi)], dtype=np.uint8)
    inner = all(a >= margin and b + margin <= n for a, b, n in zip(lesion.lo, lesion.hi, foreground.shape))
    if inner and fg.all():
        # Every lesion pixel is at least `margin` px from the background, more than any
        # displacement (<= max_displacement) plus ROOM_MARGIN: the bound would change nothing.
        return None
    # Our exact transform, not OpenCV's: its results vary between processes in the last bits.
    # Distances of `margin` or more cannot bind either, so the transform may stop there.
    inside = tuple(a - b for a, b in zip(lesion.lo, lo))
    if fg.ndim == 2:
        return kernels.distance_to_background_2d(fg, *inside, *lesion.mask.shape, margin)
    return kernels.distance_to_background_3d(fg, inside, lesion.mask.shape, margin)
