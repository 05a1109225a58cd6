"""dataprep: read medical files, bring them to the working form, index the public datasets,
and draw seeded few-shot support sets.

Images leave as float32 in [0, 1], grey, (1, size, size), with an anatomy ``foreground``
mask; keys follow anomalib (``image``, ``gt_mask``, ``gt_label``).
"""
from __future__ import annotations

import importlib

# Names are imported on first use: the readers and pixel helpers need only numpy, OpenCV
# and the file libraries, while the transforms import MONAI (and torch), which costs seconds
# in every process that starts, e.g. each cache worker.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "brats": ("index_brats",),
    "chexpert": ("chexpert_label", "index_chexpert"),
    "datasets": ("index_brainmri", "index_busi", "index_folder", "index_mediclip", "index_mvfa"),
    "dictionary": (
        "CLAHED", "CLAHEd", "CLAHEDict", "EnsureGreyD", "EnsureGreyd", "EnsureGreyDict", "ForegroundMaskD",
        "ForegroundMaskd", "ForegroundMaskDict", "PercentileNormalizeD", "PercentileNormalized",
        "PercentileNormalizeDict", "ResizeKeepAspectD", "ResizeKeepAspectd", "ResizeKeepAspectDict",
        "ScaleIntensityToUnitD", "ScaleIntensityToUnitd", "ScaleIntensityToUnitDict",
        "UltrasoundFrameCropD", "UltrasoundFrameCropd", "UltrasoundFrameCropDict"
    ),
    "fewshot": (
        "FewShotError", "LeakageError", "default_support_path", "draw_support", "load_support",
        "verify_support", "write_support"
    ),
    "indexing": ("RawIndex", "RawUnit", "Skip"),
    "io": ("ImageData", "ReadError", "WriteError", "content_hash", "dicom_window", "read_image", "read_png"),
    "mvtec": ("detect_layout", "index_mvtec"),
    "modality": (
        "MODALITIES", "PipelineConfig", "modality_array_pipeline", "modality_pipeline", "volume_to_slices"
    ),
    "prepare": ("INDEXERS", "prepare_dataset"),
    "prepared": ("PrepareError", "read_index"),
    "transforms": (
        "CLAHE", "BrainForeground", "EnsureGrey", "LungFieldMask", "PercentileNormalize",
        "ResizeKeepAspect", "ScaleIntensityToUnit", "UltrasoundForeground", "UltrasoundFrameCrop"
    ),
}
_WHERE = {name: module for module, names in _SUBMODULES.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dataprep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    # reading
    "ImageData", "ReadError", "WriteError", "read_image", "read_png", "content_hash", "dicom_window",
    # array transforms
    "EnsureGrey", "ScaleIntensityToUnit", "PercentileNormalize", "ResizeKeepAspect", "CLAHE",
    "BrainForeground", "LungFieldMask", "UltrasoundFrameCrop", "UltrasoundForeground",
    # dictionary transforms
    "EnsureGreyd", "EnsureGreyD", "EnsureGreyDict", "ScaleIntensityToUnitd", "ScaleIntensityToUnitD",
    "ScaleIntensityToUnitDict", "PercentileNormalized", "PercentileNormalizeD", "PercentileNormalizeDict",
    "ResizeKeepAspectd", "ResizeKeepAspectD", "ResizeKeepAspectDict", "CLAHEd", "CLAHED", "CLAHEDict",
    "ForegroundMaskd", "ForegroundMaskD", "ForegroundMaskDict", "UltrasoundFrameCropd",
    "UltrasoundFrameCropD", "UltrasoundFrameCropDict",
    # modality pipelines
    "MODALITIES", "PipelineConfig", "modality_pipeline", "modality_array_pipeline", "volume_to_slices",
    # datasets
    "INDEXERS", "RawIndex", "RawUnit", "Skip", "index_brainmri", "index_busi", "index_chexpert",
    "chexpert_label", "index_brats", "index_mediclip", "index_mvfa", "index_mvtec", "index_folder", "detect_layout",
    "PrepareError", "prepare_dataset", "read_index",
    # few-shot
    "draw_support", "verify_support", "load_support", "write_support", "default_support_path",
    "FewShotError", "LeakageError",
]
