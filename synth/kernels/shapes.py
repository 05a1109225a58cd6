"""Rasterising ellipses (ellipsoids) and rectangles (boxes) given by an affine shape matrix.

A shape is ``centre + A @ q`` for ``q`` in the unit ball (ellipse) or the unit cube
(rectangle); the kernels receive ``A``'s inverse and test each pixel centre of a
window. Rotation and shear live in ``A``.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def lesion_coordinates(inv, dz, dy, dx):
    """Normalised lesion coordinates ``inv @ (dz, dy, dx)`` of an offset from the centre
    (inside the unit ball/cube means inside the shape)."""
    return (inv[0, 0] * dz + inv[0, 1] * dy + inv[0, 2] * dx,
            inv[1, 0] * dz + inv[1, 1] * dy + inv[1, 2] * dx,
            inv[2, 0] * dz + inv[2, 1] * dy + inv[2, 2] * dx)


@njit(cache=True)
def shape_2d(out, origin_y, origin_x, cy, cx, inv, box):
    """Set ``out`` (uint8 window at origin) to 1 where the pixel centre lies in the shape.
    Returns the number of pixels set."""
    h, w = out.shape
    count = 0
    for i in range(h):
        dy = origin_y + i - cy
        for j in range(w):
            dx = origin_x + j - cx
            qy = inv[0, 0] * dy + inv[0, 1] * dx
            qx = inv[1, 0] * dy + inv[1, 1] * dx
            if box:
                inside = abs(qy) <= 1.0 and abs(qx) <= 1.0
            else:
                inside = qy * qy + qx * qx <= 1.0
            out[i, j] = inside
            count += inside
    return count


@njit(cache=True)
def shape_3d(out, origin, centre, inv, box):
    """3D version of :func:`shape_2d` (``origin``/``centre`` are (z, y, x))."""
    d, h, w = out.shape
    count = 0
    for k in range(d):
        dz = origin[0] + k - centre[0]
        for i in range(h):
            dy = origin[1] + i - centre[1]
            for j in range(w):
                dx = origin[2] + j - centre[2]
                q0, q1, q2 = lesion_coordinates(inv, dz, dy, dx)
                if box:
                    inside = abs(q0) <= 1.0 and abs(q1) <= 1.0 and abs(q2) <= 1.0
                else:
                    inside = q0 * q0 + q1 * q1 + q2 * q2 <= 1.0
                out[k, i, j] = inside
                count += inside
    return count
