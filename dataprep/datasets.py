"""Indexers for 2D datasets as downloaded: BrainMRI, BUSI, anomalib's Folder layout, and
the prepared layouts that MediCLIP and MVFA publish. CheXpert, BraTS and MVTec have their own
modules. Every indexer takes ``(root, **options)`` and returns a :class:`RawIndex`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .indexing import (
    LayoutError,
    RawIndex,
    RawUnit,
    Skip,
    check_fraction,
    image_files,
    inside,
    is_image_name,
    list_files,
    non_image_skip,
    require_dir,
    safe_id,
    split_normals,
    strip_image_suffix,
    unique_ids,
)

# Share of normal images that goes to the test split, chosen so that the datasets as
# downloaded give the dissertation's test sets: BrainMRI 65 of 98 normals, BUSI 101 of 133.
BRAINMRI_TEST_NORMAL = 65 / 98
BUSI_TEST_NORMAL = 101 / 133
FOLDER_TEST_NORMAL = 0.2  # anomalib Folder's default normal_split_ratio


def _find_with(root: Path, names: tuple[str, ...], depth: int = 2) -> Path:
    """``root`` or the first folder below it (to ``depth``) holding all ``names``; downloads
    often wrap the data in one or two extra folders."""
    candidates = [root]
    for _ in range(depth):
        candidates += sorted(p for c in candidates for p in c.iterdir() if p.is_dir() and not p.name.startswith("."))
    for c in candidates:
        if all((c / n).is_dir() for n in names):
            return c
    raise LayoutError(f"{root}: no folder holding {', '.join(n + '/' for n in names)} found (to depth {depth})")


def _class_folder(index: RawIndex, folder: Path, cls: str, label: int, modality: str,
                  mask_of: Callable[[str], str | None] | None = None) -> list[RawUnit]:
    """Units for the images in one class folder; masks matched to images by ``mask_of``
    (mask stem -> image stem, None for non-masks)."""
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for path in image_files(folder, index):
        stem = strip_image_suffix(path.name)
        target = mask_of(stem) if mask_of else None
        if target is None:
            images[stem] = path
        else:
            masks.setdefault(target, []).append(path)
    units = []
    for stem, path in images.items():
        units.append(RawUnit(safe_id(cls, stem), "test", label, str(path),
                             tuple(str(m) for m in sorted(masks.pop(stem, []))), modality))
    for stem, paths in masks.items():
        index.skipped += [Skip(str(p), f"mask without image (no '{stem}.*' in {folder.name}/)") for p in paths]
    return units


def index_brainmri(root: str | Path, *, test_fraction: float = BRAINMRI_TEST_NORMAL, split_seed: int = 0,
                   **_: Any) -> RawIndex:
    """BrainMRI ('Brain MRI Images for Brain Tumor Detection'): ``no/`` normal, ``yes/`` tumour."""
    base = _find_with(Path(root), ("no", "yes"))
    index = RawIndex("brainmri", str(root))
    for cls, label in (("no", 0), ("yes", 1)):
        index.units += _class_folder(index, base / cls, cls, label, "brain_mri")
    split_normals(index.units, check_fraction(test_fraction), int(split_seed))
    index.notes["split"] = f"all tumour images test; normals {check_fraction(test_fraction):.4f} test by seeded hash"
    return index


_BUSI_MASK = re.compile(r"^(?P<image>.*)_mask(_\d+)?$")


def index_busi(root: str | Path, *, test_fraction: float = BUSI_TEST_NORMAL, split_seed: int = 0,
               **_: Any) -> RawIndex:
    """BUSI ('Dataset_BUSI_with_GT'): ``normal/``, ``benign/``, ``malignant/``; each image's
    masks ``_mask``, ``_mask_1``, ``_mask_2`` ... are united."""
    base = _find_with(Path(root), ("normal", "benign", "malignant"))
    index = RawIndex("busi", str(root))

    def mask_of(stem: str) -> str | None:
        m = _BUSI_MASK.match(stem)
        return m.group("image") if m else None

    for cls, label in (("normal", 0), ("benign", 1), ("malignant", 1)):
        index.units += _class_folder(index, base / cls, cls, label, "breast_us", mask_of)
    split_normals(index.units, check_fraction(test_fraction), int(split_seed))
    index.notes["split"] = f"all lesion images test; normals {check_fraction(test_fraction):.4f} test by seeded hash"
    return index


def index_folder(root: str | Path, *, normal_dir: str = "normal", abnormal_dir: str = "abnormal",
                 mask_dir: str = "mask", normal_test_dir: str = "normal_test",
                 test_fraction: float = FOLDER_TEST_NORMAL, split_seed: int = 0, modality: str = "generic",
                 **_: Any) -> RawIndex:
    """anomalib's Folder layout: normal, abnormal and mask folders (masks share the abnormal
    image's file stem); an optional ``normal_test`` folder, else a seeded normal split."""
    base = Path(root)
    index = RawIndex("folder", str(root))
    found = ", ".join(p.name + "/" for p in sorted(base.iterdir()) if p.is_dir()) or "no folders"
    require_dir(base / normal_dir, f"normal images; found {found}: name yours with -o normal_dir=NAME")
    normals = _class_folder(index, base / normal_dir, "normal", 0, modality)
    abnormal = _class_folder(index, require_dir(base / abnormal_dir, f"abnormal images; found {found}: name yours with -o abnormal_dir=NAME"), "abnormal", 1, modality)
    if (base / normal_test_dir).is_dir():
        test_normals = _class_folder(index, base / normal_test_dir, "normal_test", 0, modality)
        for u in test_normals:
            u.split = "test"
        for u in normals:
            u.split = "train"
        normals += test_normals
    else:
        split_normals(normals, check_fraction(test_fraction), int(split_seed))
    if (base / mask_dir).is_dir():
        by_stem = {strip_image_suffix(Path(u.image).name): u for u in abnormal}
        for path in list_files(base / mask_dir):
            stem = strip_image_suffix(path.name)
            for cand in (stem, re.sub(r"_mask$", "", stem)):
                if cand in by_stem:
                    by_stem[cand].masks += (str(path),)
                    break
            else:
                index.skipped.append(Skip(str(path), "mask without image" if is_image_name(path)
                                          else non_image_skip(path).reason))
    index.units = normals + abnormal
    return index


