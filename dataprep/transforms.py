"""Array transforms (MONAI ``Transform`` subclasses), channel-first ``(C, H, W)``.

They accept numpy arrays or torch tensors and return numpy arrays; intensities leave
as float32 in [0, 1], masks as float32 in {0, 1}. Work is done with numpy and OpenCV
because one 224 px image costs well under a millisecond that way, which is what lets
``prepare`` reach hundreds of images per second. The dictionary versions live in
:mod:`dataprep.dictionary`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from monai.transforms import Transform

from .pixels import RESIZE_MODES, keep_aspect_geometry, resize_keep_aspect, to_unit

__all__ = [
    "EnsureGrey", "ScaleIntensityToUnit", "PercentileNormalize", "ResizeKeepAspect", "CLAHE",
    "BrainForeground", "LungFieldMask", "UltrasoundFrameCrop", "UltrasoundForeground", "as_numpy",
]


def as_numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array or (CPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _channel_first(x: Any) -> np.ndarray:
    arr = as_numpy(x)
    if arr.ndim == 2:  # be forgiving with a bare (H, W) image
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a channel-first (C, H, W) image, got shape {arr.shape}")
    return arr


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def _large_components(mask: np.ndarray, share: float = 0.02, min_share_of_image: float = 0.002) -> np.ndarray:
    """Every 8-connected component at least ``share`` of the largest one and ``min_share_of_image`` of the
    image: an organ in several pieces (the temporal lobes and the cerebellum on a low brain slice, two
    hemispheres at the top) keeps them all, while specks of noise go."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero((areas >= share * areas.max()) & (areas >= min_share_of_image * mask.size))
    if len(keep) == 0:
        keep = [1 + int(np.argmax(areas))]
    return np.isin(labels, keep)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes: flood the background from a padded border; what the flood misses is inside."""
    m = np.pad(mask.astype(np.uint8), 1)
    flood = m.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return (m | (1 - flood)).astype(bool)[1:-1, 1:-1]


def _otsu(values: np.ndarray) -> float:
    """Otsu threshold of float values in [0, 1] (256 bins)."""
    hist = np.bincount(np.clip((values * 255.0).astype(np.int32), 0, 255).ravel(), minlength=256).astype(float)
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return float(np.nanargmax(np.nan_to_num(between))) / 255.0 + 0.5 / 255.0


class EnsureGrey(Transform):
    """(C, H, W) -> (1, H, W): RGB(A) to luma, one channel unchanged.

    Example:
        >>> EnsureGrey()(np.ones((3, 4, 4), np.uint8)).shape
        (1, 4, 4)
    """

    def __call__(self, img: Any) -> np.ndarray:
        arr = _channel_first(img)
        if arr.shape[0] == 1:
            return arr
        if arr.shape[0] not in (3, 4):
            raise ValueError(f"cannot make grey from {arr.shape[0]} channels")
        grey = 0.299 * arr[0].astype(np.float32) + 0.587 * arr[1] + 0.114 * arr[2]
        return grey[None].astype(np.float32 if not np.issubdtype(arr.dtype, np.integer) else np.float32)


class ScaleIntensityToUnit(Transform):
    """To float32 in [0, 1]: integers by their dtype range (or ``value_range``), floats
    already in [0, 1] unchanged, other floats min-max scaled.

    Example:
        >>> float(ScaleIntensityToUnit()(np.full((1, 2, 2), 255, np.uint8)).max())
        1.0
    """

    def __init__(self, value_range: tuple[float, float] | None = None) -> None:
        self.value_range = value_range

    def __call__(self, img: Any) -> np.ndarray:
        return to_unit(_channel_first(img), self.value_range)


class PercentileNormalize(Transform):
    """Map the ``lower``/``upper`` percentiles (default 0.5/99.5) to 0/1 and clip.

    ``nonzero=True`` takes the percentiles over non-zero pixels only (skull-stripped MRI).

    Example:
        >>> x = PercentileNormalize()(np.arange(100, dtype=np.float32).reshape(1, 10, 10))
        >>> float(x.min()), float(x.max())
        (0.0, 1.0)
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, nonzero: bool = False) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper, self.nonzero = lower, upper, nonzero

    def percentiles(self, arr: np.ndarray) -> tuple[float, float]:
        values = arr[arr != 0] if self.nonzero else arr
        if values.size == 0:
            return 0.0, 1.0
        if values.dtype in (np.uint8, np.uint16):  # histogram percentiles: linear time, exact
            cdf = np.cumsum(np.bincount(values.ravel()))
            n = cdf[-1]
            lo = int(np.searchsorted(cdf, self.lower / 100.0 * (n - 1), side="right"))
            hi = int(np.searchsorted(cdf, self.upper / 100.0 * (n - 1), side="right"))
            return float(lo), float(hi)
        lo, hi = np.percentile(values, (self.lower, self.upper))
        return float(lo), float(hi)

    def __call__(self, img: Any) -> np.ndarray:
        arr = as_numpy(img)  # any channel-first shape: (C, H, W) or a (C, X, Y, Z) volume
        lo, hi = self.percentiles(arr)
        out = (arr.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
        return np.clip(out, 0.0, 1.0, out=out)


class ResizeKeepAspect(Transform):
    """Resize the longer side to ``size`` keeping the aspect ratio, pad (centred) to a square.

    ``mode``: 'area' (averaging; keeps ultrasound speckle statistics when shrinking),
    'linear', or 'mask' (nearest; a non-empty mask never becomes empty, it falls back to
    any-overlap so that small lesions survive).

    Example:
        >>> float(ResizeKeepAspect(8)(np.ones((1, 4, 2), np.float32))[0].sum())
        32.0
    """

    def __init__(self, size: int = 224, mode: str = "area", pad_value: float = 0.0) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r}")
        self.size, self.mode, self.pad_value = int(size), mode, pad_value

    def geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(new_h, new_w, top, left) for an input of h x w."""
        return keep_aspect_geometry(h, w, self.size)

    def __call__(self, img: Any) -> np.ndarray:
        return resize_keep_aspect(_channel_first(img), self.size, self.mode, self.pad_value)


class CLAHE(Transform):
    """Contrast-limited adaptive histogram equalisation (OpenCV), on [0, 1] floats.

    Example:
        >>> CLAHE()(np.random.rand(1, 32, 32).astype(np.float32)).dtype
        dtype('float32')
    """

    def __init__(self, clip_limit: float = 2.0, tile_grid: Sequence[int] = (8, 8)) -> None:
        self.clip_limit, self.tile_grid = float(clip_limit), tuple(int(t) for t in tile_grid)

    def __call__(self, img: Any) -> np.ndarray:
        arr = _channel_first(img)
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.tile_grid)
        planes = [clahe.apply(np.rint(np.clip(p, 0, 1) * 65535).astype(np.uint16)) for p in arr]
        return (np.stack(planes).astype(np.float32) / 65535.0).astype(np.float32)


class BrainForeground(Transform):
    """Head/brain mask of a [0, 1] MRI slice: half Otsu on a smoothed image, every component at least a
    tenth of the largest (a low slice's temporal lobes and cerebellum lie apart), holes filled. Returns
    (1, H, W) float32 in {0, 1}.

    Example:
        >>> x = np.zeros((1, 32, 32), np.float32); x[0, 8:24, 8:24] = 0.8
        >>> mask = BrainForeground()(x)[0]
        >>> bool(mask[8:24, 8:24].all()), bool(mask[:4].any())   # the head, and not the far background
        (True, False)
    """

    def __init__(self, min_threshold: float = 0.02) -> None:
        self.min_threshold = min_threshold

    def __call__(self, img: Any) -> np.ndarray:
        plane = _channel_first(img)[0].astype(np.float32)
        smooth = cv2.GaussianBlur(plane, (5, 5), 0)
        thr = max(self.min_threshold, 0.5 * _otsu(smooth))  # half Otsu keeps dark CSF and grey matter
        mask = _large_components(smooth > thr).astype(np.uint8)
        # A closing takes in the dark CSF between the brain and its edge, which no threshold separates
        # from the background; the hole filling then takes the ventricles.
        side = max(3, int(round(min(plane.shape) / 45)) | 1)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
        mask = _fill_holes(mask > 0)
        return mask[None].astype(np.float32)


class LungFieldMask(Transform):
    """Lung fields of a frontal chest X-ray in [0, 1] (bright = dense).

    A simple robust method: the body is the largest bright component; lungs are the
    dark (Otsu within the body) regions inside it that do not touch the image border
    (outside air does), the two largest kept, closed and hole-filled. When that finds
    less than ``min_fraction`` of the image, the body mask is returned instead.

    Example:
        >>> LungFieldMask()(np.random.rand(1, 64, 64).astype(np.float32)).shape
        (1, 64, 64)
    """

    def __init__(self, min_fraction: float = 0.05) -> None:
        self.min_fraction = min_fraction

    def __call__(self, img: Any) -> np.ndarray:
        plane = cv2.GaussianBlur(_channel_first(img)[0].astype(np.float32), (5, 5), 0)
        h, w = plane.shape
        body = _fill_holes(_largest_component(plane > max(0.05, 0.5 * _otsu(plane))))
        inside = plane[body]
        if inside.size == 0:
            return np.ones((1, h, w), np.float32)
        dark = (plane < _otsu(inside)) & body
        n, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
        border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
        candidates = [(stats[i, cv2.CC_STAT_AREA], i) for i in range(1, n) if i not in border]
        keep = [i for _, i in sorted(candidates, reverse=True)[:2]]
        lungs = np.isin(labels, keep)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, h // 32) | 1, max(3, w // 32) | 1))
        lungs = _fill_holes(cv2.morphologyEx(lungs.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0)
        if lungs.mean() < self.min_fraction:
            lungs = body
        return lungs[None].astype(np.float32)


class UltrasoundFrameCrop(Transform):
    """Crop the black frame and burnt-in annotation borders of an ultrasound image.

    The scan region is the largest non-dark component after an opening that removes thin
    text, callipers and tick marks; the crop is its bounding box. :meth:`box` gives the
    box so that masks can be cropped the same way.

    Example:
        >>> x = np.zeros((1, 40, 40), np.float32); x[0, 10:30, 5:35] = 0.5
        >>> UltrasoundFrameCrop()(x).shape
        (1, 20, 30)
    """

    def __init__(self, threshold: float = 0.04, open_size: int = 5) -> None:
        self.threshold, self.open_size = threshold, open_size

    def box(self, img: Any) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the scan region; the whole image if none is found."""
        plane = _channel_first(img)[0]
        h, w = plane.shape
        step = max(1, max(h, w) // 256)  # find the box on a small copy: same answer, less work
        small = plane[::step, ::step].astype(np.float32)
        scale = float(plane.max()) or 1.0
        mask = (small / scale > self.threshold).astype(np.uint8)
        kernel = np.ones((self.open_size, self.open_size), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        if not mask.any():
            return 0, h, 0, w
        rows, cols = np.nonzero(_largest_component(mask))
        top, bottom = rows.min() * step, min(h, (rows.max() + 1) * step)
        left, right = cols.min() * step, min(w, (cols.max() + 1) * step)
        return int(top), int(bottom), int(left), int(right)

    def __call__(self, img: Any, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        arr = _channel_first(img)
        top, bottom, left, right = box if box is not None else self.box(arr)
        return arr[:, top:bottom, left:right]


class UltrasoundForeground(Transform):
    """Scan-region mask of an ultrasound image in [0, 1]: non-dark, largest component, filled.

    Example:
        >>> x = np.zeros((1, 16, 16), np.float32); x[0, 4:12, 4:12] = 0.5
        >>> mask = UltrasoundForeground()(x)[0]
        >>> bool(mask[4:12, 4:12].all()), bool(mask[:2].any())   # the scan region, and not the far background
        (True, False)
    """

    def __init__(self, threshold: float = 0.04) -> None:
        self.threshold = threshold

    def __call__(self, img: Any) -> np.ndarray:
        plane = cv2.GaussianBlur(_channel_first(img)[0].astype(np.float32), (5, 5), 0)
        mask = _fill_holes(_largest_component(plane > self.threshold))
        return mask[None].astype(np.float32)
