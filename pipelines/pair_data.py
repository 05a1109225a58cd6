"""The images of image-caption pairs as tensors for ``fmclip pretrain``: read grey by dataprep's reader
(as stages 2 and 3 see them), repeated to the tower's three channels, augmented (method.md section 3:
random resized crop, horizontal flip, colour jitter, rotation; the method's grayscale step has nothing
left to do on grey images) or, for validation, resized by the shorter side and centre-cropped.

Each image's augmentation is drawn from its own seed (run seed, epoch, index), so an epoch gives the
same batches with any number of loader workers and after a resume.

Example:
    >>> data = PairImages(["a.png", "b.png"], size=224, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28),
    ...                   augment={"crop_scale": [0.5, 1.0], "hflip": True, "color_jitter": 0.2,
    ...                            "rotation_deg": 10.0}, seed=0)   # doctest: +SKIP
    >>> image, index = data[(3, 1)]   # epoch 3's augmentation of image 1  # doctest: +SKIP
    >>> image.shape, index                                          # doctest: +SKIP
    (torch.Size([3, 224, 224]), 1)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def build_transform(size: int, mean, std, augment: dict[str, Any] | None):
    """torchvision v2 transforms on a (3, H, W) float tensor in [0, 1]; ``augment=None``: evaluation."""
    from torchvision.transforms import v2

    if augment is None:
        steps = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    else:
        steps = [v2.RandomResizedCrop(size, scale=tuple(augment["crop_scale"]), antialias=True)]
        if augment["hflip"]:
            steps.append(v2.RandomHorizontalFlip())
        if augment["color_jitter"] > 0:
            steps.append(v2.ColorJitter(brightness=augment["color_jitter"], contrast=augment["color_jitter"]))
        if augment["rotation_deg"] > 0:
            steps.append(v2.RandomRotation(augment["rotation_deg"]))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def read_grey(path: str) -> torch.Tensor:
    """A (3, H, W) float tensor in [0, 1] of the file's grey pixels (dataprep's reader: a bad file raises
    ``ReadError`` naming it; the pair check has decoded every file once already)."""
    from dataprep.io import read_image
    from dataprep.pixels import to_unit

    data = read_image(path)
    pixels = to_unit(data.array, data.meta.get("value_range"))
    return torch.from_numpy(np.ascontiguousarray(pixels))[None].expand(3, -1, -1)


class PairImages(Dataset):
    """The images of a list of files, transformed. An item is asked for by index, or by ``(epoch, index)``
    (:class:`EpochBatches`), and is ``(image, index)``."""

    def __init__(self, images: list[str], *, size: int, mean, std, augment: dict[str, Any] | None,
                 seed: int) -> None:
        self.images, self.seed = list(images), int(seed)
        self.transform = build_transform(size, mean, std, augment)
        self.random = augment is not None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = read_grey(self.images[index])
        if not self.random:
            return self.transform(image), index
        item_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):  # the transforms draw from torch's global generator
            torch.manual_seed(item_seed)
            return self.transform(image), index


class EpochBatches(Sampler):
    """This rank's rows of each global batch of a seeded permutation per epoch, as ``(epoch, index)`` keys:
    the epoch travels with each index, so loader workers can live across epochs. An incomplete last batch is
    dropped (a contrastive batch of one pair teaches nothing) unless it is the only one."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed, self.rank, self.world, self.epoch = n, batch, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return max(1, self.n // self.batch)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch, 0xB47]).permutation(self.n)
        full = [order[i:i + self.batch] for i in range(0, self.n - self.batch + 1, self.batch)] or [order]
        for rows in full:
            yield [(self.epoch, int(i)) for i in rows[self.rank::self.world]]
