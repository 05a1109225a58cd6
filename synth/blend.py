"""Poisson (seamless) blending as a function of its own: :func:`poisson_blend`, on the window
solver of the Poisson task (``tasks.structural.solve_window``)."""
from __future__ import annotations

import numpy as np

from .tasks import geometry
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
    if target.ndim not in (2, 3):
        raise ValueError(f"target must be 2D (H, W) or 3D (D, H, W); got shape {target.shape}")
    if source.shape != target.shape:
        raise ValueError(f"source shape {source.shape} does not match target shape {target.shape}")
    mask = check_mask_like(np.asarray(mask), target.shape, "mask")
    box = bounding_box(mask)
    if box is None:
        return check_intensities(target, "target").astype(np.float32)
    window = geometry.window(*geometry.grow(*box, 1, mask.shape))
    # only the window is read, so only it is checked: checking both whole images cost a tenth of
    # blending a 1,000-pixel lesion
    local = {name: check_intensities(np.ascontiguousarray(image[window]), f"{name} (inside the mask's window)")
             for name, image in (("target", target), ("source", source))}
    out = target.astype(np.float32, copy=True)
    out[window] = solve_window(local["target"], local["source"], mask[window], mixed, clip=clip)
    return out
