"""LoRA on the vision tower through peft (attention incl. out_proj, and the MLP)."""

from __future__ import annotations

from peft import LoraConfig, LoraModel
from torch import nn

from .config import FusionMedCLIPConfig

# Full-match regex on module names inside the vision tower: every block's fused
# attention (peft's MultiheadAttention LoRA covers in_proj q,k,v and out_proj)
# and both MLP linears. Text tower and pooling head are left alone.
VISION_LORA_TARGETS = r"transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"
ADAPTER_NAME = "default"


def lora_config(config: FusionMedCLIPConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=VISION_LORA_TARGETS,
        bias="none",
    )


def add_lora(visual: nn.Module, config: FusionMedCLIPConfig) -> LoraModel:
    """Inject LoRA layers into ``visual`` in place; returns the peft wrapper (B starts at zero: identity)."""
    return LoraModel(visual, lora_config(config), ADAPTER_NAME)


def merge_lora(wrapped: nn.Module) -> nn.Module:
    """Fold LoRA into the base weights and return the plain vision tower (peft's merge_and_unload)."""
    if not isinstance(wrapped, LoraModel):
        raise TypeError(f"expected a peft LoraModel, got {type(wrapped).__name__}")
    return wrapped.merge_and_unload()


def is_lora_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name
