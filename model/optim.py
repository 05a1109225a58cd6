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


def layer_decay_groups(visual: nn.Module, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW groups of a whole vision tower with layer-wise learning-rate decay (BEiT's rule, as timm
    applies it): in a tower of d blocks, block i (1-indexed) learns at ``lr * decay ** (d + 1 - i)``, the
    embeddings before the blocks at ``lr * decay ** (d + 1)``, the norm and projection after them at ``lr``.
    Parameters of fewer than 2 dimensions (norms, biases, the class token) get no weight decay, as in
    open_clip's training. Each group has ``name`` (``layer_<id>`` with ``decay``/``no_decay``), ``lr`` and
    ``lr_scale``; frozen parameters are left out.

    Example:
        >>> groups = layer_decay_groups(clip.visual, 3e-6, 0.8, 0.05)   # doctest: +SKIP
        >>> groups[0]["name"], groups[0]["lr_scale"]                      # doctest: +SKIP
        ('layer_0_decay', 0.107...)
    """
    from .vision_tower import vision_tower

    tower = vision_tower(visual)
    depth = tower.depth
    block_of = {id(p): i + 1 for i, block in enumerate(tower.blocks) for p in block.parameters()}
    groups: dict[str, dict] = {}
    for name, p in visual.named_parameters():
        if not p.requires_grad:
            continue
        layer = block_of.get(id(p), 0 if name.startswith(tower.embedding_prefixes) else depth + 1)
        decayed = p.ndim >= 2
        key = f"layer_{layer}_{'decay' if decayed else 'no_decay'}"
        scale = decay ** (depth + 1 - layer)
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr * scale, "lr_scale": scale,
                                        "weight_decay": weight_decay if decayed else 0.0})
        group["params"].append(p)
    return sorted(groups.values(), key=lambda g: (int(g["name"].split("_")[1]), g["name"]))
