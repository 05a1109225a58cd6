"""LoRA on the vision tower through peft (every block's attention incl. its output projection, and the MLP)."""

from __future__ import annotations

from peft import LoraConfig, LoraModel
from torch import nn

from .config import FusionMedCLIPConfig
from .vision_tower import NATIVE_LORA_TARGETS, vision_tower

# The native tower's targets (module names inside the vision tower); the tower adapter
# gives each kind's own (timm: attn.qkv, attn.proj, mlp.fc1, mlp.fc2). Text tower and head are left alone.
VISION_LORA_TARGETS = NATIVE_LORA_TARGETS
ADAPTER_NAME = "default"


def lora_config(config: FusionMedCLIPConfig, targets: str = VISION_LORA_TARGETS) -> LoraConfig:
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )


def add_lora(visual: nn.Module, config: FusionMedCLIPConfig) -> LoraModel:
    """Inject LoRA layers into ``visual`` in place; returns the peft wrapper (B starts at zero: identity)."""
    return LoraModel(visual, lora_config(config, vision_tower(visual).lora_targets), ADAPTER_NAME)


def merge_lora(wrapped: nn.Module) -> nn.Module:
    """Fold LoRA into the base weights and return the plain vision tower (peft's merge_and_unload)."""
    if not isinstance(wrapped, LoraModel):
        raise TypeError(f"expected a peft LoraModel, got {type(wrapped).__name__}")
    return wrapped.merge_and_unload()


def is_lora_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name
