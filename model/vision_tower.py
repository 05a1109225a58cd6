"""What FusionMedCLIP needs from an open_clip vision tower, for native and timm ViTs alike.

open_clip has two ViT towers: its own ``VisionTransformer`` (OpenAI/LAION
models) and ``TimmModel`` wrapping a timm ViT (BiomedCLIP, SigLIP, ...).
:func:`vision_tower` wraps either in a :class:`VisionTower` that answers the
few questions the rest of the model asks (sizes, blocks, LoRA targets, patch
tokens, the frozen pooling head), so nothing else looks at the tower's type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from peft import LoraModel
from torch import nn

# Full-match regexes on module names inside the tower: every block's attention and both MLP linears.
# Native: the fused attention (peft's MultiheadAttention LoRA covers in_proj q,k,v and out_proj).
NATIVE_LORA_TARGETS = r"transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"
# timm: q,k,v are one Linear (attn.qkv), then the output projection and the two MLP linears.
TIMM_LORA_TARGETS = r"trunk\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
_TIMM_LORA_LEAVES = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def _square(value, what: str) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise NotImplementedError(f"only square {what} are supported, got {value}")
    return int(a)


class VisionTower(ABC):
    """A view of one open_clip ViT tower; cheap to build, holds no state of its own.

    Built afresh from ``clip.visual`` when needed, so it always sees the
    current module (LoRA-wrapped, merged or deep-copied).
    """

    lora_targets: str = ""
    # Parameter-name prefixes (inside the tower) of what comes before the blocks: patch embedding,
    # class token, positions, the pre-norm. Layer-wise learning-rate decay gives them the lowest rate.
    embedding_prefixes: tuple[str, ...] = ()

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def check(self) -> None:
        """Raise NotImplementedError if this tower lacks something FusionMedCLIP relies on."""
        _ = self.patch_size, self.image_size  # both refuse non-square values

    # Sizes
    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    @abstractmethod
    def width(self) -> int: ...

    @property
    @abstractmethod
    def embed_dim(self) -> int: ...

    @property
    @abstractmethod
    def patch_size(self) -> int: ...

    @property
    @abstractmethod
    def image_size(self) -> int: ...

    @property
    @abstractmethod
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order (block adapters hook onto them)."""

    def patch_tokens(self, pixels: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """Raw outputs of the 0-indexed blocks ``indices`` as (B, width, h, w) maps, prefix tokens dropped.

        Both open_clip towers implement ``forward_intermediates`` with this
        signature; the final norm is not applied (the alignment adapters learn
        their own scaling), and the run stops after the last block needed.
        """
        out = self.module.forward_intermediates(
            pixels, indices=indices, stop_early=True, intermediates_only=True, output_fmt="NCHW"
        )
        return out["image_intermediates"]

    @abstractmethod
    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Average patch tokens (B, width, h, w) over space through the tower's frozen norm and head: (B, embed_dim)."""

    @abstractmethod
    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token (..., width) through the tower's frozen norm and head, one by one: (..., embed_dim)."""


class NativeVisionTower(VisionTower):
    """open_clip's own ``VisionTransformer``."""

    lora_targets = NATIVE_LORA_TARGETS
    embedding_prefixes = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.")

    @property
    def width(self) -> int:
        return int(self.module.transformer.width)

    @property
    def embed_dim(self) -> int:
        return int(self.module.output_dim)

    @property
    def patch_size(self) -> int:
        return _square(self.module.patch_size, "patches")

    @property
    def image_size(self) -> int:
        return _square(self.module.image_size, "input sizes")

    @property
    def blocks(self) -> nn.ModuleList:
        return self.module.transformer.resblocks

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(tokens.mean(dim=(2, 3)))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.module.ln_post(tokens)
        return x @ self.module.proj if self.module.proj is not None else x


def _is_timm_vit(trunk: nn.Module) -> bool:
    """timm's VisionTransformer or a subclass, recognised by name: model/ reaches timm only
    through open_clip (architecture.md), so it does not import timm itself."""
    return any(c.__name__ == "VisionTransformer" and c.__module__.startswith("timm.") for c in type(trunk).__mro__)


class TimmVisionTower(VisionTower):
    """open_clip's ``TimmModel`` around a timm ViT (``trunk``), e.g. BiomedCLIP's ``vit_base_patch16_224``."""

    lora_targets = TIMM_LORA_TARGETS
    embedding_prefixes = ("trunk.patch_embed.", "trunk.cls_token", "trunk.reg_token", "trunk.pos_embed",
                          "trunk.norm_pre.")

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        self.trunk = module.trunk

    def check(self) -> None:
        if not _is_timm_vit(self.trunk):  # e.g. ConvNeXt towers: no patch tokens
            raise NotImplementedError(
                f"timm vision towers must be timm VisionTransformers; got {type(self.trunk).__name__}"
            )
        super().check()
        names = {n for n, _ in self.trunk.blocks[0].named_modules()}
        missing = [leaf for leaf in _TIMM_LORA_LEAVES if leaf not in names]
        if missing:
            raise NotImplementedError(
                f"the blocks of {type(self.trunk).__name__} lack {missing}, which LoRA targets"
            )

    @property
    def width(self) -> int:
        return int(self.trunk.embed_dim)

    @property
    def embed_dim(self) -> int:
        # TimmModel has no output_dim: the last linear map of its head (or of the trunk's head) gives it.
        for head in (self.module.head, self.trunk.get_classifier()):
            linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
            if linears:
                return int(linears[-1].out_features)
        return int(self.trunk.num_features)

    @property
    def patch_size(self) -> int:
        return _square(self.trunk.patch_embed.patch_size, "patches")

    @property
    def image_size(self) -> int:
        return _square(self.trunk.patch_embed.img_size, "input sizes")

    @property
    def blocks(self) -> nn.Sequential:
        return self.trunk.blocks

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        # timm's own order: norm on every token (end of forward_features), pool, fc_norm, head
        # (forward_head), then open_clip's projection head; only the pool becomes a plain mean.
        # For a tower trained with average pooling this is exactly its image embedding.
        x = self.trunk.norm(tokens.flatten(2).transpose(1, 2)).mean(dim=1)
        return self._head(x)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._head(self.trunk.norm(tokens))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk.head(self.trunk.head_drop(self.trunk.fc_norm(x)))
        return self.module.head(x)


def vision_tower(visual: nn.Module) -> VisionTower:
    """The :class:`VisionTower` of ``clip.visual`` (also when peft has wrapped it), or a clear error."""
    # peft injects LoRA layers in place and only wraps the tower, so the wrapped module is the tower itself.
    module = visual.model if isinstance(visual, LoraModel) else visual
    if isinstance(module, VisionTransformer):
        return NativeVisionTower(module)
    if isinstance(module, TimmModel):
        return TimmVisionTower(module)
    raise NotImplementedError(
        f"FusionMedCLIP needs a ViT vision tower (open_clip's VisionTransformer or a timm ViT); "
        f"this model has {type(module).__name__}"
    )
