"""What an indexer finds in a raw tree: work units to prepare, and files it skipped.

An indexer walks a raw dataset as users download it and returns a :class:`RawIndex`:
one :class:`RawUnit` per image (or per volume, which later becomes many slices) with
its split, label and mask files, and one :class:`Skip` per file it cannot use
(non-image files, masks with no image). Reading happens later, in the workers.
"""
from __future__ import annotations

import errno
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import NIFTI_SUFFIXES, RASTER_SUFFIXES, file_kind

IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Skip:
    """A raw file that was not used, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class RawUnit:
    """One unit of work: an image (``kind='image'``) or a volume (``kind='volume'``).

    Example:
        >>> RawUnit("no__a", "train", 0, "/raw/no/a.jpg", modality="brain_mri").uid
        'no__a'
    """

    uid: str
    split: str  # 'train' or 'test'
    label: int | None  # 0 normal, 1 abnormal; None for volumes (decided per slice)
    image: str
    masks: tuple[str, ...] = ()
    modality: str = "generic"
    kind: str = "image"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawIndex:
    """Everything an indexer found: units, skips, and notes for the card."""

    dataset: str
    root: str
    units: list[RawUnit] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # deliberate exclusions by rule (not errors)
    notes: dict[str, Any] = field(default_factory=dict)

    def exclude(self, rule: str, n: int = 1) -> None:
        self.excluded[rule] = self.excluded.get(rule, 0) + n


class LayoutError(Exception):
    """The raw tree does not look like the named dataset (message names what is missing)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(*parts: str) -> str:
    """A file-system-safe id from path parts: 'benign', 'benign (3)' -> 'benign__benign_3'."""
    cleaned = [_UNSAFE.sub("_", p).strip("_.") or "x" for p in parts]
    return "__".join(cleaned)


def unique_ids(units: list[RawUnit]) -> None:
    """Make uids unique in place, suffixing a short hash of the source path on a clash."""
    seen: dict[str, int] = {}
    for u in units:
        seen[u.uid] = seen.get(u.uid, 0) + 1
    for u in units:
        if seen[u.uid] > 1:
            u.uid = f"{u.uid}-{hashlib.sha1(u.image.encode()).hexdigest()[:8]}"


def hash_fraction(key: str, seed: int = 0) -> float:
    """A stable number in [0, 1) from a key: split assignment that never depends on order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_fraction(value: float, name: str = "test_fraction") -> float:
    """``value`` as a float in [0, 1], or a LayoutError naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LayoutError(f"option {name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise LayoutError(f"option {name} must lie in [0, 1], got {value!r}")
    return number


def split_normals(units: list[RawUnit], test_fraction: float, seed: int = 0) -> None:
    """Send round(test_fraction * n) normal units to 'test', the rest to 'train', in place.

    Units are ranked by :func:`hash_fraction` of their uid, so the split is the same on
    every machine and does not change when unrelated files are added.
    """
    test_fraction = check_fraction(test_fraction)
    normals = sorted((u for u in units if u.label == 0), key=lambda u: hash_fraction(u.uid, seed))
    n_test = round(test_fraction * len(normals))
    for i, u in enumerate(normals):
        u.split = "test" if i < n_test else "train"


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies within ``root``: a listed path such as
    ``../../x.png`` or ``/etc/x.png`` must not reach outside a dataset."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError):  # outside, or a link loop that leads nowhere
        return False
    return True


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part.lower() in IGNORED_NAMES for part in rel.parts)


def list_files(folder: Path) -> list[Path]:
    """Regular files under ``folder`` (recursive), sorted, hidden files left out (see :func:`odd_entries`
    for what else is left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p.relative_to(folder)))


def image_files(folder: Path, index: RawIndex) -> list[Path]:
    """The image files under ``folder`` (as :func:`list_files`); every other entry a user may have
    meant as data (other files, broken links, folders named like images) goes to ``index.skipped``."""
    index.skipped += odd_entries(folder)
    images = []
    for path in list_files(folder):
        if is_image_name(path):
            images.append(path)
        else:
            index.skipped.append(non_image_skip(path))
    return images


def odd_entries(folder: Path) -> list[Skip]:
    """What :func:`list_files` leaves out that a user may have meant as data: dangling symbolic links,
    symbolic link loops, and folders named like images; each with its reason for the skip report."""
    out = []
    for p in sorted(folder.rglob("*")):
        if _hidden(p.relative_to(folder)):
            continue
        if p.is_symlink() and not p.exists():
            try:
                p.resolve(strict=True)
                reason = "dangling symbolic link"
            except RuntimeError:  # Python's report of a loop
                reason = "symbolic link loop"
            except OSError as exc:
                reason = "symbolic link loop" if exc.errno == errno.ELOOP else "dangling symbolic link"
            out.append(Skip(str(p), reason))
        elif p.is_dir() and is_image_name(p):
            out.append(Skip(str(p), "a folder named like an image"))
    return out


def is_image_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(RASTER_SUFFIXES + NIFTI_SUFFIXES + (".dcm",))


def non_image_skip(path: Path) -> Skip:
    kind = file_kind(path)
    what = path.suffix or "no extension"
    return Skip(str(path), f"not an image file ({what})" if kind is None else f"unexpected file type ({what})")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"{path}: missing folder ({what})")
    return path


def strip_image_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(RASTER_SUFFIXES + NIFTI_SUFFIXES + (".dcm",), key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name
