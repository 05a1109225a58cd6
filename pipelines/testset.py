"""A prepared dataset's evaluation split, read for scoring: images in [0, 1], masks, labels, content hashes.

Only evaluation reads a test split (training and model selection never do). Images are the prepared 16-bit
PNGs (value / 65535); masks are binarised (> 0); an abnormal image without a mask leaves the split without
pixel metrics, and the report says so.

Example:
    >>> test = TestSplit("prepared/brainmri", "test")                  # doctest: +SKIP
    >>> for records, images, masks in test.batches(32): ...            # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


class EvaluationError(Exception):
    """An evaluation that cannot run as asked; the message names the file or the reason."""


class TestSplit:
    """The records of one split of a prepared dataset, sorted by id."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, prepared: str | Path, split: str = "test") -> None:
        from dataprep import read_index
        from dataprep.fewshot import dataset_identity

        self.root = Path(prepared)
        if not (self.root / "index.jsonl").is_file():
            raise EvaluationError(f"{self.root}: not a prepared dataset (no index.jsonl); make one with `fmclip prepare`")
        self.split = split
        self.records = sorted((r for r in read_index(self.root) if r["split"] == split), key=lambda r: r["id"])
        if not self.records:
            raise EvaluationError(f"{self.root}: no image in split {split!r}")
        self.identity = dataset_identity(self.root)
        abnormal = [r for r in self.records if int(r["label"]) == 1]
        missing = sum(1 for r in abnormal if not r.get("mask"))
        self.has_masks = missing == 0
        self.mask_note = ("" if self.has_masks else
                          f"{missing} of {len(abnormal)} abnormal images have no mask: image metrics only")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.array([int(r["label"]) for r in self.records], np.int64)

    @property
    def hashes(self) -> dict[str, str]:
        """Content hash (the index's sha256 of the prepared pixels) -> id."""
        return {r["sha256"]: r["id"] for r in self.records}

    def image(self, record: dict[str, Any]) -> np.ndarray:
        from dataprep.io import read_png

        pixels = read_png(self.root / record["image"])
        if pixels.ndim != 2:
            raise EvaluationError(f"{self.root / record['image']}: expected a grey image, got shape {pixels.shape}")
        scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
        return pixels.astype(np.float32) / np.float32(scale)

    def mask(self, record: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        if not record.get("mask"):
            return np.zeros(shape, bool)
        from dataprep.io import read_png

        mask = read_png(self.root / record["mask"]) > 0
        if mask.shape != shape:
            raise EvaluationError(f"{self.root / record['mask']}: mask of {mask.shape}, image of {shape}")
        return mask

    def batches(self, size: int) -> Iterator[tuple[list[dict[str, Any]], torch.Tensor, np.ndarray]]:
        """(records, images (B, 1, H, W) float32 in [0, 1], masks (B, H, W) bool), in id order."""
        for at in range(0, len(self.records), size):
            records = self.records[at:at + size]
            images = [self.image(r) for r in records]
            shapes = {i.shape for i in images}
            if len(shapes) != 1:
                raise EvaluationError(f"{self.root}: images of several sizes {sorted(shapes)}; prepare the dataset again")
            masks = np.stack([self.mask(r, images[0].shape) for r in records])
            yield records, torch.from_numpy(np.stack(images))[:, None], masks
