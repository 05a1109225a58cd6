"""Optimiser parameter groups with method.md's learning rates."""

from __future__ import annotations

import torch
from torch import nn

from .lora import is_lora_param

LEARNING_RATES: dict[str, float] = {
    "prompts": 1e-3,
    "alignment_adapters": 1e-3,
    "lora": 3e-5,
    "block_adapters": 5e-5,
}


def _group_of(name: str) -> str:
    if name.startswith("prompts.") or name == "log_tau":
        return "prompts"
    if name.startswith("align."):
        return "alignment_adapters"
    if name.startswith("block_adapters."):
        return "block_adapters"
    if is_lora_param(name):
        return "lora"
    raise ValueError(f"trainable parameter {name!r} belongs to no optimiser group")


def param_groups(model: nn.Module, lrs: dict[str, float] | None = None) -> list[dict]:
    """One group per part that has trainable parameters: ``{"name", "params", "lr"}``.

    Every trainable parameter lands in exactly one group (an unknown one is an error).

    Example:
        >>> groups = param_groups(model)                         # doctest: +SKIP
        >>> [(g["name"], g["lr"]) for g in groups]               # doctest: +SKIP
        [('prompts', 0.001), ('alignment_adapters', 0.001)]
    """
    lrs = {**LEARNING_RATES, **(lrs or {})}
    buckets: dict[str, list[nn.Parameter]] = {k: [] for k in LEARNING_RATES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            buckets[_group_of(name)].append(p)
    return [{"name": k, "params": v, "lr": lrs[k]} for k, v in buckets.items() if v]


def build_optimizer(model: nn.Module, lrs: dict[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW, weight decay 0.01, betas (0.9, 0.999), eps 1e-8, with :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(model, lrs), weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
