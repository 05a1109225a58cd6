"""Reading a prepared dataset (the layout ``prepare`` writes; see ``dataprep.prepare``): its
index of records. Apart from ``prepare`` because that module's transforms import MONAI and
torch, 6 s in a starting process, and ``fmclip generate``, ``verify`` and ``fewshot`` only read.

Example:
    >>> records = read_index("prepared/busi")         # doctest: +SKIP
    >>> sorted(records[0])[:3]                       # doctest: +SKIP
    ['foreground', 'id', 'image']
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class PrepareError(Exception):
    """prepare cannot produce a usable dataset, or a prepared one cannot be read (message says
    why and where to look)."""


def read_index(prepared: str | Path) -> list[dict[str, Any]]:
    """The records of a prepared dataset's ``index.jsonl``."""
    path = Path(prepared) / "index.jsonl"
    if not path.is_file():
        raise PrepareError(f"{path}: not found (is {prepared} a prepared dataset? run `fmclip prepare` first)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    from .indexing import inside

    for r in records:
        for key in ("image", "mask", "foreground"):
            rel = r.get(key)
            if rel and (Path(rel).is_absolute() or not inside(prepared, Path(prepared) / rel)):
                raise PrepareError(f"{path}: record {r.get('id')!r} lists {key} {rel!r} outside the dataset")
    return records
