"""The prepared dataset's index, skip report and card, assembled from the finished units."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .indexing import RawIndex
from .io import atomic_write_bytes
from .pixels import MASK_RULE
from .prepared import PrepareError

FORMAT_VERSION = 1


def settings(name: str, size: int, options: dict[str, Any]) -> dict[str, Any]:
    """What decides a prepared dataset's content; a rerun with other settings is refused."""
    return {"format_version": FORMAT_VERSION, "dataset": name, "size": int(size),
            "options": {k: options[k] for k in sorted(options)}}


def skip_category(reason: str) -> str:
    """The reason without its file-specific detail, for counting in the card."""
    return reason.split(" (")[0].split(":")[0].strip()


def duplicates_across_splits(records: list[dict[str, Any]]) -> list[list[str]]:
    """[train id, test id] for each training image whose prepared pixels equal a test image's: the
    few-shot draw never picks them (its leakage check), and the card reports them."""
    test = {r["sha256"]: r["id"] for r in records if r["split"] == "test"}
    return [[r["id"], test[r["sha256"]]] for r in records if r["split"] == "train" and r["sha256"] in test]


def assemble(out: Path, index: RawIndex, name: str, size: int, options: dict[str, Any],
              strict: bool) -> dict[str, Any]:
    """Index, skip report and card from the finished units of this index (stale ones ignored)."""
    records: list[dict[str, Any]] = []
    skipped = [s.to_json() for s in index.skipped]
    for unit in index.units:
        result = json.loads((out / "items" / f"{unit.uid}.json").read_text())
        records += result["records"]
        skipped += result["skipped"]
    root = Path(index.root)
    for entry in records + skipped:  # paths relative to the raw root: the prepared set can move
        for key in ("source", "path"):
            if key in entry:
                entry[key] = _relative(entry[key], root)
        if "mask_sources" in entry:
            entry["mask_sources"] = [_relative(m, root) for m in entry["mask_sources"]]
    records.sort(key=lambda r: r["id"])
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise PrepareError(f"{out}: duplicate prepared id {dup!r}")
    atomic_write_bytes(out / "index.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    atomic_write_bytes(out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped).encode())
    counts: dict[str, Any] = {}
    for split in ("train", "test"):
        rs = [r for r in records if r["split"] == split]
        counts[split] = {"normal": sum(r["label"] == 0 for r in rs), "abnormal": sum(r["label"] == 1 for r in rs),
                         "with_mask": sum(r["mask"] is not None for r in rs), "total": len(rs)}
    counts["total"] = len(records)
    dups = duplicates_across_splits(records)
    card = {
        **settings(name, size, options), "root": str(root),
        "image_format": "PNG, 16-bit grey: value / 65535 is the image in [0, 1]",
        "mask_format": "PNG, 8-bit: 255 lesion / anatomy, 0 elsewhere",
        "mask_rule": MASK_RULE,
        "content_hash": "sha256 of the 16-bit pixel array (C order, little endian) at the working size",
        "counts": counts, "raw_units": len(index.units), "excluded": dict(sorted(index.excluded.items())),
        "skipped": {"count": len(skipped), "by_reason": dict(sorted(Counter(skip_category(s["reason"])
                                                                            for s in skipped).items())),
                    "report": "skipped.jsonl"},
        "duplicates_across_splits": {"count": len(dups), "pairs": dups[:50], "policy": "excluded from few-shot draws"},
        "notes": index.notes,
    }
    atomic_write_bytes(out / "card.json", json.dumps(card, indent=2, default=_jsonable).encode())
    if not records:
        raise PrepareError(f"{out}: nothing usable remains: {len(skipped)} files skipped "
                           f"(see {out / 'skipped.jsonl'})")
    if strict and skipped:
        first = skipped[0]
        raise PrepareError(f"--strict: {len(skipped)} files skipped, first {first['path']}: {first['reason']} "
                           f"(all in {out / 'skipped.jsonl'})")
    return card


def _relative(path: str, root: Path) -> str:
    """``path`` as the user named it (links not followed: a dangling link is reported under its
    own name), relative to the raw root where it lies inside it."""
    named = Path(os.path.normpath(Path(path).absolute()))
    for base in (Path(os.path.normpath(root.absolute())), root.resolve()):
        if named.is_relative_to(base):
            return named.relative_to(base).as_posix()
    try:
        full = Path(path).resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        return str(named)
    # outside the root (e.g. CheXpert paths resolved against its parent)
    return full.relative_to(root.resolve()).as_posix() if full.is_relative_to(root.resolve()) else str(full)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return str(obj)
