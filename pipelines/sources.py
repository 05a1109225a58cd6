"""The normal images a synthetic set is made from: a prepared dataset or a plain image folder.

One small reader so that ``generate``, ``verify`` and the on-the-fly loader see the same
images in the same order::

    spec = source_spec("prepared/brainmri", size=224)     # picklable: travels to workers
    images = SourceSet(spec)
    image, foreground = images.read(0)                    # float32 [0, 1] (H, W), bool or None
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(Exception):
    """The --data input cannot be used; the message names the path and the reason."""


def _folder_items(folder: Path) -> list[dict[str, Any]]:
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    return [{"id": p.relative_to(folder).as_posix(), "image": str(p), "foreground": None} for p in files]


def _refuse_dataset_layout(folder: Path) -> None:
    """A plain folder is read whole as normal images: a dataset as downloaded would give its test
    images and masks as sources, so it is refused with the ``fmclip prepare`` name that fits."""
    from dataprep import detect_layout

    found = detect_layout(folder)
    if found is None:
        return
    name, where = found
    if name == "unknown":
        raise DataError(f"{folder}: holds {where.relative_to(folder)}/, named like test images or masks; --data as a "
                        "plain folder reads every image below it as a normal source. Give a folder of normal images "
                        "only, or prepare the dataset (fmclip prepare --help lists the layouts)")
    raise DataError(f"{folder}: looks like a dataset as downloaded ({name} layout at {where}); --data as a plain folder "
                    f"would read its test images and masks as normal sources. Prepare it first: fmclip prepare {name} "
                    f"--root {where} --out PREPARED, then --data PREPARED")


def _prepared_items(prepared: Path, support: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from dataprep import read_index
    from dataprep.fewshot import dataset_identity, load_support

    records = read_index(prepared)
    if support:
        try:
            chosen = set(load_support(support, prepared)["support"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{support}: cannot use this support file ({exc})") from None
        records = [r for r in records if r["id"] in chosen]
    else:  # the normal training images: synthesis starts from normal anatomy
        records = [r for r in records if r["split"] == "train" and int(r["label"]) == 0]
    records.sort(key=lambda r: r["id"])
    items = [{"id": r["id"], "image": str(prepared / r["image"]),
              "foreground": str(prepared / r["foreground"]) if r.get("foreground") else None} for r in records]
    ident = dataset_identity(prepared)
    ident.pop("path", None)  # the set may move; its content names it
    ident["ids_sha256"] = hashlib.sha256("\n".join(i["id"] for i in items).encode()).hexdigest()
    return items, ident


def _check_prepared_size(prepared: Path, size: int) -> None:
    """The working size is prepare's: its images are resized once, there, and never again here."""
    try:
        prepared_size = int(json.loads((prepared / "card.json").read_text())["size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{prepared}: no readable card.json; prepare the dataset again with fmclip prepare") from None
    if prepared_size != size:
        raise DataError(f"{prepared}: prepared at {prepared_size} px, and --size is {size}; resizing prepared images "
                        f"again would blur them: use --size {prepared_size}, or prepare again with --size {size}")


def source_spec(data: str | Path, size: int = 224, support: str | None = None) -> dict[str, Any]:
    """Resolve ``--data`` into a picklable spec: items (id, image path, foreground path),
    the working size and the dataset's identity. Raises :class:`DataError` naming the path."""
    root = Path(data).absolute()  # sources.json must resolve from any working folder (verify, the loader)
    if not root.exists():
        raise DataError(f"{root}: --data not found")
    if not root.is_dir():
        raise DataError(f"{root}: --data must be a prepared dataset or a folder of images, not a file")
    if (root / "index.jsonl").is_file():
        _check_prepared_size(root, size)
        try:
            items, ident = _prepared_items(root, support)
        except DataError:
            raise
        except Exception as exc:  # dataprep's own errors name the file
            raise DataError(f"{root}: cannot read the prepared dataset ({exc})") from None
        kind = "prepared"
    else:
        if support:
            raise DataError(f"{support}: --support needs a prepared dataset as --data ({root} has no index.jsonl)")
        _refuse_dataset_layout(root)
        items, kind = _folder_items(root), "folder"
        digest = hashlib.sha256()
        for item in items:  # content, not names or times: a copied folder keeps its identity
            try:
                raw = Path(item["image"]).read_bytes()
            except OSError as exc:
                raise DataError(f"{item['image']}: cannot read ({exc.strerror or exc})") from None
            _read_unit(item["image"])  # the reader the workers use; raises DataError naming the file
            digest.update(item["id"].encode() + b"\0" + hashlib.sha256(raw).digest())
        ident = {"name": root.name, "files": len(items), "content_sha256": digest.hexdigest()}
    if not items:
        raise DataError(f"{root}: no usable normal images found in --data")
    return {"kind": kind, "root": str(root.resolve()), "size": int(size), "items": items, "identity": ident}


def _read_unit(path: str, source: bool = True) -> np.ndarray:
    """One grey image as float32 in [0, 1], through dataprep's reader (every format it
    knows, 8/16 bit, colour to grey). A constant ``source`` image is refused; a constant
    foreground mask (an image that is all anatomy) is not."""
    from dataprep.io import ReadError, read_image
    from dataprep.pixels import to_unit

    try:
        data = read_image(path)
    except ReadError as exc:
        raise DataError(str(exc)) from None
    if data.array.ndim != 2:
        raise DataError(f"{path}: expected a 2D image, got shape {data.array.shape}")
    if np.issubdtype(data.array.dtype, np.floating) and not np.isfinite(data.array).all():
        raise DataError(f"{path}: non-finite values (NaN or infinity); remove or repair the file")
    image = to_unit(data.array, data.meta.get("value_range"))
    if source and float(np.ptp(image)) < 1e-6:
        raise DataError(f"{path}: a constant image (no content) cannot be a source of synthetic anomalies")
    return image


class SourceSet:
    """Reads the spec's images at the working size, keeping the most recent ones in memory.

    Example:
        >>> images = SourceSet(source_spec("folder_of_pngs", size=64))  # doctest: +SKIP
        >>> images.read(0)[0].shape                                      # doctest: +SKIP
        (64, 64)
    """

    def __init__(self, spec: dict[str, Any], keep: int = 256) -> None:
        self.spec, self.size, self.keep = spec, int(spec["size"]), keep
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.spec["items"])

    def source_id(self, index: int) -> str:
        return self.spec["items"][index]["id"]

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image float32 (size, size) in [0, 1], anatomy bool mask or None)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = self.spec["items"][index]
        from dataprep.pixels import resize_keep_aspect

        image = _read_unit(item["image"])
        if image.shape != (self.size, self.size):
            if self.spec["kind"] == "prepared":  # prepare owns the working size: never resized twice
                raise DataError(f"{item['image']}: {image.shape[1]} x {image.shape[0]} px in a set prepared at "
                                f"{self.size}; prepare the dataset again")
            image = resize_keep_aspect(image[None], self.size, "area")[0].clip(0.0, 1.0)  # aspect kept, padded
        fg = None
        if item["foreground"]:
            fg = _read_unit(item["foreground"], source=False) > 0.5
            if fg.shape != image.shape:
                raise DataError(f"{item['foreground']}: the anatomy mask's size differs from its image's; prepare the "
                                "dataset again")
            if not fg.any():  # synth refuses an empty anatomy; the whole frame is the honest fallback
                fg = None
        self._cache[index] = (image, fg)
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return image, fg


def spec_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)
