"""A geometric multigrid V-cycle on a masked 2D grid, used as the preconditioner of the
Poisson solver's conjugate gradients (MGPCG, McAdams et al. 2010).

Jacobi-preconditioned CG needs iterations that grow with the mask's diameter; the V-cycle
removes smooth error on coarser grids, so a few iterations reach the tolerance whatever the
lesion's size. Grids are cell-centred and padded by one zero cell, as in :mod:`.poisson`. A
coarse cell is inside when any of its 2 x 2 children is; the coarse operator is the same
5-point stencil with Dirichlet beyond the coarse grid (always positive definite).
Prolongation is bilinear and restriction its transpose; smoothing is damped Jacobi, the same
sweeps before and after the coarse correction: the cycle is a fixed symmetric positive
definite operator, as CG requires. The levels live in flat buffers (views per level), and
every loop runs branch-free along rows in float32, so the compiler vectorises it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

COARSEST = 3  # stop coarsening when a side is this short
COARSEST_SWEEPS = 2  # pairs of Jacobi sweeps on the coarsest grid (one pair before and after the others)
OMEGA = np.float32(0.8)  # the damping that smooths best for the 5-point Laplacian
_FAST = {"reassoc", "nsz", "contract"}
_Q1, _Q3 = np.float32(0.25), np.float32(0.75)


@njit(cache=True)
def allocate_levels(h, w):
    """The grid hierarchy of an h x w grid: ``(shapes, buffers)``, where ``shapes[l]`` is level l's
    padded (H, W) and ``buffers`` seven zeroed flat arrays that :func:`view` cuts per level:
    inside, diagonal, its inverse, and the work arrays of :func:`v_cycle`. Fill level 0's
    inside, diagonal and inverse, then call :func:`coarsen`."""
    n, a, b = 1, h, w
    while min(a, b) > COARSEST:
        a, b = (a + 1) // 2, (b + 1) // 2
        n += 1
    shapes = np.zeros((n, 2), np.int64)
    size = 0
    for level in range(n):
        shapes[level, 0], shapes[level, 1] = h + 2, w + 2
        size += (h + 3) * (w + 3)  # a slot is as large as the largest view cut from it
        h, w = (h + 1) // 2, (w + 1) // 2
    return shapes, np.zeros((7, size), np.float32)


@njit(cache=True)
def coarsen(shapes, buffers):
    """Fill the coarse levels from level 0: a coarse cell is inside when any of its children is."""
    for level in range(1, shapes.shape[0]):
        fine = view(buffers[0], shapes, level - 1)
        inside = view(buffers[0], shapes, level)
        for i in range(fine.shape[0] - 2):
            for j in range(fine.shape[1] - 2):
                if fine[i + 1, j + 1] > 0.0:
                    inside[i // 2 + 1, j // 2 + 1] = 1.0
        diag, inv_diag = view(buffers[1], shapes, level), view(buffers[2], shapes, level)
        for i in range(inside.shape[0]):
            for j in range(inside.shape[1]):
                diag[i, j] = np.float32(4.0) * inside[i, j]
                inv_diag[i, j] = np.float32(0.25) * inside[i, j]


@njit(cache=True, inline="always")
def view(buffer, shapes, level, extra_rows=0, cols=-1):
    """Level ``level``'s 2D view of a flat buffer (``extra_rows`` more rows, ``cols`` columns if given)."""
    start = 0
    for k in range(level):
        start += (shapes[k, 0] + 1) * (shapes[k, 1] + 1)
    rows = shapes[level, 0] + extra_rows
    width = shapes[level, 1] if cols < 0 else cols
    return buffer[start:start + rows * width].reshape((rows, width))


@njit(cache=True, fastmath=_FAST)
def _jacobi_sweep(x, b, inside, inv_diag, out):
    """One damped Jacobi sweep on A x = b, written to ``out``."""
    H, W = x.shape
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            nb = x[i - 1, j] + x[i + 1, j] + x[i, j - 1] + x[i, j + 1]
            out[i, j] = x[i, j] + OMEGA * (inv_diag[i, j] * (b[i, j] + nb) - inside[i, j] * x[i, j])


