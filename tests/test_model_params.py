"""Trainable parameters of each part, counted by hand from the architecture dimensions."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from model import FusionMedCLIP, FusionMedCLIPConfig, param_groups

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def lora_count(width: int, depth: int, r: int, mlp_ratio: int = 4) -> int:
    """r * (in + out) for each adapted matrix of each block.

    peft's MultiheadAttention LoRA adapts the fused in_proj (width -> 3 width, q, k and v at once)
    and out_proj (width -> width); the MLP has c_fc (width -> 4 width) and c_proj (4 width -> width).
    """
    hidden = mlp_ratio * width
    per_block = r * ((width + 3 * width) + (width + width) + (width + hidden) + (hidden + width))
    return depth * per_block


def expected_counts(width, depth, embed, text_width, n_blocks, n_ctx=8, r=8, bottleneck=64, stage=3):
    counts = {
        "prompts": n_ctx * text_width * 2,
        "alignment_adapters": n_blocks * (width * embed + embed),  # 1x1 conv weight + bias
    }
    if stage == 3:
        counts["lora"] = lora_count(width, depth, r)
        # down (width -> 64, + bias) and up (64 -> width, + bias)
        counts["block_adapters"] = n_blocks * (width * bottleneck + bottleneck + bottleneck * width + width)
    return counts


def counts_by_group(model) -> dict[str, int]:
    return {g["name"]: sum(p.numel() for p in g["params"]) for g in param_groups(model)}


def assert_everything_else_frozen(model, counts):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(counts.values())
    # the backbone itself (all but LoRA matrices) has no trainable parameter
    for name, p in model.clip.named_parameters():
        assert p.requires_grad == ("lora_" in name), name


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("cfg")
    (d / "fmc-tiny-params.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d)
    return "fmc-tiny-params"


@pytest.mark.parametrize("stage", [2, 3])
def test_tiny_counts(tiny_arch, stage):
    m = FusionMedCLIP(FusionMedCLIPConfig(arch=tiny_arch, pretrained=None, image_size=32, stage=stage))
    counts = expected_counts(width=64, depth=4, embed=32, text_width=32, n_blocks=3, stage=stage)
    assert counts_by_group(m) == counts
    assert_everything_else_frozen(m, counts)


def test_manual_prompts_have_no_prompt_parameters(tiny_arch):
    m = FusionMedCLIP(FusionMedCLIPConfig(arch=tiny_arch, pretrained=None, image_size=32, prompt_mode="manual"))
    assert "prompts" not in counts_by_group(m)


def test_learning_rates_and_optimizer(tiny_arch):
    from model import build_optimizer

    m = FusionMedCLIP(FusionMedCLIPConfig(arch=tiny_arch, pretrained=None, image_size=32, stage=3, learnable_tau=True))
    opt = build_optimizer(m)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"prompts": 1e-3, "alignment_adapters": 1e-3, "lora": 3e-5, "block_adapters": 5e-5}
    assert all(g["weight_decay"] == 0.01 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in opt.param_groups)
    # learnable tau rides with the prompts
    assert counts_by_group(m)["prompts"] == 8 * 32 * 2 + 1


def test_vit_l14_counts_and_one_forward():
    """The real ViT-L-14 architecture, random weights: hand counts, frozen backbone, one forward pass."""
    torch.manual_seed(0)
    m = FusionMedCLIP(FusionMedCLIPConfig(arch="ViT-L-14", pretrained=None, stage=3)).eval()
    assert m.blocks == (12, 18, 24)
    assert (m.info.width, m.info.depth, m.info.embed_dim, m.info.text_width) == (1024, 24, 768, 768)
    counts = expected_counts(width=1024, depth=24, embed=768, text_width=768, n_blocks=3)
    assert counts["lora"] == 3_145_728
    assert counts_by_group(m) == counts
    assert_everything_else_frozen(m, counts)
    with torch.no_grad():
        out = m(torch.rand(1, 1, 224, 224))
    assert out["anomaly_map"].shape == (1, 1, 224, 224)
    assert out["pred_score"].shape == (1,)
    assert torch.isfinite(out["anomaly_map"]).all()
