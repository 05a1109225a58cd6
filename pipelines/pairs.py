"""Image-caption pairs for ``fmclip pretrain``: ROCO-style listings read, checked and split.

A listing is a CSV file whose header names an image column (``image``, or ROCO's ``name``) and a
``caption`` column, or a JSON-lines file of ``{"image": ..., "caption": ...}`` objects. ``--pairs`` is the
listing itself or a folder holding exactly one. Image paths are relative to the listing's folder or to its
``images/`` subfolder (ROCO's layout: ``radiology/radiologytraindata.csv`` beside ``radiology/images/``).

Every image is decoded once (dataprep's reader, grey, as stages 2 and 3 see images). A pair is skipped, with
its reason in the skip report, when its image is missing, unreadable or already listed (the same file, or
the same pixels under another name), or its caption is empty; a training pair whose pixels are also in the
validation pairs is skipped from training. A listing with no usable pair is refused.

Example:
    >>> pairs, skipped = read_pairs("roco/train/radiology")          # doctest: +SKIP
    >>> len(pairs), pairs[0].caption[:30], skipped[0]["reason"]     # doctest: +SKIP
    (65419, ' Computed tomography scan in a', 'image file not found')
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_COLUMNS = ("image", "name")
LISTING_SUFFIXES = (".csv", ".jsonl")


class PairsError(ValueError):
    """A listing that cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class Pair:
    image: str  # absolute path
    caption: str


def find_listing(path: str | os.PathLike) -> Path:
    """The listing file ``path`` names: itself, or the one .csv / .jsonl file in the folder."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise PairsError(f"{p}: no such file or folder")
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in LISTING_SUFFIXES)
    if len(found) != 1:
        what = ", ".join(f.name for f in found) if found else "none"
        raise PairsError(f"{p}: expected one .csv or .jsonl listing of image-caption pairs, found {what}; "
                         "pass the listing file itself")
    return found[0]


def _rows(listing: Path) -> Iterator[tuple[int, Any, Any]]:
    """(line number, image value, caption value) of each entry."""
    if listing.suffix.lower() == ".jsonl":
        with open(listing, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PairsError(f"{listing}: line {number} is not JSON ({exc.msg})") from None
                if not isinstance(entry, dict):
                    raise PairsError(f"{listing}: line {number} is not a JSON object")
                yield number, entry.get("image"), entry.get("caption")
        return
    with open(listing, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in reader.fieldnames or []]
        image_column = next((c for c in IMAGE_COLUMNS if c in header), None)
        if image_column is None or "caption" not in header:
            raise PairsError(f"{listing}: the header must name an image column ({' or '.join(IMAGE_COLUMNS)}) "
                             f"and a caption column; it has {header}")
        reader.fieldnames = header
        for number, row in enumerate(reader, 2):
            yield number, row.get(image_column), row.get("caption")


def _resolve(folder: Path, value: str) -> Path | None:
    for base in (folder, folder / "images"):
        candidate = (base / value).resolve()
        if candidate.is_file():
            return candidate
    return None


def _pixels_hash(path: str) -> str | Exception:
    """The hash of an image's pixels, or the read error."""
    from dataprep.io import ReadError, content_hash, read_image

    try:
        return content_hash(read_image(path).array)
    except (ReadError, OSError, ValueError) as exc:
        return exc


def read_pairs(path: str | os.PathLike, *, exclude: dict[str, str] | None = None, progress: bool = False,
               workers: int | None = None) -> tuple[list[Pair], list[dict[str, Any]], dict[str, str]]:
    """The usable pairs of a listing, the skipped entries (``listing``, ``line``, ``image``, ``reason``) and the
    pixel hash of each kept image. ``exclude``: pixel hashes (to the image holding them) that must not
    appear here, e.g. the validation pairs'."""
    from tqdm import tqdm

    listing = find_listing(path)
    folder = listing.parent
    candidates: list[tuple[int, Path, str]] = []
    skipped: list[dict[str, Any]] = []
    seen_paths: set[Path] = set()

    def skip(line: int, image: Any, reason: str) -> None:
        skipped.append({"listing": str(listing), "line": line, "image": str(image), "reason": reason})

    for line, image, caption in _rows(listing):
        caption = str(caption).strip() if caption is not None else ""
        if not image or not str(image).strip():
            skip(line, image, "no image named")
            continue
        resolved = _resolve(folder, str(image).strip())
        if resolved is None:
            skip(line, image, "image file not found")
        elif not caption:
            skip(line, resolved, "empty caption")
        elif resolved in seen_paths:
            skip(line, resolved, "image listed twice (kept its first line)")
        else:
            seen_paths.add(resolved)
            candidates.append((line, resolved, caption))
    threads = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:  # OpenCV decodes without the GIL
        hashes = list(tqdm(pool.map(_pixels_hash, [str(p) for _, p, _ in candidates]), total=len(candidates),
                           desc=f"check {listing.name}", unit="image", disable=not progress))
    pairs: list[Pair] = []
    kept_hashes: dict[str, str] = {}
    for (line, image, caption), digest in zip(candidates, hashes):
        if isinstance(digest, Exception):
            skip(line, image, f"unreadable: {getattr(digest, 'reason', digest)}")
        elif exclude and digest in exclude:
            skip(line, image, f"its pixels are also in the validation pairs ({exclude[digest]})")
        elif digest in kept_hashes:
            skip(line, image, f"the same pixels as {kept_hashes[digest]} (kept that one)")
        else:
            pairs.append(Pair(str(image), caption))
            kept_hashes[digest] = str(image)
    if not pairs:
        reasons = sorted({s["reason"].split(":")[0] for s in skipped})
        raise PairsError(f"{listing}: no usable image-caption pair ({len(skipped)} skipped: {'; '.join(reasons) or 'empty listing'})")
    return pairs, skipped, kept_hashes


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training, validation): a seeded share ``fraction`` of the pairs (at least two: a contrastive
    validation loss needs another pair) for validation."""
    if not 0.0 < fraction < 1.0:
        raise PairsError(f"train.val_fraction must lie in (0, 1) without --val-pairs, got {fraction}")
    if len(pairs) < 4:
        raise PairsError(f"{len(pairs)} usable pairs cannot be split into two training and two validation pairs")
    order = np.random.default_rng([seed, 0x5A1]).permutation(len(pairs))
    n_val = min(len(pairs) - 2, max(2, int(round(fraction * len(pairs)))))
    val = set(order[:n_val].tolist())
    return [p for i, p in enumerate(pairs) if i not in val], [p for i, p in enumerate(pairs) if i in val]


def listing_identity(path: str | os.PathLike) -> dict[str, str]:
    """The listing's path and sha256: a resume with a changed listing is refused."""
    listing = find_listing(path)
    return {"listing": str(listing.resolve()), "sha256": hashlib.sha256(listing.read_bytes()).hexdigest()}
