"""Deformation anomalies: source/sink deformation and its enhanced variant, a guided
deformation that respects the anatomy."""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..profiles import organ_profile
from .base import Context, Task, mark
from .draws import uniform
from .geometry import identity, random_rotation, shape_matrix
from .masks import Lesion, random_foreground_point, render

# Bilinear (trilinear) sampling reads up to sqrt(3) px from the sampling point: keeping
# |u(p)| <= distance_to_background(p) - 1.75 keeps every value read inside the anatomy.
ROOM_MARGIN = 1.75


def _warp(out, lesion: Lesion, mode: int, alpha: float, k: float, stiffness: float, room, moved) -> None:
    """Warp every channel of ``out`` in place on the lesion window; where ``moved`` (the
    full-size mask, or an empty array) is given, set it to 1 on the pixels that moved."""
    centre = lesion.params["centre"]
    inv = lesion.inverse
    ndim = len(lesion.lo)
    room = _NOWHERE[ndim] if room is None else room
    moved = _NOWHERE[ndim] if moved is None else moved
    if ndim == 2:
        kernels.radial_warp_2d(out, moved, lesion.lo[0], lesion.lo[1], *lesion.shape, float(centre[0]),
                               float(centre[1]), inv, mode, alpha, k, stiffness, room, ROOM_MARGIN)
    else:
        kernels.radial_warp_3d(out, moved, lesion.lo, lesion.shape, np.asarray(centre, np.float64), inv,
                               mode, alpha, k, stiffness, room, ROOM_MARGIN)


# "No room bound" and "no moved-pixel mask" for the kernels: empty float32 arrays
_NOWHERE = {2: np.zeros((0, 0), np.float32), 3: np.zeros((0, 0, 0), np.float32)}


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
        _warp(out, lesion, kernels.SOURCE, alpha, 0.0, 1.0, None, None)
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
    needs_raster = False  # the mask marks the pixels that moved, not the ellipse

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
            lesions.append(render({"kind": "ellipse", "centre": centre, "matrix": matrix}, ctx.spatial_shape,
                                  raster=False))
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
        _warp(out, lesion, kernels.GUIDED, 1.0, params["k"], params["stiffness"], room, mask)
        return lesion.window


# A centre whose cube of this half-size is all anatomy is more than this far from the
# background, so its neighbours have room to move and the anomaly is never empty.
CENTRE_DEPTH = 4


def _deep_point(rng, foreground: np.ndarray, points: list, tries: int = 32) -> list[float]:
    """A random anatomy point at least CENTRE_DEPTH px from the background."""
    r = CENTRE_DEPTH
    limits = [n - r for n in foreground.shape]
    for _ in range(tries):
        point = random_foreground_point(rng, foreground, points)
        if min(point) >= r and all([c < n for c, n in zip(point, limits)]) \
                and foreground[tuple([slice(c - r, c + r + 1) for c in point])].all():
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
    cannot bind. Only distances below any displacement plus the sampling margin can bind, so
    the transform looks that far around the window and no further."""
    margin = int(math.ceil(max_displacement + ROOM_MARGIN)) + 2
    # our exact transform, not OpenCV's: its results vary between processes in the last bits
    if foreground.ndim == 2:
        room = kernels.capped_distance_2d(foreground, *lesion.lo, *lesion.shape, margin)
    else:
        room = kernels.capped_distance_3d(foreground, lesion.lo, lesion.shape, margin)
    return room if room.size else None
