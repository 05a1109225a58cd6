"""LoRA on the vision tower through peft (every block's attention incl. its output projection, and the MLP).

peft (0.21 and before; upstream pull request #3774, open when this was written) applies the LoRA delta of
``nn.MultiheadAttention``'s output projection twice: its ``merge`` adds ``dW`` by hand and then again through
the projection's own ``merge``, so the forward and the merged export compute ``W + 2 dW`` while the gradient
is that of ``W + dW``. :func:`add_lora` checks once per process whether the installed peft does this and, if
so, registers :class:`OutProjOnce` for ``nn.MultiheadAttention`` through peft's custom-module hook; with a peft
that applies the delta once, peft's own layer is used unchanged.
"""

from __future__ import annotations

import functools

import torch
from peft import LoraConfig, LoraModel
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention
from torch import nn

from .config import FusionMedCLIPConfig
from .vision_tower import NATIVE_LORA_TARGETS, vision_tower

# The native tower's targets (module names inside the vision tower); the tower adapter
# gives each kind's own (timm: attn.qkv, attn.proj, mlp.fc1, mlp.fc2). Text tower and head are left alone.
VISION_LORA_TARGETS = NATIVE_LORA_TARGETS
ADAPTER_NAME = "default"


class OutProjOnce(PeftLoraMultiheadAttention):
    """peft's LoRA layer for ``nn.MultiheadAttention`` with the output projection's delta applied once.

    peft's ``merge`` leaves ``W_out + 2 dW_out`` (its own term plus the projection's ``merge``) and its
    ``unmerge`` takes ``dW_out`` off twice; this layer takes one delta off after merging and puts it back
    before unmerging. Only ``.data`` is touched, so the autograd graph (one delta) is peft's own.
    """

    def _out_proj_deltas(self, names: list[str]) -> torch.Tensor | None:
        out = self.get_base_layer().out_proj
        deltas = [out.get_delta_weight(n) for n in names if n in self.lora_A]
        return sum(deltas) if deltas else None

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        already = len(self.merged_adapters)
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)
        delta = self._out_proj_deltas(self.merged_adapters[already:])
        if delta is not None:
            weight = self.get_base_layer().out_proj.get_base_layer().weight
            weight.data -= delta.to(weight.dtype)

    def unmerge(self) -> None:
        delta = self._out_proj_deltas(list(self.merged_adapters)) if self.merged else None
        if delta is not None:
            weight = self.get_base_layer().out_proj.get_base_layer().weight
            weight.data += delta.to(weight.dtype)
        super().unmerge()


@functools.cache
def peft_doubles_out_proj() -> bool:
    """Whether the installed peft computes ``W_out + 2 dW_out`` for an ``nn.MultiheadAttention`` (a probe on
    a 4-wide attention layer with a known delta, compared with the single-delta result)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        holder = nn.Sequential()
        holder.add_module("attn", nn.MultiheadAttention(4, 1))
        x = torch.randn(3, 1, 4)
        base = holder.attn
        w_in, w_out = base.in_proj_weight.detach().clone(), base.out_proj.weight.detach().clone()
        wrapped = LoraModel(holder, LoraConfig(r=1, lora_alpha=1, target_modules=["attn"]), ADAPTER_NAME)
        layer = wrapped.model.attn
        with torch.no_grad():
            for module in (layer.lora_B[ADAPTER_NAME], layer.base_layer.out_proj.lora_B[ADAPTER_NAME]):
                module.weight.fill_(0.5)
            got = layer(x, x, x, need_weights=False)[0]
            d_out = layer.base_layer.out_proj.get_delta_weight(ADAPTER_NAME)
            once = nn.functional.multi_head_attention_forward(
                x, x, x, 4, 1, w_in + layer.get_delta_weight(ADAPTER_NAME), base.in_proj_bias, None, None,
                False, 0.0, w_out + d_out, base.out_proj.bias, training=False, need_weights=False)[0]
        return not torch.allclose(got, once, atol=1e-5)


def lora_config(config: FusionMedCLIPConfig, targets: str = VISION_LORA_TARGETS) -> LoraConfig:
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    if peft_doubles_out_proj():
        lora._register_custom_module({nn.MultiheadAttention: OutProjOnce})
    return lora


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
