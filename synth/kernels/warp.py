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

# Radial profiles: the sampling position of pixel p is c + f(d) * (p - c), with d the
# normalised elliptical distance of p from c (d < 1 inside the lesion). Kernels work with
# t = d^2 (no square root) and the displacement scale f - 1.
SOURCE = 0  # f(d) = d ** (alpha - 1): alpha > 1 pushes tissue outwards, alpha < 1 pulls it in (sink)
GUIDED = 1  # f(d) = 1 - k * (1 - d^2) ** stiffness: a smooth mass effect that never folds (k < 1)

# GUIDED's (1 - t) ** stiffness is tabulated on this many cells of t in [0, 1] and read by
# linear interpolation: a per-pixel pow cost three times the rest of the warp. The error,
# h^2 / 8 * max |g''| = stiffness (stiffness - 1) / (8 CELLS^2) for stiffness >= 2 (organ
# profiles enforce it), is under 4e-5 of the lesion's radius up to stiffness 4.5 (0.003 px on
# a 224 px image); the interpolant still decreases in t, so the field still never folds.
PROFILE_CELLS = 256
# log(1 - t) on the cells (the last, log 0, is never used): a lesion's table then costs one exp
# per cell instead of one pow, a third of the time
_LOG_ONE_MINUS_T = np.log1p(-np.arange(PROFILE_CELLS) / PROFILE_CELLS)


@njit(cache=True)
def _profile_table(mode, k, stiffness):
    """-k (1 - t) ** stiffness at t = i / PROFILE_CELLS, with trailing 0s so that reading
    cell i + 1 at t = 1 needs no branch (empty for SOURCE, which uses pow per pixel)."""
    if mode != GUIDED:
        return np.zeros(2)
    table = np.zeros(PROFILE_CELLS + 2)
    for i in range(PROFILE_CELLS):
        table[i] = -k * np.exp(stiffness * _LOG_ONE_MINUS_T[i])
    return table


@njit(cache=True, inline="always")
def _scale_row(mode, ts, beta, table):
    """f - 1 at each t = d^2 of a row, in place (0 outside the lesion, t >= 1): the
    displacement is this times p - c. One loop per mode, without branches where possible."""
    if mode == SOURCE:
        for j in range(ts.size):
            t = ts[j]
            if t >= 1.0:
                ts[j] = 0.0
            elif t == 0.0:
                ts[j] = -1.0  # the centre samples itself (avoids 0 ** negative for a sink)
            else:
                ts[j] = np.float32(t) ** np.float32(beta) - 1.0
        return
    for j in range(ts.size):
        x = min(ts[j], 1.0) * PROFILE_CELLS
        cell = int(x)
        ts[j] = table[cell] + (x - cell) * (table[cell + 1] - table[cell])


@njit(cache=True, inline="always")
def _bound(u2, limit):
    """How much of a displacement of squared length ``u2`` may be kept where the room to
    the anatomy's edge, less the sampling margin, is ``limit``."""
    if u2 == 0.0:
        return 1.0
    if limit <= 0.0:
        return 0.0
    if u2 <= limit * limit:  # the usual case, decided without a square root
        return 1.0
    return limit / np.sqrt(u2)


@njit(cache=True, inline="always")
def _gather_row_2d(src, out_row, ys, xs):
    """Bilinear reads at positions already clamped to the image, without branches (a
    weight of 0 keeps a value exactly, so an unmoved pixel is copied bit for bit)."""
    last_y = src.shape[0] - 1
    last_x = src.shape[1] - 1
    for j in range(out_row.size):
        y0 = int(ys[j])
        x0 = int(xs[j])
        fy = ys[j] - y0
        fx = xs[j] - x0
        y1 = min(y0 + 1, last_y)
        x1 = min(x0 + 1, last_x)
        top = src[y0, x0] + fx * (src[y0, x1] - src[y0, x0])
        bottom = src[y1, x0] + fx * (src[y1, x1] - src[y1, x0])
        out_row[j] = top + fy * (bottom - top)


@njit(cache=True, inline="always")
def _row_span(pp, pq, qq, x0, w):
    """The columns [lo, hi) of a row whose lesion coordinates q = p + (x0 + j) q' can reach
    |q| < 1 (pp = p.p, pq = p.q', qq = q'.q'), widened by a pixel against rounding: every
    other pixel of the row is outside the lesion and does not move."""
    disc = pq * pq - qq * (pp - 1.0)
    if disc <= 0.0:
        return 0, 0
    root = np.sqrt(disc)
    lo = int(np.floor((-pq - root) / qq - x0)) - 1
    hi = int(np.ceil((-pq + root) / qq - x0)) + 2
    return min(max(lo, 0), w), min(max(hi, 0), w)


