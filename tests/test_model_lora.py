"""Every LoRA delta of the vision tower is applied exactly once: each wrapped layer's output against a hand
computation of W x + (alpha / r) B A x, in the LoRA forward and in the merged export."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_model_core import tiny, tiny_arch  # noqa: F401  (the fixture registers the tiny architecture)
from torch import nn

from model.lora import ADAPTER_NAME, FusedAttentionLora, peft_doubles_out_proj


def _ab(layer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight


@pytest.fixture()
def trained_lora(tiny_arch):  # noqa: F811
    """A stage-3 model whose LoRA B matrices are no longer zero, as after training."""
    model = tiny(tiny_arch, stage=3, lora_dropout=0.0).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _attention_by_hand(mha: nn.Module, wrapped, x: torch.Tensor) -> torch.Tensor:
    """open_clip's fused attention with W_in + s B_in A_in and W_out + s B_out A_out, computed here."""
    scale = wrapped.scaling[ADAPTER_NAME]
    a_in, b_in = _ab(wrapped)
    a_out, b_out = _ab(wrapped.base_layer.out_proj)
    base_out = wrapped.base_layer.out_proj.get_base_layer()
    w_in = mha.in_proj_weight + scale * b_in @ a_in
    w_out = base_out.weight + scale * b_out @ a_out
    seq_first = x.transpose(0, 1) if mha.batch_first else x  # the functional form takes (L, N, E)
    out = F.multi_head_attention_forward(
        seq_first, seq_first, seq_first, mha.embed_dim, mha.num_heads, w_in, mha.in_proj_bias, None, None, False,
        0.0, w_out, base_out.bias, training=False, need_weights=False)[0]
    return out.transpose(0, 1) if mha.batch_first else out


def test_each_lora_delta_is_applied_once(trained_lora):
    torch.manual_seed(0)
    attention = linear = 0
    with torch.no_grad():
        for name, module in trained_lora.clip.visual.named_modules():
            if not hasattr(module, "lora_A") or ADAPTER_NAME not in module.lora_A:
                continue
            if name.endswith(".out_proj"):
                continue  # the attention calls no forward of its output projection: checked with it
            base = module.get_base_layer()
            if isinstance(base, nn.MultiheadAttention):
                x = torch.randn(2, 5, base.embed_dim) if base.batch_first else torch.randn(5, 2, base.embed_dim)
                got = module(x, x, x, need_weights=False)[0]
                assert torch.allclose(got, _attention_by_hand(base, module, x), atol=1e-5), name
                attention += 1
            else:
                x = torch.randn(4, base.in_features)
                a, b = _ab(module)
                expected = base(x) + module.scaling[ADAPTER_NAME] * (x @ a.T) @ b.T
                assert torch.allclose(module(x), expected, atol=1e-5), name
                linear += 1
    assert attention == 4 and linear == 8  # 4 blocks: one attention layer and two MLP linears each


def test_merged_export_applies_each_delta_once(trained_lora):
    """The merged tower's weights are the base weights plus one delta each, and its maps are the LoRA model's."""
    expected = {}
    for name, module in trained_lora.clip.visual.named_modules():
        if isinstance(module, FusedAttentionLora) or (hasattr(module, "lora_A") and ADAPTER_NAME in module.lora_A
                                               and isinstance(module.get_base_layer(), nn.MultiheadAttention)):
            a, b = _ab(module)
            a_out, b_out = _ab(module.base_layer.out_proj)
            s = module.scaling[ADAPTER_NAME]
            key = name.removeprefix("model.")
            expected[key + ".in_proj_weight"] = module.get_base_layer().in_proj_weight + s * b @ a
            expected[key + ".out_proj.weight"] = module.base_layer.out_proj.get_base_layer().weight + s * b_out @ a_out
    merged = trained_lora.merged_copy()
    state = merged.clip.visual.state_dict()
    assert len(expected) == 8
    for key, value in expected.items():
        assert torch.allclose(state[key], value, atol=1e-6), key
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (merged(x)["anomaly_map"] - trained_lora(x)["anomaly_map"]).abs().max() <= 1e-5


def test_training_leaves_base_weights_bit_for_bit(trained_lora):
    """peft's own layer merges and unmerges around each forward, so its base weights drift by rounding."""
    before = {n: p.detach().clone() for n, p in trained_lora.clip.visual.named_parameters() if "lora_" not in n}
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    trained_lora.train()
    for _ in range(3):
        trained_lora(x)["anomaly_map"].mean().backward()
    after = dict(trained_lora.clip.visual.named_parameters())
    assert set(after) >= set(before)
    for n, p in before.items():
        assert torch.equal(after[n], p), n


def test_the_probe_sees_what_the_installed_peft_does():
    """The probe's verdict decides whether the fix is used: with the fix the attention is right (tested
    above), so here the probe must agree with a direct look at peft's own layer."""
    from peft import LoraConfig, LoraModel

    holder = nn.Sequential()
    holder.add_module("attn", nn.MultiheadAttention(4, 1))
    wrapped = LoraModel(holder, LoraConfig(r=1, lora_alpha=1, target_modules=["attn"]), ADAPTER_NAME).model.attn
    with torch.no_grad():
        wrapped.base_layer.out_proj.lora_B[ADAPTER_NAME].weight.fill_(1.0)
        w = wrapped.base_layer.out_proj.get_base_layer().weight.detach().clone()
        delta = wrapped.base_layer.out_proj.get_delta_weight(ADAPTER_NAME)
        wrapped.merge()
        merged = wrapped.base_layer.out_proj.get_base_layer().weight.detach().clone()
        wrapped.unmerge()
    doubled = torch.allclose(merged, w + 2 * delta, atol=1e-6)
    assert doubled or torch.allclose(merged, w + delta, atol=1e-6)
    assert peft_doubles_out_proj() == doubled
