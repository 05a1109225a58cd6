"""CheXpert indexer: ``train.csv`` / ``valid.csv`` with ``Path``, ``Frontal/Lateral`` and
the observation columns.

Label policy (stated in docs/dataprep.md):

- frontal views only (lateral rows are excluded and counted in the card);
- abnormal (1): any pathology observation is 1 (``Support Devices`` and ``No Finding``
  are not pathologies);
- normal (0): ``No Finding`` is 1 and no pathology is 1;
- uncertain (-1) pathology labels, option ``uncertain``:
  ``exclude`` (default): an image whose only pathology evidence is uncertain is in
  neither class; ``ones``: -1 counts as 1 (abnormal); ``zeros``: -1 counts as blank
  (the image is then normal only if ``No Finding`` is 1);
- anything else (no positive pathology, ``No Finding`` blank) is unlabelled and excluded.

Splits: ``train.csv`` -> train, ``valid.csv`` -> test (radiologist-labelled).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .indexing import LayoutError, RawIndex, RawUnit, Skip, inside, safe_id, strip_image_suffix

NON_PATHOLOGY = {"No Finding", "Support Devices"}
META_COLUMNS = {"Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"}
UNCERTAIN_POLICIES = ("exclude", "ones", "zeros")


def _value(cell: str | None) -> float | None:
    try:
        return float(cell) if cell not in (None, "") else None
    except ValueError:
        return None


def chexpert_label(row: dict[str, str], uncertain: str = "exclude") -> int | str:
    """0 / 1, or the name of the rule that excludes the row ('uncertain', 'unlabelled').

    Example:
        >>> chexpert_label({"No Finding": "1.0", "Edema": ""})
        0
        >>> chexpert_label({"No Finding": "", "Edema": "-1.0"})
        'uncertain'
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain policy must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    values = [_value(v) for k, v in row.items() if k not in META_COLUMNS | NON_PATHOLOGY]
    if any(v == 1.0 for v in values):
        return 1
    has_uncertain = any(v == -1.0 for v in values)
    if has_uncertain and uncertain == "ones":
        return 1
    if has_uncertain and uncertain == "exclude":
        return "uncertain"
    if _value(row.get("No Finding")) == 1.0:
        return 0
    return "unlabelled"


def _resolve(root: Path, rel: str) -> Path:
    """CSV paths start with the archive's folder ('CheXpert-v1.0-small/train/...'): accept a
    root that is that folder or its parent."""
    p = Path(rel)
    for cand in (root / p, root.parent / p, root / Path(*p.parts[1:]) if len(p.parts) > 1 else root / p):
        if cand.is_file():
            return cand
    return root / Path(*p.parts[1:]) if len(p.parts) > 1 else root / p


def index_chexpert(root: str | Path, *, uncertain: str = "exclude", frontal_only: bool = True,
                   clahe: bool = False, **_: Any) -> RawIndex:
    """CheXpert as downloaded (the full or the small version)."""
    base = Path(root)
    index = RawIndex("chexpert", str(root))
    csvs = [(base / "train.csv", "train"), (base / "valid.csv", "test")]
    if not any(p.is_file() for p, _ in csvs):
        raise LayoutError(f"{base}: neither train.csv nor valid.csv found (CheXpert layout)")
    for csv_path, split in csvs:
        if not csv_path.is_file():
            index.notes[f"missing_{csv_path.name}"] = True
            continue
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "Path" not in reader.fieldnames:
                raise LayoutError(f"{csv_path}: no 'Path' column")
            for row in reader:
                view = (row.get("Frontal/Lateral") or "").strip()
                if frontal_only and view and view != "Frontal":
                    index.exclude("lateral view")
                    continue
                label = chexpert_label(row, uncertain)
                if isinstance(label, str):
                    index.exclude(f"{label} ({csv_path.name})")
                    continue
                image = _resolve(base, row["Path"])
                if not inside(base, image):
                    index.skipped.append(Skip(f"{csv_path}", f"path outside the dataset root ({row['Path']})"))
                    continue
                if not image.is_file():
                    index.skipped.append(Skip(str(image), f"listed in {csv_path.name} but missing"))
                    continue
                parts = Path(strip_image_suffix(row["Path"])).parts
                uid = safe_id(*parts[-4:])  # split/patient/study/view: unique within CheXpert
                index.units.append(RawUnit(uid, split, label, str(image), (), "chest_xray",
                                           options={"clahe": bool(clahe)}))
    index.notes["label_policy"] = {"uncertain": uncertain, "frontal_only": frontal_only}
    return index