@njit(cache=True)
def radial_warp_2d(image, moved, origin_y, origin_x, height, width, cy, cx, inv, mode, alpha, k, stiffness,
                   room, room_margin):
    """Warp the window (``height`` x ``width`` at origin) of every channel of ``image``
    (C, H, W) in place, and set ``moved`` (H, W, may be empty) to 1 where a pixel moved.

    ``inv`` maps offsets from the centre to normalised lesion coordinates. ``room``
    (the window's shape, may be empty) bounds each displacement: |u| <= room - room_margin,
    so with room = distance to the nearest background pixel no tissue is pulled
    across the foreground edge. Positions are computed once per row, only on the span of
    the row that the lesion covers (nothing else moves), then read for every channel.
    """
    h, w = height, width
    y_max = image.shape[1] - 1.0
    x_max = image.shape[2] - 1.0
    bounded = room.size > 0
    beta = 0.5 * (alpha - 1.0)
    table = _profile_table(mode, k, stiffness)
    ys = np.empty((h, w))
    xs = np.empty((h, w))
    starts = np.empty(h, np.int64)
    stops = np.empty(h, np.int64)
    qq = inv[0, 1] * inv[0, 1] + inv[1, 1] * inv[1, 1]
    for i in range(h):
        py = float(origin_y + i)
        dy = py - cy
        p0 = inv[0, 0] * dy
        p1 = inv[1, 0] * dy
        start, stop = _row_span(p0 * p0 + p1 * p1, p0 * inv[0, 1] + p1 * inv[1, 1], qq, origin_x - cx, w)
        starts[i] = start
        stops[i] = stop
        scales = ys[i, start:stop]  # scratch until the positions overwrite it
        for j in range(stop - start):
            dx = origin_x + start + j - cx
            qy = p0 + inv[0, 1] * dx
            qx = p1 + inv[1, 1] * dx
            scales[j] = qy * qy + qx * qx
        _scale_row(mode, scales, beta, table)
        for j in range(stop - start):
            px = float(origin_x + start + j)
            dx = px - cx
            uy = scales[j] * dy
            ux = scales[j] * dx
            if bounded:
                keep = _bound(uy * uy + ux * ux, room[i, start + j] - room_margin)
                uy *= keep
                ux *= keep
            if moved.size > 0 and (uy != 0.0 or ux != 0.0):
                moved[origin_y + i, origin_x + start + j] = 1.0
            ys[i, start + j] = min(max(py + uy, 0.0), y_max)
            xs[i, start + j] = min(max(px + ux, 0.0), x_max)
    rows = np.empty((h, w), np.float32)
    for c in range(image.shape[0]):
        src = image[c]
        for i in range(h):  # read everything before writing: the reads overlap other rows
            _gather_row_2d(src, rows[i, starts[i]:stops[i]], ys[i, starts[i]:stops[i]], xs[i, starts[i]:stops[i]])
        for i in range(h):
            for j in range(starts[i], stops[i]):
                src[origin_y + i, origin_x + j] = rows[i, j]


@njit(cache=True, inline="always")
def _gather_row_3d(src, out_row, zs, ys, xs):
    """Trilinear version of :func:`_gather_row_2d`."""
    last_z = src.shape[0] - 1
    last_y = src.shape[1] - 1
    last_x = src.shape[2] - 1
    for j in range(out_row.size):
        z0 = int(zs[j])
        y0 = int(ys[j])
        x0 = int(xs[j])
        fz = zs[j] - z0
        fy = ys[j] - y0
        fx = xs[j] - x0
        z1 = min(z0 + 1, last_z)
        y1 = min(y0 + 1, last_y)
        x1 = min(x0 + 1, last_x)
        c00 = src[z0, y0, x0] + fx * (src[z0, y0, x1] - src[z0, y0, x0])
        c01 = src[z0, y1, x0] + fx * (src[z0, y1, x1] - src[z0, y1, x0])
        c10 = src[z1, y0, x0] + fx * (src[z1, y0, x1] - src[z1, y0, x0])
        c11 = src[z1, y1, x0] + fx * (src[z1, y1, x1] - src[z1, y1, x0])
        c0 = c00 + fy * (c01 - c00)
        out_row[j] = c0 + fz * ((c10 + fy * (c11 - c10)) - c0)


