"""Small geometric helpers shared by masks and tasks: windows, rotations, shape matrices.

Shape matrices and rotations are nested lists of floats (the JSON form records keep): for
2x2 and 3x3 matrices plain Python is several times faster than numpy's per-call overhead,
and sampling them is a large share of a small lesion's cost."""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .draws import uniform

Window = tuple[slice, ...]


def window(lo, hi) -> Window:
    """Slices from inclusive lower and exclusive upper corners."""
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def grow(lo, hi, margin: int, shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Grow a box by ``margin`` pixels on every side, clipped to ``shape``."""
    return (tuple(max(0, int(a) - margin) for a in lo),
            tuple(min(int(n), int(b) + margin) for b, n in zip(hi, shape)))


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Inclusive-exclusive bounding box of a boolean array, or None when empty."""
    flat = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == bool else (np.asarray(mask) != 0).view(np.uint8)
    lo, hi = kernels.mask_extent(flat if flat.ndim > 1 else flat[None])
    if hi[-1] == 0:
        return None
    skip = 0 if flat.ndim > 1 else 1
    return tuple(lo[skip:].tolist()), tuple(hi[skip:].tolist())


def rotation_2d(angle: float) -> list[list[float]]:
    """Rotation by ``angle`` radians in (y, x) coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    return [[c, -s], [s, c]]


def axis_angle(axis, angle: float) -> list[list[float]]:
    """3x3 rotation about a unit ``axis`` (z, y, x) by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return (np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)).tolist()


def random_rotation(rng: np.random.Generator, ndim: int, max_angle: float = math.pi) -> list[list[float]]:
    """A random rotation: uniform angle in [-max_angle, max_angle] (2D) or about a uniform axis (3D)."""
    angle = uniform(rng, (-max_angle, max_angle))
    if ndim == 2:
        return rotation_2d(angle)
    axis = rng.normal(size=3)
    return axis_angle(axis / np.linalg.norm(axis), angle)


def identity(ndim: int) -> list[list[float]]:
    return [[1.0 if i == j else 0.0 for j in range(ndim)] for i in range(ndim)]


def shape_matrix(semi_axes, rotation, shear) -> list[list[float]]:
    """``A = rotation @ shear @ diag(semi_axes)``: maps the unit ball/cube onto the shape."""
    n = len(semi_axes)
    out = []
    for row in rotation:
        product = []
        for j in range(n):
            total = 0.0
            for k in range(n):
                total += row[k] * shear[k][j]
            product.append(total * semi_axes[j])
        out.append(product)
    return out


def half_extent(matrix, box: bool) -> list[float]:
    """Half-size per axis of the box that bounds the shape ``matrix`` maps the unit ball
    (or, with ``box``, the unit cube) onto."""
    if box:
        return [sum(abs(v) for v in row) for row in matrix]
    return [math.sqrt(sum(v * v for v in row)) for row in matrix]


def as_list(a) -> list:
    """A numpy array or scalar as plain Python lists/floats (JSON-ready)."""
    return np.asarray(a, dtype=np.float64).tolist()


def inverse(matrix) -> np.ndarray:
    """Inverse of a 2x2 or 3x3 shape matrix, as the float64 array kernels take (closed form
    for 2x2: numpy's general inverse costs more than the whole warp of a small lesion)."""
    if len(matrix) == 2:
        (a, b), (c, d) = matrix
        det = a * d - b * c
        if det == 0.0:
            raise ValueError("singular shape matrix")
        return np.array([[d / det, -b / det], [-c / det, a / det]])
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64))
