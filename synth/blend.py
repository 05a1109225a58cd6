"""Poisson (seamless) blending as a function of its own: :func:`poisson_blend`, on the window
solver of the Poisson task (``tasks.structural.solve_window``)."""
from __future__ import annotations

import numpy as np

from . import kernels
from .tasks.geometry import bounding_box
from .tasks.structural import solve_window
from .validation import check_intensities, check_mask_like


def poisson_blend(target, source, mask, *, mixed: bool = False, clip: bool = True):
    """Seamlessly clone ``source`` into ``target`` inside ``mask``.

    Solves the exact discrete Poisson problem on the mask (guidance: the source's
    gradients, or with ``mixed=True`` per edge the larger of source and target
    gradient), keeping every pixel outside the mask equal to ``target``. Arrays are
    float images in [0, 1] of one shape, 2D (H, W) or 3D (D, H, W), already aligned;
    ``mask`` is boolean or {0, 1}. Returns a float32 array (clipped to [0, 1] unless
    ``clip=False``). Both images are read, and checked, only in the mask's bounding box grown
    by one pixel; elsewhere the result is the target as given.

    Example:
        >>> import numpy as np, synth
        >>> t = np.full((32, 32), 0.2, np.float32); s = np.full((32, 32), 0.9, np.float32)
        >>> m = np.zeros((32, 32), bool); m[8:24, 8:24] = True
        >>> out = synth.poisson_blend(t, s, m)   # a flat source blends into a flat target
        >>> bool(np.allclose(out, 0.2, atol=1e-3))
        True
    """
    target, source = np.asarray(target), np.asarray(source)
    for name, image in (("target", target), ("source", source)):
        if not np.issubdtype(image.dtype, np.floating) or image.size == 0:
            check_intensities(image, name)  # raises, naming the problem
    if target.ndim not in (2, 3):
        raise ValueError(f"target must be 2D (H, W) or 3D (D, H, W); got shape {target.shape}")
    if source.shape != target.shape:
        raise ValueError(f"source shape {source.shape} does not match target shape {target.shape}")
    mask = check_mask_like(np.asarray(mask), target.shape, "mask")
    box = bounding_box(mask)
    out = target.astype(np.float32, copy=True)
    if box is None:
        return out
    window = tuple(slice(max(0, a - 1), min(n, b + 1)) for a, b, n in zip(*box, mask.shape))
    # only the window is read, so only it is checked: numpy's min and max of two 224 x 224
    # images took a tenth of blending a 1,000-pixel lesion
    windows = {"target": np.ascontiguousarray(out[window]),
               "source": np.ascontiguousarray(source[window], dtype=np.float32)}
    for name, values in windows.items():
        if kernels.count_outside_unit(values.reshape(-1)):
            check_intensities(values, f"{name} (inside the mask's window)")  # raises with min and max
    out[window] = solve_window(windows["target"], windows["source"], mask[window], mixed, clip=clip)
    return out
