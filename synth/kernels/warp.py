"""Sampling an image at moved positions: affine patches (CutPaste, Poisson sources)
and radial displacement fields (source, sink and guided deformation).

Every kernel works on a window (origin + window shape) of the full image, so the
cost scales with the lesion, not the image. Interpolation is bilinear (trilinear
in 3D) with clamp-to-edge; a pixel whose sampling position is its own centre is
copied exactly, so an identity displacement leaves values bit-identical.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .shapes import lesion_coordinates


@njit(cache=True, inline="always")
def _bilinear(img, y, x):
    h, w = img.shape
    if y < 0.0:
        y = 0.0
    elif y > h - 1.0:
        y = h - 1.0
    if x < 0.0:
        x = 0.0
    elif x > w - 1.0:
        x = w - 1.0
    y0 = int(y)
    x0 = int(x)
    fy = y - y0
    fx = x - x0
    y1 = min(y0 + 1, h - 1)
    x1 = min(x0 + 1, w - 1)
    top = img[y0, x0] + fx * (img[y0, x1] - img[y0, x0]) if fx != 0.0 else img[y0, x0]
    if fy == 0.0:
        return top
    bottom = img[y1, x0] + fx * (img[y1, x1] - img[y1, x0]) if fx != 0.0 else img[y1, x0]
    return top + fy * (bottom - top)


@njit(cache=True, inline="always")
def _trilinear(img, z, y, x):
    d, h, w = img.shape
    z = min(max(z, 0.0), d - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x = min(max(x, 0.0), w - 1.0)
    z0 = int(z)
    y0 = int(y)
    x0 = int(x)
    fz = z - z0
    fy = y - y0
    fx = x - x0
    if fz == 0.0 and fy == 0.0 and fx == 0.0:
        return img[z0, y0, x0]
    z1 = min(z0 + 1, d - 1)
    y1 = min(y0 + 1, h - 1)
    x1 = min(x0 + 1, w - 1)
    c00 = img[z0, y0, x0] + fx * (img[z0, y0, x1] - img[z0, y0, x0])
    c01 = img[z0, y1, x0] + fx * (img[z0, y1, x1] - img[z0, y1, x0])
    c10 = img[z1, y0, x0] + fx * (img[z1, y0, x1] - img[z1, y0, x0])
    c11 = img[z1, y1, x0] + fx * (img[z1, y1, x1] - img[z1, y1, x0])
    c0 = c00 + fy * (c01 - c00)
    c1 = c10 + fy * (c11 - c10)
    return c0 + fz * (c1 - c0)


@njit(cache=True)
def affine_sample_2d(src, out, origin_y, origin_x, matrix, offset):
    """``out[i, j] = src(matrix @ (origin + (i, j)) + offset)``, bilinear, clamp-to-edge."""
    h, w = out.shape
    for i in range(h):
        py = origin_y + i
        for j in range(w):
            px = origin_x + j
            sy = matrix[0, 0] * py + matrix[0, 1] * px + offset[0]
            sx = matrix[1, 0] * py + matrix[1, 1] * px + offset[1]
            out[i, j] = _bilinear(src, sy, sx)


@njit(cache=True)
def affine_sample_3d(src, out, origin, matrix, offset):
    """3D version of :func:`affine_sample_2d`."""
    d, h, w = out.shape
    for k in range(d):
        pz = origin[0] + k
        for i in range(h):
            py = origin[1] + i
            for j in range(w):
                px = origin[2] + j
                sz = matrix[0, 0] * pz + matrix[0, 1] * py + matrix[0, 2] * px + offset[0]
                sy = matrix[1, 0] * pz + matrix[1, 1] * py + matrix[1, 2] * px + offset[1]
                sx = matrix[2, 0] * pz + matrix[2, 1] * py + matrix[2, 2] * px + offset[2]
                out[k, i, j] = _trilinear(src, sz, sy, sx)


# Radial profiles: the sampling position of pixel p is c + f(d) * (p - c), with d the
# normalised elliptical distance of p from c (d < 1 inside the lesion).
SOURCE = 0  # f(d) = d ** (alpha - 1): alpha > 1 pushes tissue outwards, alpha < 1 pulls it in (sink)
GUIDED = 1  # f(d) = 1 - k * (1 - d^2) ** stiffness: a smooth mass effect that never folds (k < 1)


@njit(cache=True, inline="always")
def _radial_factor(mode, d, alpha, k, stiffness):
    if d >= 1.0:
        return 1.0
    if mode == SOURCE:
        if d == 0.0:
            return 0.0
        return d ** (alpha - 1.0)
    return 1.0 - k * (1.0 - d * d) ** stiffness


@njit(cache=True)
def radial_warp_2d(src, out, changed, origin_y, origin_x, cy, cx, inv, mode, alpha, k, stiffness,
                   room, room_margin):
    """Warp the window of ``src`` at origin into ``out`` and mark moved pixels in ``changed``.

    ``inv`` maps offsets from the centre to normalised lesion coordinates. ``room``
    (same window, may be empty) bounds each displacement: |u| <= room - room_margin,
    so with room = distance to the nearest background pixel no tissue is pulled
    across the foreground edge.
    """
    h, w = out.shape
    bounded = room.size > 0
    for i in range(h):
        dy = origin_y + i - cy
        for j in range(w):
            dx = origin_x + j - cx
            qy = inv[0, 0] * dy + inv[0, 1] * dx
            qx = inv[1, 0] * dy + inv[1, 1] * dx
            d = np.sqrt(qy * qy + qx * qx)
            f = _radial_factor(mode, d, alpha, k, stiffness)
            uy = (f - 1.0) * dy
            ux = (f - 1.0) * dx
            if bounded and (uy != 0.0 or ux != 0.0):
                limit = room[i, j] - room_margin
                norm = np.sqrt(uy * uy + ux * ux)
                if limit <= 0.0:
                    uy = 0.0
                    ux = 0.0
                elif norm > limit:
                    uy *= limit / norm
                    ux *= limit / norm
            moved = uy != 0.0 or ux != 0.0
            changed[i, j] = moved
            if moved:
                out[i, j] = _bilinear(src, origin_y + i + uy, origin_x + j + ux)
            else:
                out[i, j] = src[origin_y + i, origin_x + j]


@njit(cache=True)
def radial_warp_3d(src, out, changed, origin, centre, inv, mode, alpha, k, stiffness, room, room_margin):
    """3D version of :func:`radial_warp_2d`."""
    d_, h, w = out.shape
    bounded = room.size > 0
    for a in range(d_):
        dz = origin[0] + a - centre[0]
        for i in range(h):
            dy = origin[1] + i - centre[1]
            for j in range(w):
                dx = origin[2] + j - centre[2]
                q0, q1, q2 = lesion_coordinates(inv, dz, dy, dx)
                d = np.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
                f = _radial_factor(mode, d, alpha, k, stiffness)
                uz = (f - 1.0) * dz
                uy = (f - 1.0) * dy
                ux = (f - 1.0) * dx
                if bounded and (uz != 0.0 or uy != 0.0 or ux != 0.0):
                    limit = room[a, i, j] - room_margin
                    norm = np.sqrt(uz * uz + uy * uy + ux * ux)
                    if limit <= 0.0:
                        uz = 0.0
                        uy = 0.0
                        ux = 0.0
                    elif norm > limit:
                        s = limit / norm
                        uz *= s
                        uy *= s
                        ux *= s
                moved = uz != 0.0 or uy != 0.0 or ux != 0.0
                changed[a, i, j] = moved
                if moved:
                    out[a, i, j] = _trilinear(src, origin[0] + a + uz, origin[1] + i + uy, origin[2] + j + ux)
                else:
                    out[a, i, j] = src[origin[0] + a, origin[1] + i, origin[2] + j]
