"""Alignment adapters (patch tokens -> joint embedding) and residual block adapters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vision_tower import vision_tower


class AlignmentAdapter(nn.Module):
    """phi_j: a 1x1 convolution from the ViT width to the joint embedding size, then L2 norm per position.

    Example:
        >>> phi = AlignmentAdapter(1024, 768)
        >>> phi(torch.randn(2, 1024, 16, 16)).shape
        torch.Size([2, 768, 16, 16])
    """

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(tokens), dim=1)


def gap_embedding(tokens: torch.Tensor, visual: nn.Module) -> torch.Tensor:
    """Ablation "GAP": average patch tokens (B, W, h, w) over space, then the tower's own frozen norm + projection.

    Native towers: ``ln_post`` then ``proj``; timm towers: their final norm, head
    and open_clip's projection head (see :meth:`model.vision_tower.VisionTower.pool`).
    No trainable parameters. Returns one L2-normalised embedding per image as a
    (B, E, 1, 1) "map", which the map maker upsamples to a constant map; with
    manual prompts this is the plain zero-shot CLIP baseline, per feature block.
    """
    return F.normalize(vision_tower(visual).pool(tokens), dim=-1)[:, :, None, None]


def head_embedding(tokens: torch.Tensor, visual: nn.Module) -> torch.Tensor:
    """Each patch token (B, W, h, w) through the tower's own frozen norm and projection: (B, E, h, w), L2 per
    position. No trainable parameters: the zero-shot baseline's map (``alignment="head"``, with manual prompts)."""
    x = vision_tower(visual).project(tokens.permute(0, 2, 3, 1))
    return F.normalize(x, dim=-1).permute(0, 3, 1, 2)


class BlockAdapter(nn.Module):
    """alpha_j: x + up(dropout(gelu(down(x)))), with ``up`` zero-initialised so it starts as the identity.

    Example:
        >>> a = BlockAdapter(64, bottleneck=8)
        >>> x = torch.randn(2, 5, 64)
        >>> bool(torch.equal(a(x), x))
        True
    """

    def __init__(self, width: int, bottleneck: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.drop(self.act(self.down(x))))

    def as_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook for the block it follows: replaces the block's output by ``self(output)``."""
        return self(output)
