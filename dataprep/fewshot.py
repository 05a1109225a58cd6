"""Seeded few-shot support sets: k normal training images of a prepared dataset.

The draw is a seeded permutation of the eligible pool (normal, train split, sorted by
id), of which the first k are taken: the same k and seed always give the same set, and
for one seed a smaller k is a prefix of a larger one. A leakage check keeps out any
candidate whose content hash also occurs in the test split (duplicates in the raw data
are common), and :func:`verify_support` refuses a support file that leaks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write_bytes
from .prepared import read_index


class LeakageError(Exception):
    """A support image's content hash is also in the test split."""


class FewShotError(Exception):
    """The few-shot set cannot be drawn (too few eligible images, bad arguments)."""


def dataset_identity(prepared: str | Path) -> dict[str, Any]:
    """What names a prepared dataset: its card's name and size and the sha256 of its index."""
    prepared = Path(prepared)
    card_path = prepared / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    index_bytes = (prepared / "index.jsonl").read_bytes()
    return {"name": card.get("dataset"), "size": card.get("size"), "path": str(prepared.resolve()),
            "index_sha256": hashlib.sha256(index_bytes).hexdigest()}


def draw_support(prepared: str | Path, k: int, seed: int) -> dict[str, Any]:
    """Draw k normal training images; returns the support-set document.

    Example:
        >>> s = draw_support("prepared/busi", k=16, seed=0)  # doctest: +SKIP
        >>> len(s["support"]), s["k"], s["seed"]              # doctest: +SKIP
        (16, 16, 0)
    """
    if k < 1:
        raise FewShotError(f"k must be at least 1, got {k}")
    records = read_index(prepared)
    test_hashes = {r["sha256"] for r in records if r["split"] == "test"}
    normals = sorted((r for r in records if r["split"] == "train" and r["label"] == 0), key=lambda r: r["id"])
    pool = [r for r in normals if r["sha256"] not in test_hashes]
    leaking = [r["id"] for r in normals if r["sha256"] in test_hashes]
    if len(pool) < k:
        raise FewShotError(f"{prepared}: only {len(pool)} normal training images are eligible "
                           f"({len(leaking)} more excluded: same content as a test image); k={k} asked")
    order = np.random.default_rng(seed).permutation(len(pool))[:k]
    chosen = [pool[i] for i in order]
    doc = {
        "k": int(k), "seed": int(seed), "dataset": dataset_identity(prepared),
        "support": [r["id"] for r in chosen], "support_sha256": [r["sha256"] for r in chosen],
        "pool_size": len(pool), "excluded_for_leakage": leaking,
        "rule": "numpy default_rng(seed).permutation over eligible normal train ids sorted by id; first k",
    }
    verify_support(prepared, doc)
    return doc


def verify_support(prepared: str | Path, support: dict[str, Any]) -> None:
    """Raise :class:`LeakageError` if any support id is not a normal train image, or if
    its content hash occurs in the test split."""
    records = {r["id"]: r for r in read_index(prepared)}
    test_hashes = {r["sha256"]: r["id"] for r in records.values() if r["split"] == "test"}
    for sid in support["support"]:
        r = records.get(sid)
        if r is None:
            raise LeakageError(f"support id {sid!r} is not in {prepared}/index.jsonl")
        if r["split"] != "train" or r["label"] != 0:
            raise LeakageError(f"support id {sid!r} is not a normal training image (split {r['split']}, "
                               f"label {r['label']})")
        if r["sha256"] in test_hashes:
            raise LeakageError(f"support image {sid!r} has the same content as test image "
                               f"{test_hashes[r['sha256']]!r} ({r['sha256']})")


def write_support(doc: dict[str, Any], path: str | Path) -> Path:
    """Write a support document as JSON, atomically."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


def default_support_path(prepared: str | Path, k: int, seed: int) -> Path:
    return Path(prepared) / "fewshot" / f"k{k}_seed{seed}.json"


def load_support(path: str | Path, prepared: str | Path | None = None) -> dict[str, Any]:
    """Read a support file; with ``prepared``, check it against that dataset (identity and leakage)."""
    doc = json.loads(Path(path).read_text())
    if prepared is not None:
        ident = dataset_identity(prepared)
        if doc["dataset"]["index_sha256"] != ident["index_sha256"]:
            raise FewShotError(f"{path}: drawn from another version of the dataset "
                               f"(index sha256 {doc['dataset']['index_sha256'][:12]} != {ident['index_sha256'][:12]})")
        verify_support(prepared, doc)
    return doc