def _guess_modality(name: str) -> str:
    n = name.lower()
    if "brain" in n:
        return "brain_mri"
    if "busi" in n or "breast" in n or "ultrasound" in n:
        return "breast_us"
    if "chex" in n or "chest" in n or "xray" in n or "x-ray" in n:
        return "chest_xray"
    return "generic"


def index_mediclip(root: str | Path, *, modality: str | None = None, **_: Any) -> RawIndex:
    """MediCLIP's layout: ``samples/{train,test}.json`` (JSON lines with ``filename``,
    ``label``, optional ``mask``; paths relative to ``images/``)."""
    base = Path(root)
    images_dir = require_dir(base / "images", "MediCLIP images/")
    modality = modality or _guess_modality(base.name)
    index = RawIndex("mediclip", str(root))
    used: set[Path] = set()
    listed: dict[Path, RawUnit] = {}
    for split in ("train", "test"):
        listing = base / "samples" / f"{split}.json"
        if not listing.is_file():
            raise LayoutError(f"{listing}: missing (MediCLIP needs samples/train.json and samples/test.json)")
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                filename, label = entry["filename"], int(entry.get("label", 0))
            except (ValueError, KeyError, TypeError) as exc:
                index.skipped.append(Skip(f"{listing}:{n}", f"unreadable sample line ({exc})"))
                continue
            image = images_dir / filename
            mask = entry.get("mask")
            outside = [name for name in (filename, mask) if name and not inside(images_dir, images_dir / name)]
            if outside:
                index.skipped.append(Skip(f"{listing}:{n}", f"path outside the dataset's images/ ({outside[0]})"))
                continue
            masks = (str(images_dir / mask),) if mask else ()
            first = listed.get(image.resolve())
            if first is not None:  # one file, one id: a second listing would overwrite the first
                if first.split == split:
                    index.skipped.append(Skip(f"{listing}:{n}", f"listed twice in samples/{split}.json ({filename})"))
                    continue
                index.units.remove(first)  # in train and test: kept in test only, never trained on
                index.skipped.append(Skip(str(image), "listed in samples/train.json and samples/test.json: kept "
                                                      "in the test split only"))
            used.add(image.resolve())
            used.update((images_dir / mask).resolve() for mask in ([mask] if mask else []))
            if not image.is_file():
                index.skipped.append(Skip(str(image), f"listed in samples/{split}.json but missing"))
                continue
            uid = safe_id(*Path(strip_image_suffix(filename)).parts)
            index.units.append(RawUnit(uid, split, 1 if label else 0, str(image), masks, modality))
            listed[image.resolve()] = index.units[-1]
    for path in list_files(images_dir):
        if path.resolve() not in used:
            index.skipped.append(Skip(str(path), "not listed in samples/train.json or samples/test.json"))
    return index


