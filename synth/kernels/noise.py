"""Perlin gradient noise evaluated at any image size, fused with a rotation.

A frame of shape ``size`` spans ``res`` lattice cells per axis (pixel centres map
to ``(index + 0.5) / size * res``), rotated about the frame centre (DRAEM rotates
a finished noise image instead, which costs a second pass and leaves corners
empty). The caller passes a gradient table already unrolled over every lattice
cell the rotated frame touches, with the index of the cell that holds lattice
coordinate 0, so the inner loop needs no modulo.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _fade(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@njit(cache=True)
def perlin_2d(out, origin_y, origin_x, frame_h, frame_w, res_y, res_x, grad_y, grad_x, zero_y, zero_x,
              cos_a, sin_a):
    """Write Perlin noise into ``out`` (h, w), the window at (origin_y, origin_x) of a
    (frame_h, frame_w) frame spanning (res_y, res_x) lattice cells. ``grad_y``/``grad_x``
    hold the unrolled gradient table; lattice point (0, 0) sits at [zero_y, zero_x].
    Values lie in about [-0.7, 0.7]."""
    h, w = out.shape
    cy = 0.5 * frame_h
    cx = 0.5 * frame_w
    sy = res_y / frame_h
    sx = res_x / frame_w
    # lattice coordinates are affine in (i, j): step along a row, restart per row
    dy_dj = -sin_a * sy
    dx_dj = cos_a * sx
    for i in range(h):
        py = origin_y + i + 0.5 - cy
        px0 = origin_x + 0.5 - cx
        ry = (cos_a * py - sin_a * px0 + cy) * sy
        rx = (sin_a * py + cos_a * px0 + cx) * sx
        for j in range(w):
            fy = np.floor(ry)
            fx = np.floor(rx)
            ty = ry - fy
            tx = rx - fx
            y0 = int(fy) + zero_y
            x0 = int(fx) + zero_x
            n00 = grad_y[y0, x0] * ty + grad_x[y0, x0] * tx
            n01 = grad_y[y0, x0 + 1] * ty + grad_x[y0, x0 + 1] * (tx - 1.0)
            n10 = grad_y[y0 + 1, x0] * (ty - 1.0) + grad_x[y0 + 1, x0] * tx
            n11 = grad_y[y0 + 1, x0 + 1] * (ty - 1.0) + grad_x[y0 + 1, x0 + 1] * (tx - 1.0)
            u = _fade(tx)
            v = _fade(ty)
            a = n00 + u * (n01 - n00)
            b = n10 + u * (n11 - n10)
            out[i, j] = a + v * (b - a)
            ry += dy_dj
            rx += dx_dj


@njit(cache=True)
def perlin_3d(out, origin, frame, res, grads, zero, rot):
    """3D version of :func:`perlin_2d`: ``origin``/``frame``/``res``/``zero`` are (z, y, x)
    arrays, ``grads`` the unrolled (nz, ny, nx, 3) table, ``rot`` a 3x3 rotation."""
    d, h, w = out.shape
    c0 = 0.5 * frame[0]
    c1 = 0.5 * frame[1]
    c2 = 0.5 * frame[2]
    s0 = res[0] / frame[0]
    s1 = res[1] / frame[1]
    s2 = res[2] / frame[2]
    z_0, z_1, z_2 = zero[0], zero[1], zero[2]
    for k in range(d):
        pz = origin[0] + k + 0.5 - c0
        for i in range(h):
            py = origin[1] + i + 0.5 - c1
            for j in range(w):
                px = origin[2] + j + 0.5 - c2
                rz = (rot[0, 0] * pz + rot[0, 1] * py + rot[0, 2] * px + c0) * s0
                ry = (rot[1, 0] * pz + rot[1, 1] * py + rot[1, 2] * px + c1) * s1
                rx = (rot[2, 0] * pz + rot[2, 1] * py + rot[2, 2] * px + c2) * s2
                fz = np.floor(rz)
                fy = np.floor(ry)
                fx = np.floor(rx)
                tz = rz - fz
                ty = ry - fy
                tx = rx - fx
                z0 = int(fz) + z_0
                y0 = int(fy) + z_1
                x0 = int(fx) + z_2
                wz1 = _fade(tz)
                wy1 = _fade(ty)
                wx1 = _fade(tx)
                acc = 0.0
                for dz in range(2):
                    oz = tz - dz
                    wz = wz1 if dz == 1 else 1.0 - wz1
                    for dy in range(2):
                        oy = ty - dy
                        wy = wy1 if dy == 1 else 1.0 - wy1
                        for dx in range(2):
                            ox = tx - dx
                            wx = wx1 if dx == 1 else 1.0 - wx1
                            g = grads[z0 + dz, y0 + dy, x0 + dx]
                            acc += wz * wy * wx * (g[0] * oz + g[1] * oy + g[2] * ox)
                out[k, i, j] = acc


@njit(cache=True)
def blob_threshold(field, out, origin, centre, inv, weight, threshold):
    """Threshold ``field + weight * (1 - d^2)`` inside the ellipse d <= 1 (d: the normalised
    distance given by ``inv`` about ``centre``) into ``out``; a (d, h, w) view with 3-vectors
    and a 3x3 ``inv`` (2D callers pad a unit depth axis). Returns the number of pixels set.
    The envelope keeps a Perlin lesion compact while its outline stays irregular."""
    d_, h, w = field.shape
    count = 0
    for a in range(d_):
        dz = origin[0] + a - centre[0]
        for i in range(h):
            dy = origin[1] + i - centre[1]
            for j in range(w):
                dx = origin[2] + j - centre[2]
                q0 = inv[0, 0] * dz + inv[0, 1] * dy + inv[0, 2] * dx
                q1 = inv[1, 0] * dz + inv[1, 1] * dy + inv[1, 2] * dx
                q2 = inv[2, 0] * dz + inv[2, 1] * dy + inv[2, 2] * dx
                r2 = q0 * q0 + q1 * q1 + q2 * q2
                inside = r2 <= 1.0 and field[a, i, j] + weight * (1.0 - r2) > threshold
                out[a, i, j] = inside
                count += inside
    return count
