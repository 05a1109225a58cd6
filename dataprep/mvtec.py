"""MVTec AD's layout, which anomalib and most anomaly datasets follow, and the recognition of
known layouts in a folder (so that a downloaded dataset is never read as a plain image folder).

``<category>/train/good/``, ``<category>/test/{good,<defect>}/``,
``<category>/ground_truth/<defect>/<stem>_mask.png``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .indexing import (
    LayoutError,
    RawIndex,
    RawUnit,
    Skip,
    image_files,
    list_files,
    safe_id,
    strip_image_suffix,
    unique_ids,
)


def _is_category(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _categories(base: Path, category: str | None) -> list[Path]:
    if _is_category(base):
        return [base]
    found = sorted(p for p in base.iterdir() if p.is_dir() and _is_category(p))
    if category:
        wanted = {c.strip().lower() for c in category.split(",")}
        chosen = [p for p in found if p.name.lower() in wanted]
        missing = wanted - {p.name.lower() for p in chosen}
        if missing:
            raise LayoutError(f"{base}: no category {', '.join(sorted(missing))} (found: "
                              f"{', '.join(p.name for p in found) or 'none'})")
        return chosen
    if not found:
        raise LayoutError(f"{base}: no train/ and test/ folders (MVTec layout: <category>/train/good, "
                          "<category>/test/<defect>, <category>/ground_truth/<defect>)")
    return found


def _masks(folder: Path, index: RawIndex) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for path in image_files(folder, index):
        out[re.sub(r"_mask$", "", strip_image_suffix(path.name))] = path
    return out


def index_mvtec(root: str | Path, *, category: str | None = None, modality: str = "generic",
                **_: Any) -> RawIndex:
    """MVTec AD's layout: ``train/good`` normal training images, ``test/good`` and ``test/<defect>``
    test images, masks in ``ground_truth/<defect>/<stem>_mask.png``. ``root`` is one category, or a
    folder of categories (all of them, or ``category=a,b``).

    Example:
        >>> index_mvtec("mvtec/bottle").dataset  # doctest: +SKIP
        'mvtec'
    """
    base = Path(root)
    index = RawIndex("mvtec", str(root))
    for cat in _categories(base, category):
        prefix = () if cat == base else (cat.name,)
        for split in ("train", "test"):
            for cls_dir in sorted(p for p in (cat / split).iterdir() if p.is_dir()):
                label = 0 if cls_dir.name == "good" else 1
                if split == "train" and label:
                    index.skipped += [Skip(str(p), f"train/{cls_dir.name}/: MVTec trains on train/good only")
                                      for p in list_files(cls_dir)]
                    continue
                masks = _masks(cat / "ground_truth" / cls_dir.name, index) if label else {}
                for path in image_files(cls_dir, index):
                    stem = strip_image_suffix(path.name)
                    mask = masks.pop(stem, None)
                    index.units.append(RawUnit(safe_id(*prefix, split, cls_dir.name, stem), split, label,
                                               str(path), (str(mask),) if mask else (), modality))
                index.skipped += [Skip(str(p), f"mask without image (no '{s}.*' in test/{cls_dir.name}/)")
                                  for s, p in masks.items()]
    unique_ids(index.units)
    index.notes["split"] = "train/good is the train split; test/ the test split (good normal, every other folder abnormal)"
    return index


# (prepare name, what marks it): folders, relative to a dataset root, that a layout always has
_LAYOUT_MARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mediclip", ("samples", "images")),
    ("mvtec", ("train", "test", "ground_truth")),
    ("mvtec", ("train/good", "test")),
    ("folder", ("normal", "abnormal")),
    ("brainmri", ("yes", "no")),
    ("busi", ("benign", "malignant", "normal")),
)
_TEST_NAMES = {"test", "ground_truth", "mask", "masks", "anomaly_mask", "abnormal", "ungood", "label", "labels"}


def detect_layout(folder: str | Path, depth: int = 2) -> tuple[str, Path] | None:
    """The ``fmclip prepare`` name whose layout ``folder`` (or a folder to ``depth`` below it) has, and
    that folder; ``("unknown", path)`` for a folder named like test images or masks; None when
    nothing in it looks like a dataset.

    Example:
        >>> detect_layout("mvtec/bottle")  # doctest: +SKIP
        ('mvtec', PosixPath('mvtec/bottle'))
    """
    level = [Path(folder)]
    for _ in range(depth + 1):
        for candidate in level:
            if any(candidate.name.endswith("_AD") and (candidate / s).is_dir() for s in ("valid", "test")):
                return "mvfa", candidate
            for name, marks in _LAYOUT_MARKS:
                if all((candidate / m).is_dir() for m in marks):
                    return name, candidate
        level = sorted(p for c in level for p in c.iterdir() if p.is_dir() and not p.name.startswith("."))
    for parent, folders, _ in os.walk(folder):  # folders only: a folder of images may hold 100,000 files
        folders.sort()
        for name in folders:
            if name.lower() in _TEST_NAMES:
                return "unknown", Path(parent) / name
    return None
