"""Pixel operations that need only numpy and OpenCV: intensity scaling to [0, 1] and the
aspect-keeping resize. The MONAI transforms in :mod:`dataprep.transforms` wrap them; code
that must not import MONAI (cache workers start in seconds, not ten) calls them directly."""
from __future__ import annotations

import cv2
import numpy as np

RESIZE_MODES = ("area", "linear", "mask")


def to_unit(arr: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """float32 in [0, 1]: integers by their dtype range (or ``value_range``), floats already in
    [0, 1] unchanged, other floats min-max scaled."""
    if value_range is not None:
        lo, hi = value_range
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = 0.0, float(np.iinfo(arr.dtype).max)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr.astype(np.float32, copy=False)
    out = (arr.astype(np.float32) - lo) / max(hi - lo, 1e-12)
    return np.clip(out, 0.0, 1.0, out=out)


def keep_aspect_geometry(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left) that fit an h x w image into size x size, centred."""
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return nh, nw, (size - nh) // 2, (size - nw) // 2


def _resize_plane(plane: np.ndarray, nh: int, nw: int, mode: str) -> np.ndarray:
    if mode == "mask":
        src = (plane > 0.5).astype(np.uint8)
        out = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
        if not out.any() and src.any():  # a small lesion must not vanish: any overlap counts
            out = cv2.resize(src.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA) > 0
        return out.astype(np.float32)
    shrink = nh < plane.shape[0]
    interp = cv2.INTER_AREA if mode == "area" and shrink else cv2.INTER_LINEAR
    return cv2.resize(plane.astype(np.float32), (nw, nh), interpolation=interp)


def resize_keep_aspect(arr: np.ndarray, size: int, mode: str = "area", pad_value: float = 0.0) -> np.ndarray:
    """Resize a channel-first (C, H, W) array so its longer side is ``size``, pad (centred) to a
    square; float32. ``mode``: 'area' (averaging when shrinking), 'linear', or 'mask'
    (nearest; a non-empty mask never becomes empty)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    nh, nw, top, left = keep_aspect_geometry(arr.shape[1], arr.shape[2], size)
    out = np.full((arr.shape[0], size, size), pad_value, np.float32)
    for c in range(arr.shape[0]):
        out[c, top:top + nh, left:left + nw] = _resize_plane(arr[c], nh, nw, mode)
    return out


MASK_RULE = ("lesion where a label-map mask (8 distinct values or fewer) is non-zero, and where a grey-level mask "
             "(JPEG ringing, anti-aliased edges) is at least half its maximum")


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """A lesion mask file's pixels as bool, by :data:`MASK_RULE`: 0/1, 0/255 and label maps keep
    every labelled pixel; a JPEG mask's ringing (low grey values around the edges) is dropped.

    Example:
        >>> binarize_mask(np.array([0, 255, 255, 0], np.uint8)).tolist()
        [False, True, True, False]
        >>> binarize_mask(np.array([0, 1, 2, 3, 4, 5, 6, 7, 250, 255], np.uint8)).tolist()  # JPEG ringing
        [False, False, False, False, False, False, False, False, True, True]
    """
    values = np.unique(mask[np.isfinite(mask)] if np.issubdtype(mask.dtype, np.floating) else mask)
    if values.size <= 8:
        return mask > 0
    return mask >= values[-1] / 2
