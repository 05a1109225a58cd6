"""The identity task: a normal sample (empty mask)."""
from __future__ import annotations

from .base import Context, Task, output_buffers


class Identity(Task):
    """Returns the image unchanged and an empty mask."""

    name = "identity"

    def sample(self, rng, image, ctx: Context) -> dict:
        return {"lesions": []}

    def apply(self, image, params, ctx: Context, out=None, mask=None):
        return output_buffers(image, ctx, out, mask)
