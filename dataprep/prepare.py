"""``prepare``: a raw dataset as downloaded -> the prepared layout.

::

    PREPARED/
      prepare.json          settings of the run (a resumed run must use the same ones)
      images/<id>.png       16-bit grey, the image in [0, 1] times 65535, size x size
      masks/<id>.png        8-bit, 0 / 255 (only where the raw data has pixel labels)
      foreground/<id>.png   8-bit, 0 / 255, the anatomy mask
      items/<unit>.json     one per raw unit: its records and skips; written last, atomically
      index.jsonl           one record per prepared image, sorted by id
      skipped.jsonl         every raw file that was not used, with the reason
      card.json             counts per split and label, sizes, exclusions, skips

Every output is written to a temporary file and moved into place with ``os.replace``;
an ``items/<unit>.json`` exists only when all of that unit's images are complete, so an
interrupted run resumes by skipping units that have one, and the index is assembled
from those files at the end (never appended to), so nothing is duplicated.
"""
from __future__ import annotations

import inspect
import json
import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .card import assemble, settings
from .datasets import indexers
from .dictionary import ResizeKeepAspectd
from .indexing import LayoutError, RawIndex, RawUnit, Skip, unique_ids
from .io import ReadError, WriteError, atomic_write_bytes, content_hash, read_image, to_uint16, write_png
from .modality import PipelineConfig, modality_pipeline, volume_to_slices
from .pixels import binarize_mask
from .prepared import PrepareError

INDEXERS: dict[str, Callable[..., RawIndex]] = indexers()


# ---------------------------------------------------------------- one unit (runs in a worker)

_PIPELINES: dict[tuple[str, int, bool], Any] = {}


def _pipeline(modality: str, size: int, clahe: bool) -> Any:
    key = (modality, size, clahe)
    if key not in _PIPELINES:
        _PIPELINES[key] = modality_pipeline(modality, PipelineConfig(size=size, clahe=clahe))
    return _PIPELINES[key]


def _squeeze2d(arr: np.ndarray, path: str) -> np.ndarray:
    squeezed = np.squeeze(arr)
    if squeezed.ndim < 2 and arr.size:  # 1 x 1, 1 x 5000: a line or a dot, not an image
        raise ReadError(path, f"too small (shape {arr.shape}; an image needs 2 pixels or more along each side)")
    if squeezed.ndim != 2:
        raise ReadError(path, f"unexpected dimensionality (shape {arr.shape}; expected a 2D image)")
    return squeezed


def _write_item(out: Path, item_id: str, d: dict[str, Any]) -> dict[str, Any]:
    pixels = to_uint16(d["image"][0])
    write_png(out / "images" / f"{item_id}.png", pixels)
    write_png(out / "foreground" / f"{item_id}.png", (d["foreground"][0] > 0.5).astype(np.uint8) * 255)
    mask = d.get("gt_mask")
    if mask is not None:
        write_png(out / "masks" / f"{item_id}.png", (mask[0] > 0.5).astype(np.uint8) * 255)
    return {"image": f"images/{item_id}.png", "mask": f"masks/{item_id}.png" if mask is not None else None,
            "foreground": f"foreground/{item_id}.png", "sha256": content_hash(pixels)}


NON_FINITE = "non-finite values (NaN or infinity)"
CONSTANT = "constant image after preprocessing (no content)"
FULL_MASK = 0.99  # a lesion mask above this share of the image is a wrong file, not a lesion


