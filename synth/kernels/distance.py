"""Exact Euclidean distance to the nearest background pixel (2D and 3D), deterministic.

Felzenszwalb & Huttenlocher's separable algorithm: squared distances along the first axis
by two sweeps, then the lower envelope of parabolas along each further axis. Every
intermediate is an integer held exactly in float64, so the result is the same bit for bit
in every process (OpenCV's precise distanceTransform differs between runs by up to 8e-6,
which made guided deformations irreproducible across processes).
"""
from __future__ import annotations

import numpy as np
from numba import njit

# "No background on this line": larger than any squared distance, small enough to add to.
FAR = 1e30


@njit(cache=True)
def _sweep(fg, out):
    """Squared distance along a line to its nearest 0 of ``fg`` (FAR when it has none)."""
    n = fg.size
    last = -1
    for q in range(n):
        if fg[q] == 0:
            last = q
        out[q] = FAR if last < 0 else float(q - last) ** 2
    last = -1
    for q in range(n - 1, -1, -1):
        if fg[q] == 0:
            last = q
        if last >= 0:
            out[q] = min(out[q], float(last - q) ** 2)


@njit(cache=True)
def _envelope(f, out, v, z):
    """``out[q] = min_p f[p] + (q - p)^2``: the lower envelope of the parabolas rooted at the
    finite values of ``f`` (``v``, ``z``: scratch of length n and n + 1)."""
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
    for q in range(n):
        while z[j + 1] < q:
            j += 1
        out[q] = (q - v[j]) * (q - v[j]) + f[v[j]]


@njit(cache=True)
def distance_to_background_2d(fg):
    """float32 distance from each pixel of a uint8 mask to its nearest 0 pixel (0 on the
    background; about 1e15 everywhere when the mask has no 0 at all)."""
    h, w = fg.shape
    d2 = np.empty((h, w))
    line = np.empty(h, np.uint8)
    col = np.empty(h)
    for j in range(w):
        for i in range(h):
            line[i] = fg[i, j]
        _sweep(line, col)
        for i in range(h):
            d2[i, j] = col[i]
    v = np.empty(w, np.int64)
    z = np.empty(w + 1)
    row = np.empty(w)
    out = np.empty((h, w), np.float32)
    for i in range(h):
        _envelope(d2[i], row, v, z)
        for j in range(w):
            out[i, j] = np.sqrt(row[j])
    return out


@njit(cache=True)
def distance_to_background_3d(fg):
    """3D version of :func:`distance_to_background_2d`."""
    d, h, w = fg.shape
    d2 = np.empty((d, h, w))
    line = np.empty(d, np.uint8)
    col = np.empty(d)
    for i in range(h):
        for j in range(w):
            for k in range(d):
                line[k] = fg[k, i, j]
            _sweep(line, col)
            for k in range(d):
                d2[k, i, j] = col[k]
    n = max(h, w)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1)
    src = np.empty(h)
    res = np.empty(n)
    for k in range(d):
        for j in range(w):
            for i in range(h):
                src[i] = d2[k, i, j]
            _envelope(src, res[:h], v, z)
            for i in range(h):
                d2[k, i, j] = res[i]
    out = np.empty((d, h, w), np.float32)
    for k in range(d):
        for i in range(h):
            _envelope(d2[k, i], res[:w], v, z)
            for j in range(w):
                out[k, i, j] = np.sqrt(res[j])
    return out
