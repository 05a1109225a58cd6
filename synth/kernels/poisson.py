"""The exact masked Poisson problem, solved matrix-free by conjugate gradients (in 2D
preconditioned by a multigrid V-cycle, :mod:`.multigrid`; in 3D by the diagonal).

For every pixel p inside the mask Y (the unknowns):

    sum_{q in N(p)} (f_p - f_q) = sum_{q in N(p)} v_pq,   f_q = target_q for q outside Y,

with N(p) the 4-neighbours (6 in 3D) that exist in the image (Neumann at the image
border) and v_pq = g_p - g_q the guidance gradient (source, or per edge the larger
of source and target gradient for mixed blending). This is Perez et al.'s discrete
system on the mask itself, not OpenCV's eroded-mask box problem.

The solver works on a window (crop) that reaches one pixel past the mask wherever
the image allows, so a neighbour outside the window is outside the image. Vectors
live on the window grid padded by one zero cell, which turns the operator into a
branch-free stencil that the compiler vectorises; cells outside the mask stay 0.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .multigrid import allocate_levels, coarsen, v_cycle, view


@njit(cache=True, inline="always")
def _edge(target, guide, mixed, t_p, g_p, tq, gq):
    v = g_p - gq
    if mixed:
        vt = t_p - tq
        if abs(vt) > abs(v):
            v = vt
    return v


# reassociation lets the compiler vectorise the dot products (2x faster); results stay
# deterministic for a given machine, which is the reproducibility we promise.
_FAST = {"reassoc", "nsz"}


@njit(cache=True, fastmath=_FAST)
def poisson_2d(target, guide, mask, mixed, tol, max_iter, clip):
    """Solve on a 2D window by multigrid-preconditioned CG; returns (solution window float32,
    iterations, boundary edges).

    ``tol`` bounds the largest per-pixel residual (intensity units); the solution
    equals ``target`` outside the mask, and is clipped to [0, 1] inside it if ``clip``.
    With no boundary edge (the mask is the whole window) the system is singular: no iteration
    runs and the caller sees 0 boundary edges."""
    h, w = target.shape
    H, W = h + 2, w + 2
    shapes, levels = allocate_levels(h, w)
    inside = view(levels[0], shapes, 0)
    diag = view(levels[1], shapes, 0)
    inv_diag = view(levels[2], shapes, 0)
    rhs = np.zeros((H, W), np.float32)
    x = np.zeros((H, W), np.float32)
    offset_sum = 0.0
    n_boundary = 0
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            t_p = target[i, j]
            g_p = guide[i, j]
            b = 0.0
            n = 0.0
            for step in range(4):
                qi = i + (-1, 1, 0, 0)[step]
                qj = j + (0, 0, -1, 1)[step]
                if qi < 0 or qi >= h or qj < 0 or qj >= w:
                    continue
                n += 1.0
                b += _edge(target, guide, mixed, t_p, g_p, target[qi, qj], guide[qi, qj])
                if not mask[qi, qj]:
                    b += target[qi, qj]
                    offset_sum += target[qi, qj] - guide[qi, qj]
                    n_boundary += 1
            inside[i + 1, j + 1] = 1.0
            diag[i + 1, j + 1] = n
            inv_diag[i + 1, j + 1] = 1.0 / n if n > 0 else 0.0  # a 1-pixel image: no neighbour
            rhs[i + 1, j + 1] = b
    coarsen(shapes, levels)
    shift = offset_sum / n_boundary if n_boundary > 0 else 0.0
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                x[i + 1, j + 1] = guide[i, j] + shift
    r = np.zeros((H, W), np.float32)
    z = np.zeros((H, W), np.float32)
    p = np.zeros((H, W), np.float32)
    q = np.zeros((H, W), np.float32)
    worst = np.float32(0.0)
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            ax = diag[i, j] * x[i, j] - x[i - 1, j] - x[i + 1, j] - x[i, j - 1] - x[i, j + 1]
            r[i, j] = inside[i, j] * (rhs[i, j] - ax)
            worst = max(worst, abs(r[i, j]))
    it = 0
    rz = np.float32(0.0)
    beta = np.float32(0.0)
    while worst >= tol and it < max_iter and n_boundary > 0:
        v_cycle(r, z, shapes, levels)
        rz_new = np.float32(0.0)
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                rz_new += r[i, j] * z[i, j]
        if it > 0:
            beta = np.float32(rz_new / rz)
        rz = rz_new
        # as in poisson_3d: the direction update runs one row ahead of q = A p
        for j in range(1, W - 1):
            p[1, j] = z[1, j] + beta * p[1, j]
        pq = np.float32(0.0)
        for i in range(1, H - 1):
            if i + 1 < H - 1:
                for j in range(1, W - 1):
                    p[i + 1, j] = z[i + 1, j] + beta * p[i + 1, j]
            for j in range(1, W - 1):
                v = inside[i, j] * (diag[i, j] * p[i, j] - p[i - 1, j] - p[i + 1, j] - p[i, j - 1] - p[i, j + 1])
                q[i, j] = v
                pq += p[i, j] * v
        if pq <= 0.0:
            break
        alpha = np.float32(rz / pq)
        worst = np.float32(0.0)
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                x[i, j] += alpha * p[i, j]
                r[i, j] -= alpha * q[i, j]
                worst = max(worst, abs(r[i, j]))
        it += 1
    out = target.copy()
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                out[i, j] = min(max(x[i + 1, j + 1], 0.0), 1.0) if clip else x[i + 1, j + 1]
    return out, it, n_boundary


@njit(cache=True, fastmath=_FAST)
def poisson_3d(target, guide, mask, mixed, tol, max_iter, clip):
    """3D version of :func:`poisson_2d` (6-neighbourhood), preconditioned by the diagonal."""
    d, h, w = target.shape
    D, H, W = d + 2, h + 2, w + 2
    inside = np.zeros((D, H, W), np.float32)
    inv_diag = np.zeros((D, H, W), np.float32)
    diag = np.zeros((D, H, W), np.float32)
    rhs = np.zeros((D, H, W), np.float32)
    x = np.zeros((D, H, W), np.float32)
    offset_sum = 0.0
    n_boundary = 0
    for a in range(d):
        for i in range(h):
            for j in range(w):
                if not mask[a, i, j]:
                    continue
                t_p = target[a, i, j]
                g_p = guide[a, i, j]
                b = 0.0
                n = 0.0
                for step in range(6):
                    qa = a + (-1, 1, 0, 0, 0, 0)[step]
                    qi = i + (0, 0, -1, 1, 0, 0)[step]
                    qj = j + (0, 0, 0, 0, -1, 1)[step]
                    if qa < 0 or qa >= d or qi < 0 or qi >= h or qj < 0 or qj >= w:
                        continue
                    n += 1.0
                    b += _edge(target, guide, mixed, t_p, g_p, target[qa, qi, qj], guide[qa, qi, qj])
                    if not mask[qa, qi, qj]:
                        b += target[qa, qi, qj]
                        offset_sum += target[qa, qi, qj] - guide[qa, qi, qj]
                        n_boundary += 1
                inside[a + 1, i + 1, j + 1] = 1.0
                diag[a + 1, i + 1, j + 1] = n
                inv_diag[a + 1, i + 1, j + 1] = 1.0 / n if n > 0 else 0.0
                rhs[a + 1, i + 1, j + 1] = b
    shift = offset_sum / n_boundary if n_boundary > 0 else 0.0
    for a in range(d):
        for i in range(h):
            for j in range(w):
                if mask[a, i, j]:
                    x[a + 1, i + 1, j + 1] = guide[a, i, j] + shift
    r = np.zeros((D, H, W), np.float32)
    p = np.zeros((D, H, W), np.float32)  # starts at 0 with beta = 0, so the first update makes p = z
    q = np.zeros((D, H, W), np.float32)
    rz = 0.0
    worst = 0.0
    for a in range(1, D - 1):
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                ax = (diag[a, i, j] * x[a, i, j] - x[a - 1, i, j] - x[a + 1, i, j]
                      - x[a, i - 1, j] - x[a, i + 1, j] - x[a, i, j - 1] - x[a, i, j + 1])
                r[a, i, j] = inside[a, i, j] * (rhs[a, i, j] - ax)
                rz += r[a, i, j] * r[a, i, j] * inv_diag[a, i, j]
                worst = max(worst, abs(r[a, i, j]))
    it = 0
    beta = np.float32(0.0)
    while worst >= tol and it < max_iter and n_boundary > 0:
        # Two passes per iteration instead of three: the direction update p = z + beta p
        # runs one plane ahead of q = A p, which needs the planes on both sides updated.
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                p[1, i, j] = r[1, i, j] * inv_diag[1, i, j] + beta * p[1, i, j]
        pq = np.float32(0.0)
        for a in range(1, D - 1):
            if a + 1 < D - 1:
                for i in range(1, H - 1):
                    for j in range(1, W - 1):
                        p[a + 1, i, j] = r[a + 1, i, j] * inv_diag[a + 1, i, j] + beta * p[a + 1, i, j]
            for i in range(1, H - 1):
                for j in range(1, W - 1):
                    v = inside[a, i, j] * (diag[a, i, j] * p[a, i, j] - p[a - 1, i, j] - p[a + 1, i, j]
                                           - p[a, i - 1, j] - p[a, i + 1, j] - p[a, i, j - 1] - p[a, i, j + 1])
                    q[a, i, j] = v
                    pq += p[a, i, j] * v
        if pq <= 0.0:
            break
        alpha = np.float32(rz / pq)
        rz_new = np.float32(0.0)
        worst = np.float32(0.0)
        for a in range(1, D - 1):
            for i in range(1, H - 1):
                for j in range(1, W - 1):
                    x[a, i, j] += alpha * p[a, i, j]
                    r[a, i, j] -= alpha * q[a, i, j]
                    rz_new += r[a, i, j] * r[a, i, j] * inv_diag[a, i, j]
                    worst = max(worst, abs(r[a, i, j]))
        beta = np.float32(rz_new / rz)
        rz = rz_new
        it += 1
    out = target.copy()
    for a in range(d):
        for i in range(h):
            for j in range(w):
                if mask[a, i, j]:
                    v = x[a + 1, i + 1, j + 1]
                    out[a, i, j] = min(max(v, 0.0), 1.0) if clip else v
    return out, it, n_boundary