@njit(cache=True, fastmath=_FAST)
def _smooth(x, b, inside, inv_diag, tmp, from_zero):
    """Two damped Jacobi sweeps on A x = b, x updated in place (``tmp`` of at least x's shape);
    ``from_zero``: x is 0, so the first sweep is x = omega b / diag."""
    H, W = x.shape
    if from_zero:
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                tmp[i, j] = OMEGA * inv_diag[i, j] * b[i, j]
            tmp[i, 0] = 0.0
            tmp[i, W - 1] = 0.0
        for j in range(W):
            tmp[0, j] = 0.0
            tmp[H - 1, j] = 0.0
    else:
        _jacobi_sweep(x, b, inside, inv_diag, tmp)
    _jacobi_sweep(tmp, b, inside, inv_diag, x)


@njit(cache=True, fastmath=_FAST)
def _restrict_residual(x, b, inside, diag, res, half, coarse_b, coarse_inside):
    """coarse_b = P^T (b - A x), P bilinear: weights 1/4, 3/4, 3/4, 1/4 along each axis over a
    coarse cell's two children and their outer neighbours. ``res`` and ``half`` have one spare row
    (and ``res`` one spare column), zero, past the grid, where an odd side's last child would be."""
    H, W = x.shape
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            nb = x[i - 1, j] + x[i + 1, j] + x[i, j - 1] + x[i, j + 1]
            res[i, j] = inside[i, j] * (b[i, j] + nb) - diag[i, j] * x[i, j]
    Hc, Wc = coarse_b.shape
    for i in range(H + 1):
        for c in range(1, Wc - 1):
            half[i, c] = _Q1 * (res[i, 2 * c - 2] + res[i, 2 * c + 1]) + _Q3 * (res[i, 2 * c - 1] + res[i, 2 * c])
    for a in range(1, Hc - 1):
        for c in range(1, Wc - 1):
            coarse_b[a, c] = coarse_inside[a, c] * (_Q1 * (half[2 * a - 2, c] + half[2 * a + 1, c])
                                                    + _Q3 * (half[2 * a - 1, c] + half[2 * a, c]))


@njit(cache=True, fastmath=_FAST)
def _prolong_add(x, inside, coarse_x, half):
    """x += P coarse_x on the inside cells (bilinear: 3/4 of the parent, 1/4 of its neighbour)."""
    H, W = x.shape
    Wc = coarse_x.shape[1]
    for i in range(1, H - 1):
        a = (i + 1) // 2
        other = a - 1 if i % 2 == 1 else a + 1
        for c in range(Wc):
            half[i, c] = _Q3 * coarse_x[a, c] + _Q1 * coarse_x[other, c]
    for i in range(1, H - 1):
        for c in range(1, Wc - 1):
            j = 2 * c - 1
            x[i, j] += inside[i, j] * (_Q3 * half[i, c] + _Q1 * half[i, c - 1])
            if j + 1 < W - 1:
                x[i, j + 1] += inside[i, j + 1] * (_Q3 * half[i, c] + _Q1 * half[i, c + 1])


@njit(cache=True)
def v_cycle(r, z, shapes, buffers):
    """z = M^-1 r: one V-cycle from zero over the levels of :func:`allocate_levels`."""
    n = shapes.shape[0]
    inside, diag, inv_diag, xs = buffers[0], buffers[1], buffers[2], buffers[3]
    bs, res, half = buffers[4], buffers[5], buffers[6]
    for level in range(n):
        x = z if level == 0 else view(xs, shapes, level)
        b = r if level == 0 else view(bs, shapes, level)
        tmp = view(res, shapes, level)
        _smooth(x, b, view(inside, shapes, level), view(inv_diag, shapes, level), tmp, True)
        if level == n - 1:
            for _ in range(COARSEST_SWEEPS - 1):
                _smooth(x, b, view(inside, shapes, level), view(inv_diag, shapes, level), tmp, False)
            break
        _restrict_residual(x, b, view(inside, shapes, level), view(diag, shapes, level),
                           view(res, shapes, level, 1, shapes[level, 1] + 1),
                           view(half, shapes, level, 1, shapes[level + 1, 1]),
                           view(bs, shapes, level + 1), view(inside, shapes, level + 1))
    for level in range(n - 2, -1, -1):
        x = z if level == 0 else view(xs, shapes, level)
        b = r if level == 0 else view(bs, shapes, level)
        _prolong_add(x, view(inside, shapes, level), view(xs, shapes, level + 1),
                     view(half, shapes, level, 0, shapes[level + 1, 1]))
        _smooth(x, b, view(inside, shapes, level), view(inv_diag, shapes, level), view(res, shapes, level), False)
