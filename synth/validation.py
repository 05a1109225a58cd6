"""Input checks shared by every face of the engine: bad input raises ValueError naming
the problem; nothing is clipped, cast from integers or reshaped silently."""
from __future__ import annotations

import numpy as np

from . import kernels


def check_intensities(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Require a floating array, finite, with values in [0, 1]."""
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{name} must be a floating array with intensities in [0, 1]; got dtype {array.dtype} "
            "(scale integer images first, e.g. uint8 / 255)")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype in (np.float32, np.float64):
        # one vectorised pass without numpy's per-call costs (a min and a max of a 40 x 40 window took
        # 15 us); min and max are taken only to word the error
        if not kernels.count_outside_unit(np.ravel(array)):
            return array
    lo = array.min()
    hi = array.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} has values outside [0, 1] (min {float(lo):.4g}, max {float(hi):.4g})")
    return array


def check_mask_like(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Require a boolean or {0, 1} array of ``shape``; returns it as bool."""
    if array.shape != tuple(shape):
        raise ValueError(f"{name} shape {array.shape} does not match the image's spatial shape {tuple(shape)}")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be boolean or numeric 0/1; got dtype {array.dtype}")
    if array.size and not np.isin(np.unique(array), (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (or be boolean)")
    return array.astype(bool)
