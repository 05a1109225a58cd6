"""Small geometric helpers shared by masks and tasks: windows, rotations, shape matrices."""
from __future__ import annotations

import math

import numpy as np

from . import kernels

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


def rotation_2d(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians in (y, x) coordinates."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def axis_angle(axis, angle: float) -> np.ndarray:
    """3x3 rotation about a unit ``axis`` (z, y, x) by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def random_rotation(rng: np.random.Generator, ndim: int, max_angle: float = math.pi) -> np.ndarray:
    """A random rotation: uniform angle in [-max_angle, max_angle] (2D) or about a uniform axis (3D)."""
    angle = rng.uniform(-max_angle, max_angle)
    if ndim == 2:
        return rotation_2d(angle)
    axis = rng.normal(size=3)
    return axis_angle(axis / np.linalg.norm(axis), angle)


def shape_matrix(semi_axes, rotation: np.ndarray, shear: np.ndarray) -> np.ndarray:
    """``A = rotation @ shear @ diag(semi_axes)``: maps the unit ball/cube onto the shape."""
    return rotation @ shear @ np.diag(np.asarray(semi_axes, dtype=np.float64))


def half_extent(matrix: np.ndarray, box: bool) -> np.ndarray:
    """Half-size per axis of the box that bounds the shape ``matrix`` maps the unit ball
    (or, with ``box``, the unit cube) onto."""
    return np.abs(matrix).sum(axis=1) if box else np.sqrt((matrix ** 2).sum(axis=1))


def as_list(a) -> list:
    """A numpy array or scalar as plain Python lists/floats (JSON-ready)."""
    return np.asarray(a, dtype=np.float64).tolist()


def inverse(matrix) -> np.ndarray:
    """Inverse of a 2x2 or 3x3 shape matrix (closed form for 2x2: numpy's general inverse
    costs more than the whole warp of a small lesion)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 2):
        det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
        if det == 0.0:
            raise ValueError("singular shape matrix")
        return np.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]) / det
    return np.linalg.inv(m)
