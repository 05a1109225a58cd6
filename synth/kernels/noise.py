"""Perlin gradient noise (and its fractal sum) at any image size, fused with a rotation.

A frame of shape ``size`` spans ``res`` lattice cells per axis (pixel centres map
to ``(index + 0.5) / size * res``), rotated about the frame centre (DRAEM rotates
a finished noise image instead, which costs a second pass and leaves corners
empty). Lattice points pick their gradient by hashing through a 256-entry
permutation, as in Perlin's reference noise, so any lattice size, rotation or
window works with one small table and no modulo (the pattern repeats only every
256 cells). Octave ``o`` of a fractal sum doubles the frequency ``o`` times and
shifts the lattice, with amplitude ``persistence ** o``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .shapes import lesion_coordinates

TABLE = 256  # permutation size; a power of two so that `& (TABLE - 1)` wraps negatives too
OCTAVE_SHIFT = 17.31  # lattice offset between octaves, so octaves do not share lattice points


@njit(cache=True, inline="always")
def _fade(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


@njit(cache=True, inline="always")
def _corner_2d(perm, gy, gx, iy, ix, ty, tx):
    h = perm[(perm[iy & 255] + ix) & 255]
    return gy[h] * ty + gx[h] * tx


@njit(cache=True)
def perlin_2d(out, origin_y, origin_x, frame_h, frame_w, res_y, res_x, perm, gy, gx, cos_a, sin_a,
              octaves, persistence):
    """Write (fractal) Perlin noise into ``out`` (h, w), the window at (origin_y, origin_x)
    of a (frame_h, frame_w) frame spanning (res_y, res_x) cells. ``perm`` is a permutation
    of 0..255, ``gy``/``gx`` the 256 unit gradients. One octave lies in about [-0.7, 0.7]."""
    h, w = out.shape
    cy = 0.5 * frame_h
    cx = 0.5 * frame_w
    for i in range(h):
        for j in range(w):
            out[i, j] = 0.0
    amplitude = 1.0
    for octave in range(octaves):
        freq = 2.0 ** octave
        shift = OCTAVE_SHIFT * octave
        sy = res_y / frame_h * freq
        sx = res_x / frame_w * freq
        # lattice coordinates are affine in (i, j): step along a row, restart per row
        dy_dj = -sin_a * sy
        dx_dj = cos_a * sx
        for i in range(h):
            py = origin_y + i + 0.5 - cy
            px0 = origin_x + 0.5 - cx
            ry = (cos_a * py - sin_a * px0 + cy) * sy + shift
            rx = (sin_a * py + cos_a * px0 + cx) * sx + shift
            for j in range(w):
                fy = np.floor(ry)
                fx = np.floor(rx)
                ty = ry - fy
                tx = rx - fx
                iy = int(fy)
                ix = int(fx)
                n00 = _corner_2d(perm, gy, gx, iy, ix, ty, tx)
                n01 = _corner_2d(perm, gy, gx, iy, ix + 1, ty, tx - 1.0)
                n10 = _corner_2d(perm, gy, gx, iy + 1, ix, ty - 1.0, tx)
                n11 = _corner_2d(perm, gy, gx, iy + 1, ix + 1, ty - 1.0, tx - 1.0)
                u = _fade(tx)
                v = _fade(ty)
                a = n00 + u * (n01 - n00)
                b = n10 + u * (n11 - n10)
                out[i, j] += amplitude * (a + v * (b - a))
                ry += dy_dj
                rx += dx_dj
        amplitude *= persistence


@njit(cache=True)
def perlin_3d(out, origin, frame, res, perm, grads, rot, octaves, persistence):
    """3D version of :func:`perlin_2d`: ``origin``/``frame``/``res`` are (z, y, x) arrays,
    ``grads`` the (256, 3) unit gradients, ``rot`` a 3x3 rotation about the frame centre."""
    d, h, w = out.shape
    c0 = 0.5 * frame[0]
    c1 = 0.5 * frame[1]
    c2 = 0.5 * frame[2]
    out[:] = 0.0
    amplitude = 1.0
    for octave in range(octaves):
        freq = 2.0 ** octave
        shift = OCTAVE_SHIFT * octave
        s0 = res[0] / frame[0] * freq
        s1 = res[1] / frame[1] * freq
        s2 = res[2] / frame[2] * freq
        for k in range(d):
            pz = origin[0] + k + 0.5 - c0
            for i in range(h):
                py = origin[1] + i + 0.5 - c1
                for j in range(w):
                    px = origin[2] + j + 0.5 - c2
                    rz = (rot[0, 0] * pz + rot[0, 1] * py + rot[0, 2] * px + c0) * s0 + shift
                    ry = (rot[1, 0] * pz + rot[1, 1] * py + rot[1, 2] * px + c1) * s1 + shift
                    rx = (rot[2, 0] * pz + rot[2, 1] * py + rot[2, 2] * px + c2) * s2 + shift
                    fz = np.floor(rz)
                    fy = np.floor(ry)
                    fx = np.floor(rx)
                    tz = rz - fz
                    ty = ry - fy
                    tx = rx - fx
                    iz = int(fz)
                    iy = int(fy)
                    ix = int(fx)
                    wz1 = _fade(tz)
                    wy1 = _fade(ty)
                    wx1 = _fade(tx)
                    acc = 0.0
                    for dz in range(2):
                        wz = wz1 if dz == 1 else 1.0 - wz1
                        hz = perm[(iz + dz) & 255]
                        for dy in range(2):
                            wy = wy1 if dy == 1 else 1.0 - wy1
                            hy = perm[(hz + iy + dy) & 255]
                            for dx in range(2):
                                wx = wx1 if dx == 1 else 1.0 - wx1
                                g = perm[(hy + ix + dx) & 255]
                                acc += wz * wy * wx * (grads[g, 0] * (tz - dz) + grads[g, 1] * (ty - dy)
                                                       + grads[g, 2] * (tx - dx))
                    out[k, i, j] += amplitude * acc
        amplitude *= persistence


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
                q0, q1, q2 = lesion_coordinates(inv, dz, dy, dx)
                r2 = q0 * q0 + q1 * q1 + q2 * q2
                inside = r2 <= 1.0 and field[a, i, j] + weight * (1.0 - r2) > threshold
                out[a, i, j] = inside
                count += inside
    return count