@njit(cache=True)
def radial_warp_3d(image, moved, origin, shape, centre, inv, mode, alpha, k, stiffness, room, room_margin):
    """3D version of :func:`radial_warp_2d`: ``image`` (C, D, H, W), the window of ``shape``
    at ``origin``."""
    d_, h, w = shape
    z_max = image.shape[1] - 1.0
    y_max = image.shape[2] - 1.0
    x_max = image.shape[3] - 1.0
    bounded = room.size > 0
    beta = 0.5 * (alpha - 1.0)
    table = _profile_table(mode, k, stiffness)
    zs = np.empty((d_, h, w))
    ys = np.empty((d_, h, w))
    xs = np.empty((d_, h, w))
    starts = np.empty((d_, h), np.int64)
    stops = np.empty((d_, h), np.int64)
    qq = inv[0, 2] * inv[0, 2] + inv[1, 2] * inv[1, 2] + inv[2, 2] * inv[2, 2]
    for a in range(d_):
        pz = float(origin[0] + a)
        dz = pz - centre[0]
        for i in range(h):
            py = float(origin[1] + i)
            dy = py - centre[1]
            p0, p1, p2 = lesion_coordinates(inv, dz, dy, 0.0)
            start, stop = _row_span(p0 * p0 + p1 * p1 + p2 * p2, p0 * inv[0, 2] + p1 * inv[1, 2] + p2 * inv[2, 2],
                                    qq, origin[2] - centre[2], w)
            starts[a, i] = start
            stops[a, i] = stop
            scales = zs[a, i, start:stop]  # scratch until the positions overwrite it
            for j in range(stop - start):
                q0, q1, q2 = lesion_coordinates(inv, dz, dy, origin[2] + start + j - centre[2])
                scales[j] = q0 * q0 + q1 * q1 + q2 * q2
            _scale_row(mode, scales, beta, table)
            for j in range(stop - start):
                px = float(origin[2] + start + j)
                dx = px - centre[2]
                uz = scales[j] * dz
                uy = scales[j] * dy
                ux = scales[j] * dx
                if bounded:
                    keep = _bound(uz * uz + uy * uy + ux * ux, room[a, i, start + j] - room_margin)
                    uz *= keep
                    uy *= keep
                    ux *= keep
                if moved.size > 0 and (uz != 0.0 or uy != 0.0 or ux != 0.0):
                    moved[origin[0] + a, origin[1] + i, origin[2] + start + j] = 1.0
                zs[a, i, start + j] = min(max(pz + uz, 0.0), z_max)
                ys[a, i, start + j] = min(max(py + uy, 0.0), y_max)
                xs[a, i, start + j] = min(max(px + ux, 0.0), x_max)
    rows = np.empty((d_, h, w), np.float32)
    for c in range(image.shape[0]):
        src = image[c]
        for a in range(d_):  # read everything before writing: the reads overlap other rows
            for i in range(h):
                lo = starts[a, i]
                hi = stops[a, i]
                _gather_row_3d(src, rows[a, i, lo:hi], zs[a, i, lo:hi], ys[a, i, lo:hi], xs[a, i, lo:hi])
        for a in range(d_):
            for i in range(h):
                for j in range(starts[a, i], stops[a, i]):
                    src[origin[0] + a, origin[1] + i, origin[2] + j] = rows[a, i, j]


@njit(cache=True)
def affine_sample_2d(src, out, origin_y, origin_x, matrix, offset):
    """``out[i, j] = src(matrix @ (origin + (i, j)) + offset)``, bilinear, clamp-to-edge."""
    h, w = out.shape
    y_max = src.shape[0] - 1.0
    x_max = src.shape[1] - 1.0
    ys = np.empty(w)
    xs = np.empty(w)
    for i in range(h):
        py = origin_y + i
        for j in range(w):
            px = origin_x + j
            ys[j] = min(max(matrix[0, 0] * py + matrix[0, 1] * px + offset[0], 0.0), y_max)
            xs[j] = min(max(matrix[1, 0] * py + matrix[1, 1] * px + offset[1], 0.0), x_max)
        _gather_row_2d(src, out[i], ys, xs)


@njit(cache=True)
def affine_sample_3d(src, out, origin, matrix, offset):
    """3D version of :func:`affine_sample_2d`."""
    d, h, w = out.shape
    z_max = src.shape[0] - 1.0
    y_max = src.shape[1] - 1.0
    x_max = src.shape[2] - 1.0
    zs = np.empty(w)
    ys = np.empty(w)
    xs = np.empty(w)
    for k in range(d):
        pz = origin[0] + k
        for i in range(h):
            py = origin[1] + i
            for j in range(w):
                px = origin[2] + j
                zs[j] = min(max(matrix[0, 0] * pz + matrix[0, 1] * py + matrix[0, 2] * px + offset[0], 0.0), z_max)
                ys[j] = min(max(matrix[1, 0] * pz + matrix[1, 1] * py + matrix[1, 2] * px + offset[1], 0.0), y_max)
                xs[j] = min(max(matrix[2, 0] * pz + matrix[2, 1] * py + matrix[2, 2] * px + offset[2], 0.0), x_max)
            _gather_row_3d(src, out[k, i], zs, ys, xs)
