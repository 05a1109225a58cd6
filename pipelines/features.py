"""Stage 2's feature cache: the frozen backbone's patch tokens of blocks J, computed once per sample.

In stage 2 only the prompts and the alignment adapters train, and a cached sample is the same image in
every pass, so its tokens are the same too. The first time a sample comes, its tokens are computed by the
backbone (the same call the backbone path makes) and kept; later passes read them. Under DDP each rank
keeps the samples it has seen.

Example:
    >>> cache = FeatureCache.plan(model, train_indices, budget_gb=8.0, device="cpu")   # doctest: +SKIP
    >>> tokens = cache.tokens(model, batch["image"], batch["index"])                 # doctest: +SKIP
"""
from __future__ import annotations

import math

import numpy as np
import torch


class FeatureCache:
    """Tokens (|J|, width, h, w) of each sample of ``indices``, filled as samples come."""

    def __init__(self, indices: np.ndarray, shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device):
        self.row = np.full(int(np.max(indices)) + 1 if len(indices) else 0, -1, np.int64)
        self.row[indices] = np.arange(len(indices))
        # torch.empty commits no memory until rows are written: a short run pays for what it sees.
        self.store = torch.empty((len(indices), *shape), dtype=dtype, device=device)
        self.filled = np.zeros(len(indices), bool)

    @staticmethod
    def token_shape(model) -> tuple[int, ...]:
        side = model.config.image_size // model.info.patch_size
        return (len(model.blocks), model.info.width, side, side)

    @staticmethod
    def nbytes(samples: int, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return samples * math.prod(shape) * dtype.itemsize

    def tokens(self, model, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """This batch's tokens: kept ones read, missing ones computed by the backbone and kept."""
        rows = self.row[index.cpu().numpy()]
        if (rows < 0).any():
            raise KeyError("the feature cache holds only the samples it was planned for")
        missing = ~self.filled[rows]
        if missing.any():
            fresh = model.extract_features(images[torch.from_numpy(missing).to(images.device)])
            self.store[torch.from_numpy(rows[missing]).to(self.store.device)] = fresh.to(self.store.dtype)
            self.filled[rows[missing]] = True
            if missing.all():  # the whole batch was just computed: use it as the backbone gave it
                return fresh
        return self.store[torch.from_numpy(rows).to(self.store.device)].to(images.device, torch.float32)
