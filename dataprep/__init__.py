"""dataprep: read medical files, bring them to the working form, index the public datasets,
and draw seeded few-shot support sets.

Images leave as float32 in [0, 1], grey, (1, size, size), with an anatomy ``foreground``
mask; keys follow anomalib (``image``, ``gt_mask``, ``gt_label``).
"""
from __future__ import annotations

from .brats import index_brats
from .chexpert import chexpert_label, index_chexpert
from .datasets import index_brainmri, index_busi, index_folder, index_mediclip, index_mvfa
from .dictionary import (
    CLAHED,
    CLAHEd,
    CLAHEDict,
    EnsureGreyD,
    EnsureGreyd,
    EnsureGreyDict,
    ForegroundMaskD,
    ForegroundMaskd,
    ForegroundMaskDict,
    PercentileNormalizeD,
    PercentileNormalized,
    PercentileNormalizeDict,
    ResizeKeepAspectD,
    ResizeKeepAspectd,
    ResizeKeepAspectDict,
    ScaleIntensityToUnitD,
    ScaleIntensityToUnitd,
    ScaleIntensityToUnitDict,
    UltrasoundFrameCropD,
    UltrasoundFrameCropd,
    UltrasoundFrameCropDict,
)
from .fewshot import (
    FewShotError,
    LeakageError,
    default_support_path,
    draw_support,
    load_support,
    verify_support,
    write_support,
)
from .indexing import RawIndex, RawUnit, Skip
from .io import ImageData, ReadError, content_hash, dicom_window, read_image, read_png
from .modality import MODALITIES, PipelineConfig, modality_array_pipeline, modality_pipeline, volume_to_slices
from .prepare import INDEXERS, PrepareError, prepare_dataset, read_index
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

__all__ = [
    # reading
    "ImageData", "ReadError", "read_image", "read_png", "content_hash", "dicom_window",
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
    "chexpert_label", "index_brats", "index_mediclip", "index_mvfa", "index_folder",
    "PrepareError", "prepare_dataset", "read_index",
    # few-shot
    "draw_support", "verify_support", "load_support", "write_support", "default_support_path",
    "FewShotError", "LeakageError",
]
