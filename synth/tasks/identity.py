"""The identity task: a normal sample (empty mask)."""
from __future__ import annotations

import numpy as np

from .base import Context, Task


class Identity(Task):
    """Returns the image unchanged and an empty mask."""

    name = "identity"

    def sample(self, rng, image, ctx: Context) -> dict:
        return {"lesions": []}

    def apply(self, image, params, ctx: Context):
        return image.astype(np.float32, copy=True), np.zeros(ctx.spatial_shape, np.float32)
