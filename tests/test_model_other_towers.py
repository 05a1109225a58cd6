"""Towers other than the two the main tests build: a CustomTextCLIP with open_clip's own text transformer,
a timm tower that is not a ViT (refused), and layer-wise learning-rate decay on a timm ViT tower."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from model import FusionMedCLIP, FusionMedCLIPConfig, layer_decay_groups


def test_custom_text_clip_with_a_native_text_transformer(tmp_path):
    # CustomTextCLIP keeps open_clip's own text transformer under clip.text: CoOp runs through it too.
    cfg = {
        "embed_dim": 32,
        "custom_text": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (tmp_path / "fmc-tiny-customtext.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "fmc-tiny-customtext.json")
    torch.manual_seed(0)
    names = {"normal": ("brain",), "anomaly": ("tumour",)}
    m = FusionMedCLIP(
        FusionMedCLIPConfig(
            arch="fmc-tiny-customtext", pretrained=None, image_size=32, prompt_mode="coop", class_names=names
        )
    )
    assert type(m.clip).__name__ == "CustomTextCLIP"
    tok = open_clip.get_tokenizer("fmc-tiny-customtext")
    words = "one two three four five six seven eight"
    with torch.no_grad():
        m.prompts.ctx[:] = m.clip.text.token_embedding(tok([words])[0, 1:9])[None]
    ref = F.normalize(m.clip.encode_text(tok([f"{words} brain.", f"{words} tumour."])), dim=-1)
    assert torch.allclose(m.text_features(), ref, atol=1e-5)


def test_a_timm_tower_without_patch_tokens_is_refused(tmp_path):
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "test_convnext",
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 32,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (tmp_path / "fmc-tiny-convnext.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "fmc-tiny-convnext.json")
    with pytest.raises(NotImplementedError, match="timm VisionTransformers; got ConvNeXt"):
        FusionMedCLIP(FusionMedCLIPConfig(arch="fmc-tiny-convnext", pretrained=None, image_size=32))


def test_layer_decay_groups_of_a_timm_vit_tower(tmp_path):
    # timm's names: patch_embed, cls_token and pos_embed come before the blocks; norm, fc_norm, head after
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "", "timm_proj": "linear",
                       "image_size": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (tmp_path / "fmc-tiny-timmvit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "fmc-tiny-timmvit.json")
    visual = open_clip.create_model("fmc-tiny-timmvit", pretrained=None, pretrained_image=False).visual
    depth = len(visual.trunk.blocks)
    groups = layer_decay_groups(visual, 1.0, 0.5, 0.1)
    where = {id(p): g for g in groups for p in g["params"]}
    named = dict(visual.named_parameters())
    expected = {"trunk.cls_token": 0, "trunk.pos_embed": 0, "trunk.patch_embed.proj.weight": 0,
                "trunk.blocks.0.attn.qkv.weight": 1, f"trunk.blocks.{depth - 1}.mlp.fc2.bias": depth,
                "trunk.norm.weight": depth + 1, "head.proj.weight": depth + 1}
    for name, layer in expected.items():
        assert where[id(named[name])]["lr"] == 0.5 ** (depth + 1 - layer), name
        assert where[id(named[name])]["weight_decay"] == (0.1 if named[name].ndim >= 2 else 0.0), name
    assert sum(len(g["params"]) for g in groups) == len(named)