_MVFA_SPLITS = {"train": "train", "valid": "train", "test": "test"}


def index_mvfa(root: str | Path, *, modality: str | None = None, objects: str | None = None,
               **_: Any) -> RawIndex:
    """MVFA's layout: ``<Obj>_AD/{valid,test}/{good,Ungood}/{img,anomaly_mask}``; ``valid``
    (MVFA's few-shot pool) becomes our train split. ``objects``: comma list to keep."""
    base = Path(root)
    roots = [base] if base.name.endswith("_AD") else sorted(p for p in base.iterdir() if p.name.endswith("_AD"))
    if objects:
        wanted = {o.strip().lower() for o in objects.split(",")}
        roots = [r for r in roots if r.name[:-3].lower() in wanted]
    if not roots:
        raise LayoutError(f"{base}: no <Object>_AD folder found (MVFA layout)")
    index = RawIndex("mvfa", str(root))
    for obj_root in roots:
        obj = obj_root.name[:-3]
        mod = modality or _guess_modality(obj)
        for split_dir in sorted(p for p in obj_root.iterdir() if p.is_dir()):
            split = _MVFA_SPLITS.get(split_dir.name)
            if split is None:
                index.skipped += [Skip(str(p), f"unknown MVFA split folder '{split_dir.name}'")
                                  for p in list_files(split_dir)]
                continue
            for cls, label in (("good", 0), ("Ungood", 1)):
                img_dir = split_dir / cls / "img"
                if not img_dir.is_dir():
                    continue
                mask_dir = split_dir / cls / "anomaly_mask"
                masks = {strip_image_suffix(p.name): p for p in list_files(mask_dir)} if mask_dir.is_dir() else {}
                for path in image_files(img_dir, index):
                    stem = strip_image_suffix(path.name)
                    mask = masks.pop(stem, None)
                    index.units.append(RawUnit(safe_id(obj, split_dir.name, cls, stem), split, label, str(path),
                                               (str(mask),) if mask else (), mod))
                index.skipped += [Skip(str(p), "mask without image") for p in masks.values()]
    unique_ids(index.units)
    return index



def indexers() -> dict[str, Callable[..., RawIndex]]:
    """The raw layouts ``prepare_dataset`` knows, by name (``fmclip prepare --help`` lists them without
    importing the modality pipelines)."""
    from .brats import index_brats
    from .chexpert import index_chexpert
    from .mvtec import index_mvtec

    return {"brainmri": index_brainmri, "busi": index_busi, "chexpert": index_chexpert, "brats": index_brats,
            "mediclip": index_mediclip, "mvfa": index_mvfa, "mvtec": index_mvtec, "folder": index_folder}
