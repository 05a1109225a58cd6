"""Exact Euclidean distance to the nearest background pixel (2D and 3D), deterministic.

Felzenszwalb & Huttenlocher's separable algorithm: squared distances along the first axis
by two sweeps, then the lower envelope of parabolas along each further axis. Every
intermediate is an integer held exactly in float64, so the result is the same bit for bit
in every process (OpenCV's precise distanceTransform differs between runs by up to 8e-6,
which made guided deformations irreproducible across processes).

The distance is returned on a window of the mask only (the whole mask by default): every
line is still swept in full, but the envelopes are built and read only where the window needs
them, which halves the work when the window is a lesion inside a grown margin.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# "No background on this line": larger than any squared distance, small enough to add to.
FAR = 1e30
# A run length meaning "no background yet", far above any real distance: also the default cap
# (no cap), since a run this long is never reached
NO_BACKGROUND = 1 << 40


@njit(cache=True)
def _column_distances(fg, top, height, cap):
    """Squared distance along axis 0 to the nearest 0 of ``fg`` (FAR where a column has none
    or it is ``cap`` or more), for rows [top, top + height): runs of foreground counted down
    and up whole rows at a time (contiguous and branch-free: every column advances at once)."""
    h, w = fg.shape
    run = np.full(w, NO_BACKGROUND, np.int64)
    up = np.empty((height, w), np.int64)
    for i in range(top + height):
        for j in range(w):
            run[j] = (run[j] + 1) * (fg[i, j] != 0)
        if i >= top:
            up[i - top] = run
    run[:] = NO_BACKGROUND
    for i in range(h - 1, top + height - 1, -1):
        for j in range(w):
            run[j] = (run[j] + 1) * (fg[i, j] != 0)
    out = np.empty((height, w))
    for i in range(top + height - 1, top - 1, -1):
        for j in range(w):
            run[j] = (run[j] + 1) * (fg[i, j] != 0)
            nearest = min(up[i - top, j], run[j])
            out[i - top, j] = FAR if nearest >= cap else float(nearest * nearest)
    return out


@njit(cache=True)
def _envelope(f, out, start, v, z):
    """``out[q - start] = min_p f[p] + (q - p)^2`` for q in [start, start + out.size): the lower
    envelope of the parabolas rooted at the finite values of ``f`` (``v``, ``z``: scratch of
    length n and n + 1)."""
    n = f.size
    k = -1
    for q in range(n):
        if f[q] >= FAR:
            continue
        fq = f[q] + q * q
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -FAR
            z[1] = FAR
            continue
        s = (fq - (f[v[k]] + v[k] * v[k])) / (2.0 * (q - v[k]))
        while s <= z[k]:
            k -= 1
            s = (fq - (f[v[k]] + v[k] * v[k])) / (2.0 * (q - v[k]))
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = FAR
    if k < 0:
        out[:] = FAR
        return
    j = 0
    for q in range(start, start + out.size):
        while z[j + 1] < q:
            j += 1
        out[q - start] = (q - v[j]) * (q - v[j]) + f[v[j]]


@njit(cache=True)
def distance_to_background_2d(fg, top=0, left=0, height=-1, width=-1, cap=NO_BACKGROUND):
    """float32 distance from each pixel of a uint8 mask to its nearest 0 pixel (0 on the
    background; about 1e15 everywhere when the mask has no 0 at all), on the window of
    ``height`` x ``width`` pixels at (top, left) (-1: to the mask's end). Distances of
    ``cap`` or more come back as some value >= ``cap`` (fewer parabolas: faster)."""
    h, w = fg.shape
    height = h - top if height < 0 else height
    width = w - left if width < 0 else width
    d2 = _column_distances(fg, top, height, cap)
    v = np.empty(w, np.int64)
    z = np.empty(w + 1)
    row = np.empty(width)
    out = np.empty((height, width), np.float32)
    for i in range(height):
        _envelope(d2[i], row, left, v, z)
        for j in range(width):
            out[i, j] = np.sqrt(row[j])
    return out


@njit(cache=True)
def distance_to_background_3d(fg, lo=(0, 0, 0), shape=(-1, -1, -1), cap=NO_BACKGROUND):
    """3D version of :func:`distance_to_background_2d` on the window of ``shape`` at ``lo``."""
    d, h, w = fg.shape
    depth = d - lo[0] if shape[0] < 0 else shape[0]
    height = h - lo[1] if shape[1] < 0 else shape[1]
    width = w - lo[2] if shape[2] < 0 else shape[2]
    # axis 0: sweeps over whole planes, every (y, x) line at once
    d2 = _column_distances(fg.reshape(d, h * w), lo[0], depth, cap).reshape(depth, h, w)
    n = max(h, w)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1)
    line = np.empty(h)
    res = np.empty(n)
    # axis 1 on every column (axis 2 needs them all), kept only on the window's rows
    d2y = np.empty((depth, height, w))
    for k in range(depth):
        for j in range(w):
            for i in range(h):
                line[i] = d2[k, i, j]
            _envelope(line, res[:height], lo[1], v, z)
            for i in range(height):
                d2y[k, i, j] = res[i]
    out = np.empty((depth, height, width), np.float32)
    for k in range(depth):
        for i in range(height):
            _envelope(d2y[k, i], res[:width], lo[2], v, z)
            for j in range(width):
                out[k, i, j] = np.sqrt(res[j])
    return out



@njit(cache=True)
def capped_distance_2d(foreground, top, left, height, width, cap):
    """Distance from each pixel of the window (``height`` x ``width`` at top, left) of a
    boolean mask to its nearest background (False) pixel, exact below ``cap`` and some value
    >= ``cap`` elsewhere (found within ``cap`` pixels of the window). Empty (0 x 0) when no
    background lies that near: then no distance on the window is below ``cap``."""
    h, w = foreground.shape
    y0 = max(top - cap, 0)
    x0 = max(left - cap, 0)
    y1 = min(top + height + cap, h)
    x1 = min(left + width + cap, w)
    box = np.empty((y1 - y0, x1 - x0), np.uint8)
    background = False
    for i in range(y1 - y0):
        for j in range(x1 - x0):
            value = foreground[y0 + i, x0 + j]
            box[i, j] = value
            background |= not value
    if not background:
        return np.empty((0, 0), np.float32)
    return distance_to_background_2d(box, top - y0, left - x0, height, width, cap)


@njit(cache=True)
def capped_distance_3d(foreground, lo, shape, cap):
    """3D version of :func:`capped_distance_2d` on the window of ``shape`` at ``lo``."""
    d, h, w = foreground.shape
    z0 = max(lo[0] - cap, 0)
    y0 = max(lo[1] - cap, 0)
    x0 = max(lo[2] - cap, 0)
    z1 = min(lo[0] + shape[0] + cap, d)
    y1 = min(lo[1] + shape[1] + cap, h)
    x1 = min(lo[2] + shape[2] + cap, w)
    box = np.empty((z1 - z0, y1 - y0, x1 - x0), np.uint8)
    background = False
    for k in range(z1 - z0):
        for i in range(y1 - y0):
            for j in range(x1 - x0):
                value = foreground[z0 + k, y0 + i, x0 + j]
                box[k, i, j] = value
                background |= not value
    if not background:
        return np.empty((0, 0, 0), np.float32)
    return distance_to_background_3d(box, (lo[0] - z0, lo[1] - y0, lo[2] - x0), shape, cap)
