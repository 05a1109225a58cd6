"""LoRA on the vision tower through peft (every block's attention incl. its output projection, and the MLP).

peft's LoRA layer for ``nn.MultiheadAttention`` (open_clip's fused attention) has two faults, both fixed by
:class:`FusedAttentionLora`, which :func:`lora_config` registers through peft's custom-module hook:

- its forward merges the deltas into the base weights and unmerges them after every call, so the frozen
  weights drift by rounding step after step (W + dW - dW is not W in floating point); here the forward
  computes the attention with ``W + dW`` as temporaries and never writes the base weights;
- peft 0.21 and before (upstream pull request #3774, open when this was written) apply the output
  projection's delta twice in ``merge`` (``W + 2 dW``, used by the merged export) and take it off twice in
  ``unmerge``; where a probe finds the installed peft doing so, one delta is taken off after merging and
  put back before unmerging.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from peft import LoraConfig, LoraModel
from peft.tuners.lora.layer import MultiheadAttention as PeftLoraMultiheadAttention
from torch import nn

from .config import FusionMedCLIPConfig
from .vision_tower import NATIVE_LORA_TARGETS, vision_tower

# The native tower's targets (module names inside the vision tower); the tower adapter
# gives each kind's own (timm: attn.qkv, attn.proj, mlp.fc1, mlp.fc2). Text tower and head are left alone.
VISION_LORA_TARGETS = NATIVE_LORA_TARGETS
ADAPTER_NAME = "default"


class FusedAttentionLora(PeftLoraMultiheadAttention):
    """peft's LoRA layer for ``nn.MultiheadAttention``: a forward that leaves the base weights untouched,
    and a merge that applies each delta once (see the module's docstring)."""

    def _active(self) -> list[str]:
        return [name for name in self.active_adapters if name in self.lora_A]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        names = self._active()
        mha = self.get_base_layer()
        if self.disable_adapters or self.merged or not names:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights, is_causal=is_causal)
        out_proj = mha.out_proj.get_base_layer()
        w_in = mha.in_proj_weight + sum(self.get_delta_weight(n) for n in names)
        w_out = out_proj.weight + sum(mha.out_proj.get_delta_weight(n) for n in names)
        if mha.batch_first:  # the functional form takes (L, N, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, mha.embed_dim, mha.num_heads, w_in, mha.in_proj_bias, mha.bias_k, mha.bias_v,
            mha.add_zero_attn, mha.dropout, w_out, out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (out.transpose(0, 1) if mha.batch_first else out), weights

    def _out_proj_delta(self, names: list[str]) -> torch.Tensor | None:
        out = self.get_base_layer().out_proj
        deltas = [out.get_delta_weight(n) for n in names if n in self.lora_A]
        return sum(deltas) if deltas else None

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        already = len(self.merged_adapters)
        super().merge(safe_merge=safe_merge, adapter_names=adapter_names)
        delta = self._out_proj_delta(self.merged_adapters[already:]) if peft_doubles_out_proj() else None
        if delta is not None:
            weight = self.get_base_layer().out_proj.get_base_layer().weight
            weight.data -= delta.to(weight.dtype)

    def unmerge(self) -> None:
        delta = self._out_proj_delta(list(self.merged_adapters)) if self.merged and peft_doubles_out_proj() else None
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
    lora._register_custom_module({nn.MultiheadAttention: FusedAttentionLora})
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
