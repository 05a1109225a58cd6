"""Dictionary versions of :mod:`dataprep.transforms` (MONAI ``MapTransform``), with the
MONAI ``D`` / ``Dict`` aliases. Keys follow anomalib: ``image``, ``gt_mask``,
``gt_label``; the anatomy mask travels as ``foreground``.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from .transforms import (
    CLAHE,
    BrainForeground,
    EnsureGrey,
    LungFieldMask,
    PercentileNormalize,
    ResizeKeepAspect,
    ScaleIntensityToUnit,
    UltrasoundForeground,
    UltrasoundFrameCrop,
)

IMAGE, MASK, LABEL, FOREGROUND = "image", "gt_mask", "gt_label", "foreground"
SPATIAL_KEYS = (IMAGE, MASK, FOREGROUND)

__all__ = [
    "IMAGE", "MASK", "LABEL", "FOREGROUND", "SPATIAL_KEYS",
    "EnsureGreyd", "EnsureGreyD", "EnsureGreyDict",
    "ScaleIntensityToUnitd", "ScaleIntensityToUnitD", "ScaleIntensityToUnitDict",
    "PercentileNormalized", "PercentileNormalizeD", "PercentileNormalizeDict",
    "ResizeKeepAspectd", "ResizeKeepAspectD", "ResizeKeepAspectDict",
    "CLAHEd", "CLAHED", "CLAHEDict",
    "ForegroundMaskd", "ForegroundMaskD", "ForegroundMaskDict",
    "UltrasoundFrameCropd", "UltrasoundFrameCropD", "UltrasoundFrameCropDict",
]


class _PerKey(MapTransform):
    """Apply one array transform to each present key."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class EnsureGreyd(_PerKey):
    """Dictionary :class:`~dataprep.transforms.EnsureGrey`.

    Example:
        >>> EnsureGreyd("image")({"image": np.ones((3, 4, 4))})["image"].shape  # doctest: +SKIP
        (1, 4, 4)
    """

    def __init__(self, keys: KeysCollection = IMAGE, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = EnsureGrey()


class ScaleIntensityToUnitd(_PerKey):
    """Dictionary :class:`~dataprep.transforms.ScaleIntensityToUnit`.

    Example:
        >>> ScaleIntensityToUnitd("image")({"image": img})  # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection = IMAGE, value_range: tuple[float, float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleIntensityToUnit(value_range)


class PercentileNormalized(_PerKey):
    """Dictionary :class:`~dataprep.transforms.PercentileNormalize`.

    Example:
        >>> PercentileNormalized("image", 1, 99)({"image": img})  # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection = IMAGE, lower: float = 0.5, upper: float = 99.5,
                 nonzero: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PercentileNormalize(lower, upper, nonzero)


class CLAHEd(_PerKey):
    """Dictionary :class:`~dataprep.transforms.CLAHE`.

    Example:
        >>> CLAHEd("image")({"image": img})  # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection = IMAGE, clip_limit: float = 2.0,
                 tile_grid: Sequence[int] = (8, 8), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CLAHE(clip_limit, tile_grid)


class ResizeKeepAspectd(MapTransform):
    """Resize every spatial key to ``size`` with the same geometry: images with
    ``image_mode`` ('area' or 'linear'), masks (``gt_mask``, ``foreground``) as masks.

    Example:
        >>> ResizeKeepAspectd(size=224)({"image": img, "gt_mask": mask})  # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection = SPATIAL_KEYS, size: int = 224, image_mode: str = "area",
                 mask_keys: Sequence[str] = (MASK, FOREGROUND), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_keys = set(mask_keys)
        self.image_resize = ResizeKeepAspect(size, image_mode)
        self.mask_resize = ResizeKeepAspect(size, "mask")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shapes = {tuple(d[k].shape[-2:]) for k in self.key_iterator(d)}
        if len(shapes) > 1:
            raise ValueError(f"spatial keys differ in size: {sorted(shapes)}")
        for key in self.key_iterator(d):
            d[key] = (self.mask_resize if key in self.mask_keys else self.image_resize)(d[key])
        return d


class ForegroundMaskd(MapTransform):
    """Compute the anatomy mask of ``image`` into ``foreground`` with a modality method
    ('brain', 'lung', 'ultrasound'). An existing ``foreground`` is kept (e.g. BraTS
    volumes bring their own), unless ``overwrite``.

    Example:
        >>> ForegroundMaskd(method="brain")({"image": img})["foreground"]  # doctest: +SKIP
    """

    methods = {"brain": BrainForeground, "lung": LungFieldMask, "ultrasound": UltrasoundForeground}

    def __init__(self, keys: KeysCollection = IMAGE, method: str = "brain", foreground_key: str = FOREGROUND,
                 overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(keys)
        if method not in self.methods:
            raise ValueError(f"unknown foreground method {method!r}; choose from {sorted(self.methods)}")
        self.method = self.methods[method](**kwargs)
        self.foreground_key, self.overwrite = foreground_key, overwrite

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.overwrite or d.get(self.foreground_key) is None:
            key = next(iter(self.key_iterator(d)))
            d[self.foreground_key] = self.method(d[key])
        return d


class UltrasoundFrameCropd(MapTransform):
    """Crop all spatial keys to the scan region found on ``source_key``.

    Example:
        >>> UltrasoundFrameCropd()({"image": img, "gt_mask": mask})  # doctest: +SKIP
    """

    def __init__(self, keys: KeysCollection = SPATIAL_KEYS, source_key: str = IMAGE, threshold: float = 0.04,
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.crop = UltrasoundFrameCrop(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = self.crop.box(d[self.source_key])
        for key in self.key_iterator(d):
            d[key] = self.crop(d[key], box)
        return d


EnsureGreyD = EnsureGreyDict = EnsureGreyd
ScaleIntensityToUnitD = ScaleIntensityToUnitDict = ScaleIntensityToUnitd
PercentileNormalizeD = PercentileNormalizeDict = PercentileNormalized
ResizeKeepAspectD = ResizeKeepAspectDict = ResizeKeepAspectd
CLAHED = CLAHEDict = CLAHEd
ForegroundMaskD = ForegroundMaskDict = ForegroundMaskd
UltrasoundFrameCropD = UltrasoundFrameCropDict = UltrasoundFrameCropd
