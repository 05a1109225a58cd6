"""Poisson (seamless) blending: the public :func:`poisson_blend` and the window solver
that the Poisson task shares with it."""
from __future__ import annotations

import numpy as np

from . import geometry, kernels
from .geometry import bounding_box
from .validation import check_intensities, check_mask_like

# Per-pixel residual bound of the CG solve, in intensity units of [0, 1] images. Measured against
# an exact sparse solve: max error 0.01-0.05 grey levels of 255 in 2D (multigrid-preconditioned),
# 0.1-0.35 in 3D (benchmarks/).
POISSON_TOLERANCE = 1e-4
POISSON_MAX_ITER = 2000


def solve_window(target: np.ndarray, guide: np.ndarray, mask: np.ndarray, mixed: bool,
                 tol: float = POISSON_TOLERANCE) -> np.ndarray:
    """Solve the masked Poisson problem on a window; returns the window with the
    masked pixels replaced (float32). ``target``/``guide`` are float32, ``mask`` bool,
    all of one 2D or 3D shape; the window must reach one pixel past the mask unless
    the mask touches the image border there."""
    if mask.all():  # the window reaches past the mask wherever the image allows: it covers the whole image
        raise ValueError("the mask covers the whole image: Poisson blending needs boundary pixels outside it")
    solve = kernels.poisson_2d if target.ndim == 2 else kernels.poisson_3d
    out, _, n_boundary = solve(np.ascontiguousarray(target, dtype=np.float32),
                               np.ascontiguousarray(guide, dtype=np.float32),
                               np.ascontiguousarray(mask, dtype=np.uint8), mixed, tol, POISSON_MAX_ITER)
    if n_boundary == 0 and mask.any():
        raise ValueError("the mask covers the whole image: Poisson blending needs boundary pixels outside it")
    return out


def poisson_blend(target, source, mask, *, mixed: bool = False, clip: bool = True):
    """Seamlessly clone ``source`` into ``target`` inside ``mask``.

    Solves the exact discrete Poisson problem on the mask (guidance: the source's
    gradients, or with ``mixed=True`` per edge the larger of source and target
    gradient), keeping every pixel outside the mask equal to ``target``. Arrays are
    float images in [0, 1] of one shape, 2D (H, W) or 3D (D, H, W), already aligned;
    ``mask`` is boolean or {0, 1}. Returns a float32 array (clipped to [0, 1] unless
    ``clip=False``).

    Example:
        >>> import numpy as np, synth
        >>> t = np.full((32, 32), 0.2, np.float32); s = np.full((32, 32), 0.9, np.float32)
        >>> m = np.zeros((32, 32), bool); m[8:24, 8:24] = True
        >>> out = synth.poisson_blend(t, s, m)   # a flat source blends into a flat target
        >>> bool(np.allclose(out, 0.2, atol=1e-3))
        True
    """
    target = check_intensities(np.asarray(target), "target")
    source = check_intensities(np.asarray(source), "source")
    if target.ndim not in (2, 3):
        raise ValueError(f"target must be 2D (H, W) or 3D (D, H, W); got shape {target.shape}")
    if source.shape != target.shape:
        raise ValueError(f"source shape {source.shape} does not match target shape {target.shape}")
    mask = check_mask_like(np.asarray(mask), target.shape, "mask")
    box = bounding_box(mask)
    out = target.astype(np.float32, copy=True)
    if box is None:
        return out
    window = geometry.window(*geometry.grow(*box, 1, mask.shape))
    solved = solve_window(out[window], source[window].astype(np.float32), mask[window], mixed)
    if clip:  # only the window changed; the rest is target, already in [0, 1]
        np.minimum(np.maximum(solved, 0.0, out=solved), 1.0, out=solved)  # np.clip costs 10 us a call
    out[window] = solved
    return out