def _prepare_image(unit: RawUnit, out: Path, size: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    data = read_image(unit.image)
    image = _squeeze2d(data.array, unit.image)
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ReadError(unit.image, NON_FINITE)
    d: dict[str, Any] = {"image": image[None]}
    if unit.masks:
        union = np.zeros(image.shape, bool)
        for mpath in unit.masks:
            mask = _squeeze2d(read_image(mpath, apply_window=False).array, mpath)
            if mask.shape != image.shape:
                raise ReadError(mpath, f"mask size differs from image: mask {mask.shape}, image {image.shape} "
                                       f"({Path(unit.image).name})")
            union |= binarize_mask(mask)
        if union.mean() > FULL_MASK:
            raise ReadError(unit.masks[0], f"mask covers the whole image ({100 * union.mean():.1f} %): no normal "
                                           "pixels to tell the lesion from")
        d["gt_mask"] = union[None].astype(np.float32)
    d = _pipeline(unit.modality, size, bool(unit.options.get("clahe", False)))(d)
    if float(np.ptp(d["image"])) < 1e-6:  # a black or flat image: no anatomy to learn from or to score
        raise ReadError(unit.image, CONSTANT)
    has_lesion = d.get("gt_mask") is not None and bool(d["gt_mask"].any())
    record = {"id": unit.uid, "split": unit.split, "label": int(unit.label or 0), "source": unit.image,
              "mask_sources": list(unit.masks), "modality": unit.modality,
              "original_size": list(image.shape), "has_lesion": has_lesion}
    record.update(_write_item(out, unit.uid, d))
    return [record], []


def _prepare_volume(unit: RawUnit, out: Path, size: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The volume's axial slices; a slice holding a non-finite voxel is skipped (reported), and such voxels
    count as 0 for the volume's intensity normalisation, so that the other slices come out right."""
    vol = read_image(unit.image).array
    seg = read_image(unit.masks[0]).array
    for name, arr in (("volume", vol), ("segmentation", seg)):
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 1 and name == "segmentation"):
            raise ReadError(unit.image, f"unexpected dimensionality ({name} shape {arr.shape}; expected 3D)")
    vol = vol[..., 0] if vol.ndim == 4 else vol  # 4D: the first volume of the series
    seg = seg[..., 0] if seg.ndim == 4 else seg
    if seg.shape != vol.shape:
        raise ReadError(unit.masks[0], f"mask size differs from image: segmentation {seg.shape}, volume {vol.shape}")
    resize = ResizeKeepAspectd(size=size)
    records, skips = [], []
    broken: set[int] = set()
    if np.issubdtype(vol.dtype, np.floating) and not np.isfinite(vol).all():
        broken = set(np.flatnonzero(~np.isfinite(vol).all(axis=(0, 1))).tolist())  # axial: the last axis
        vol = np.nan_to_num(vol, nan=0.0, posinf=0.0, neginf=0.0)
    for sl in volume_to_slices(vol, seg, min_brain_fraction=unit.options.get("min_brain_fraction", 0.1)):
        if sl.index in broken:
            skips.append(Skip(unit.image, f"slice {sl.index}: {NON_FINITE}").to_json())
            continue
        d = resize({"image": sl.image, "gt_mask": sl.gt_mask, "foreground": sl.foreground})
        label = int(d["gt_mask"].any())
        item_id = f"{unit.uid}_z{sl.index:03d}"
        record = {"id": item_id, "split": unit.split, "label": label, "source": unit.image,
                  "mask_sources": list(unit.masks), "modality": unit.modality, "slice": sl.index,
                  "brain_fraction": round(sl.brain_fraction, 4), "original_size": list(sl.image.shape[1:]),
                  "has_lesion": bool(label)}
        record.update(_write_item(out, item_id, d))
        records.append(record)
    return records, skips


def process_unit(unit: RawUnit, out: str | Path, size: int) -> dict[str, Any]:
    """Prepare one unit and write its ``items/<uid>.json``; bad input becomes a skip."""
    out = Path(out)
    try:
        fn = _prepare_volume if unit.kind == "volume" else _prepare_image
        records, skipped = fn(unit, out, size)
        result: dict[str, Any] = {"uid": unit.uid, "records": records, "skipped": skipped}
    except ReadError as exc:
        result = {"uid": unit.uid, "records": [], "skipped": [Skip(exc.path, exc.reason).to_json()]}
    except WriteError:  # the output's fault, not the file's: stop, and redo this unit on the rerun
        raise
    except Exception as exc:  # one odd file must not end a run of thousands; it is reported instead
        result = {"uid": unit.uid, "records": [],
                  "skipped": [Skip(unit.image, f"unexpected error ({type(exc).__name__}: {exc})").to_json()]}
    atomic_write_bytes(out / "items" / f"{unit.uid}.json", json.dumps(result).encode())
    return result


def _single_threaded_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, one OpenCV thread each (parallelism comes from processes; nested
    thread pools only contend). The caller sets OpenCV to one thread *before* forking:
    calling cv2.setNumThreads in a forked child whose parent had used OpenCV's pool hangs."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())


def _run(args: tuple[RawUnit, str, int]) -> str:
    process_unit(*args)
    return args[0].uid


# ---------------------------------------------------------------- the whole run


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Finished work goes on only under its own settings; a folder with none (a run that failed
    before its first image, e.g. on a wrong option) takes the new ones."""
    path = out / "prepare.json"
    if path.is_file() and any((out / "items").glob("*.json")):
        previous = json.loads(path.read_text())
        if {k: previous.get(k) for k in settings} != settings:
            raise PrepareError(f"{out}: prepared earlier with other settings ({path.name}: {previous}); "
                               f"use a fresh --out folder or the same settings")
    else:
        atomic_write_bytes(path, json.dumps(settings, indent=2).encode())


def _clean_temporaries(out: Path) -> None:
    for sub in ("images", "masks", "foreground", "items"):
        for tmp in (out / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _pool_context() -> Any:
    # fork shares the already imported MONAI/torch; spawn would re-import them per worker (seconds).
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")


def prepare_dataset(name: str, root: str | Path, out: str | Path, *, size: int = 224, workers: int = 1,
                    strict: bool = False, options: dict[str, Any] | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Prepare dataset ``name`` from ``root`` into ``out``; returns the card.

    Example:
        >>> card = prepare_dataset("brainmri", "raw/brain", "prepared/brainmri", workers=2)  # doctest: +SKIP
        >>> card["counts"]["test"]                                                           # doctest: +SKIP
        {'normal': 65, 'abnormal': 155, 'total': 220}
    """
    if name not in INDEXERS:
        raise PrepareError(f"unknown dataset {name!r}; choose from {', '.join(sorted(INDEXERS))}")
    if not Path(root).is_dir():
        raise PrepareError(f"{root}: raw data folder not found")
    options = dict(options or {})
    try:
        return _prepare(name, root, Path(out), size, workers, strict, options, on_progress)
    except WriteError as exc:
        raise PrepareError(f"{exc.filename}: cannot write ({exc.strerror}); finished images are kept: rerun the "
                           "same command once there is space or write access") from None


def _prepare(name: str, root: str | Path, out: Path, size: int, workers: int, strict: bool, options: dict[str, Any],
             on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), str(out)) from None
    _check_settings(out, settings(name, size, options))
    _clean_temporaries(out)
    accepted = {p.name for p in inspect.signature(INDEXERS[name]).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise PrepareError(f"{name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    try:
        index = INDEXERS[name](root, **options)
    except LayoutError as exc:
        raise PrepareError(f"{name}: {exc}") from exc
    except TypeError as exc:  # an option the indexer does not take
        raise PrepareError(f"{name}: bad option ({exc})") from exc
    unique_ids(index.units)
    done = {p.stem for p in (out / "items").glob("*.json")}
    pending = [u for u in index.units if u.uid not in done]
    total, finished = len(index.units), len(index.units) - len(pending)
    if on_progress:
        on_progress(finished, total)
    jobs = [(u, str(out), int(size)) for u in pending]
    if workers > 1 and len(jobs) > 1:
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with _single_threaded_pool(workers) as ex:
                for _ in ex.map(_run, jobs, chunksize=chunk):
                    finished += 1
                    if on_progress:
                        on_progress(finished, total)
        finally:
            cv2.setNumThreads(threads)
    else:
        for job in jobs:
            _run(job)
            finished += 1
            if on_progress:
                on_progress(finished, total)
    return assemble(out, index, name, size, options, strict)
