"""Images and references shared by the synth tests (made here, nothing downloaded)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl


def smooth_image(shape, seed: int = 0) -> np.ndarray:
    """A textured float32 image in [0.05, 0.95] of any 2D/3D shape."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    value = 0.5 + 0.25 * np.sin(grids[-1] / 5.0 + seed) * np.cos(grids[-2] / 7.0)
    if len(shape) == 3:
        value += 0.1 * np.sin(grids[0] / 3.0)
    value += 0.05 * rng.random(shape)
    return np.clip(value, 0.05, 0.95).astype(np.float32)


def disc_foreground(shape, fraction: float = 0.42) -> np.ndarray:
    """A centred ball (2D disc / 3D sphere) of radius ``fraction`` of the smallest side."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2.0 for n in shape], indexing="ij")
    return sum(g ** 2 for g in grids) <= (fraction * min(shape)) ** 2


def exact_poisson(target, guide, mask, mixed=False) -> np.ndarray:
    """Reference: assemble the masked Poisson system with scipy.sparse and solve it directly
    (SuperLU). Neighbours outside the image are dropped; outside the mask, f = target."""
    target = target.astype(np.float64)
    guide = guide.astype(np.float64)
    coords = np.argwhere(mask)
    index = -np.ones(mask.shape, np.int64)
    index[tuple(coords.T)] = np.arange(len(coords))
    rows, cols, vals = [], [], []
    b = np.zeros(len(coords))
    steps = [np.eye(mask.ndim, dtype=int)[a] * s for a in range(mask.ndim) for s in (-1, 1)]
    for k, p in enumerate(coords):
        for step in steps:
            q = p + step
            if np.any(q < 0) or np.any(q >= mask.shape):
                continue
            p_, q_ = tuple(p), tuple(q)
            rows.append(k)
            cols.append(k)
            vals.append(1.0)
            v = guide[p_] - guide[q_]
            if mixed and abs(target[p_] - target[q_]) > abs(v):
                v = target[p_] - target[q_]
            b[k] += v
            if mask[q_]:
                rows.append(k)
                cols.append(index[q_])
                vals.append(-1.0)
            else:
                b[k] += target[q_]
    a = sp.csc_matrix((vals, (rows, cols)), shape=(len(coords), len(coords)))
    out = target.copy()
    out[tuple(coords.T)] = spl.spsolve(a, b)
    return out
