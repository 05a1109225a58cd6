"""BraTS-style NIfTI indexer: one case folder per patient with t1, t1ce, t2, flair and seg
volumes (BraTS 2020 ``<case>_flair.nii.gz`` or BraTS 2023 ``<case>-t2f.nii.gz`` names).

Each case is one work unit; the worker cuts the chosen sequence into axial slices whose
brain fraction passes ``min_brain_fraction``; a slice is abnormal when its tumour mask
(``seg > 0``) is not empty. Cases, not slices, are split (seeded hash), so no patient
is in both splits.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .indexing import LayoutError, RawIndex, RawUnit, Skip, check_fraction, hash_fraction, list_files, safe_id

SEQUENCE_ALIASES = {"flair": ("flair", "t2f"), "t1": ("t1", "t1n"), "t1ce": ("t1ce", "t1c"), "t2": ("t2", "t2w")}
_NIFTI = re.compile(r"^(?P<case>.+?)[_-](?P<seq>[A-Za-z0-9]+)\.nii(\.gz)?$")


def index_brats(root: str | Path, *, sequence: str = "flair", test_fraction: float = 0.5, split_seed: int = 0,
                min_brain_fraction: float = 0.1, **_: Any) -> RawIndex:
    """BraTS as downloaded: ``<root>/**/<case>/<case>_<seq>.nii.gz`` with a ``seg`` volume."""
    if sequence not in SEQUENCE_ALIASES:
        raise ValueError(f"sequence must be one of {sorted(SEQUENCE_ALIASES)}, got {sequence!r}")
    base = Path(root)
    index = RawIndex("brats", str(root))
    cases: dict[tuple[Path, str], dict[str, Path]] = {}
    wanted = set(SEQUENCE_ALIASES[sequence]) | {"seg"}
    all_sequences = {s for aliases in SEQUENCE_ALIASES.values() for s in aliases} | {"seg"}
    for path in list_files(base):
        m = _NIFTI.match(path.name)
        if not m or m.group("seq").lower() not in all_sequences:
            index.skipped.append(Skip(str(path), "not a BraTS NIfTI volume (<case>_<sequence>.nii[.gz])"))
            continue
        seq = m.group("seq").lower()
        if seq in wanted:
            cases.setdefault((path.parent, m.group("case")), {})["seg" if seq == "seg" else "image"] = path
        # other sequences are present but not used: not an error, not reported
    if not cases:
        raise LayoutError(f"{base}: no BraTS case found (expected <case>_{sequence}.nii.gz and <case>_seg.nii.gz)")
    complete = []
    for (_, case), files in sorted(cases.items()):
        if "image" not in files:
            index.skipped.append(Skip(str(files["seg"]), f"mask without image (no {sequence} volume for {case})"))
        elif "seg" not in files:
            index.skipped.append(Skip(str(files["image"]), f"no segmentation volume for {case}"))
        else:
            complete.append((case, files))
    # Rank cases by a seeded hash: exactly round(test_fraction * n) cases go to test.
    ranked = sorted(complete, key=lambda cf: hash_fraction(cf[0], int(split_seed)))
    n_test = round(check_fraction(test_fraction) * len(ranked))
    for rank, (case, files) in enumerate(ranked):
        split = "test" if rank < n_test else "train"
        index.units.append(RawUnit(safe_id(case), split, None, str(files["image"]), (str(files["seg"]),),
                                   "brain_mri", kind="volume",
                                   options={"min_brain_fraction": float(min_brain_fraction)}))
    index.notes.update({"sequence": sequence, "min_brain_fraction": float(min_brain_fraction),
                        "split": f"cases {check_fraction(test_fraction):.2f} test by seeded hash"})
    return index
