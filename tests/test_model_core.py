"""Forward behaviour of FusionMedCLIP on a tiny random open_clip ViT (no downloads)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from model_helpers import encode_text_reference, train_steps

from model import FusionMedCLIP, FusionMedCLIPConfig, check_unit_range
from model.umls import UMLS_CLASS_NAMES, UMLS_CONTEXT_INIT

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("cfg")
    (d / "fmc-tiny-core.json").write_text(json.dumps(TINY))
    avg = json.loads(json.dumps(TINY))
    avg["vision_cfg"].update(pool_type="avg", final_ln_after_pool=True)
    (d / "fmc-tiny-avg.json").write_text(json.dumps(avg))
    open_clip.add_model_config(d)
    return "fmc-tiny-core"


def tiny(arch: str, seed: int = 0, **kw) -> FusionMedCLIP:
    torch.manual_seed(seed)
    kw.setdefault("image_size", 32)
    return FusionMedCLIP(FusionMedCLIPConfig(arch=arch, pretrained=None, **kw))


def images(b: int = 2, c: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, c, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_and_score_is_map_max(tiny_arch, stage, channels):
    m = tiny(tiny_arch, stage=stage).eval()
    out = m(images(3, channels))
    assert out["anomaly_map"].shape == (3, 1, 32, 32)
    assert out["pred_score"].shape == (3,)
    assert torch.equal(out["pred_score"], out["anomaly_map"].amax(dim=(1, 2, 3)))
    assert ((out["anomaly_map"] >= 0) & (out["anomaly_map"] <= 1)).all()


def test_default_blocks_are_half_three_quarters_and_last(tiny_arch):
    assert tiny(tiny_arch).blocks == (2, 3, 4)


def test_grey_equals_replicated_rgb_and_normalisation_is_open_clips(tiny_arch):
    m = tiny(tiny_arch).eval()
    x = images(2, 1)
    assert torch.allclose(m(x)["anomaly_map"], m(x.repeat(1, 3, 1, 1))["anomaly_map"])
    pp = open_clip.get_model_preprocess_cfg(m.clip)
    ref = open_clip.image_transform(32, is_train=False, mean=pp["mean"], std=pp["std"]).transforms[-1]
    assert torch.allclose(m.preprocess(x.repeat(1, 3, 1, 1)), ref(x.repeat(1, 3, 1, 1)), atol=1e-6)


def test_last_block_tokens_match_open_clip_token_output(tiny_arch):
    # Independent check of the 1-indexed J: block d's tokens, after ln_post, are what
    # open_clip's own forward returns as patch tokens.
    m = tiny(tiny_arch).eval()
    x = images(2, 3)
    feats = m.extract_features(x)  # (B, |J|, W, h, w)
    last = feats[:, -1].flatten(2).transpose(1, 2)  # (B, N, W)
    m.clip.visual.output_tokens = True
    _, tokens = m.clip.visual(m.preprocess(x))
    assert torch.allclose(m.clip.visual.ln_post(last), tokens, atol=1e-5)


def test_manual_text_features_equal_open_clip_encode_text(tiny_arch):
    names = {"normal": ("healthy", "normal"), "anomaly": ("tumour",)}
    m = tiny(tiny_arch, prompt_mode="manual", class_names=names)
    tok = open_clip.get_tokenizer(tiny_arch)
    assert torch.allclose(m.text_features(), encode_text_reference(m, tok, names), atol=1e-5)


def test_coop_with_word_contexts_equals_encode_text_of_the_sentence(tiny_arch):
    m = tiny(tiny_arch, prompt_mode="coop", class_names={"normal": ("brain",), "anomaly": ("tumour",)})
    tok = open_clip.get_tokenizer(tiny_arch)
    words = "one two three four five six seven eight"
    ids = tok([words])[0, 1:9]
    with torch.no_grad():
        m.prompts.ctx[:] = m.clip.token_embedding(ids)[None]
    ref = F.normalize(m.clip.encode_text(tok([f"{words} brain.", f"{words} tumour."])), dim=-1)
    assert torch.allclose(m.text_features(), ref, atol=1e-5)


def test_umls_contexts_start_from_definition_tokens_and_names_are_synonyms(tiny_arch):
    m = tiny(tiny_arch)
    tok = open_clip.get_tokenizer(tiny_arch)
    for i, c in enumerate(("normal", "anomaly")):
        ids = tok([UMLS_CONTEXT_INIT[c]])[0, 1:9]
        assert torch.allclose(m.prompts.ctx[i], m.clip.token_embedding(ids))
    assert m.prompts.n_names == (len(UMLS_CLASS_NAMES["normal"]), len(UMLS_CLASS_NAMES["anomaly"]))
    assert len(UMLS_CLASS_NAMES["normal"]) == 11


def test_adapter_map_matches_a_reference_built_from_open_clip_tokens(tiny_arch):
    m = tiny(tiny_arch).eval()
    x = images(2, 1)
    pixels = m.preprocess(x)
    out = m.clip.visual.forward_intermediates(pixels, indices=[1, 2, 3], intermediates_only=True, output_fmt="NLC")
    text = m.text_features()
    ref = 0
    for i, tokens in enumerate(out["image_intermediates"]):  # (B, N, W), class token already split off
        conv = m.align[i].proj
        emb = tokens @ conv.weight[:, :, 0, 0].T + conv.bias
        emb = emb / emb.norm(dim=-1, keepdim=True)
        # two-class softmax == sigmoid of the logit difference
        p = torch.sigmoid((emb @ text[1] - emb @ text[0]) / 0.07).reshape(2, 1, 4, 4)
        ref = ref + F.interpolate(p, size=(32, 32), mode="bilinear", align_corners=False) / 3
    assert torch.allclose(m(x)["anomaly_map"], ref, atol=1e-5)


def test_gap_manual_is_zero_shot_clip(tiny_arch):
    # With average pooling and ln_post after the pool, open_clip's own encode_image is exactly
    # the GAP embedding of the last block: the map is the constant zero-shot CLIP probability.
    m = tiny("fmc-tiny-avg", prompt_mode="manual", alignment="gap", feature_blocks=(4,)).eval()
    assert sum(p.numel() for p in m.trainable_parameters().values()) == 0
    x = images(2, 3)
    img = F.normalize(m.clip.encode_image(m.preprocess(x)), dim=-1)
    txt = F.normalize(m.clip.encode_text(open_clip.get_tokenizer(tiny_arch)(["a photo of a normal", "a photo of a abnormal"])), dim=-1)
    p = (img @ txt.T / 0.07).softmax(-1)[:, 1]
    out = m(x)
    assert torch.allclose(out["pred_score"], p, atol=1e-5)
    assert torch.allclose(out["anomaly_map"], p.view(2, 1, 1, 1).expand(2, 1, 32, 32), atol=1e-5)


def test_stage3_starts_as_stage2(tiny_arch):
    # LoRA B = 0 and zero-initialised block-adapter up-projections: identical maps at init.
    s2 = tiny(tiny_arch, stage=2).eval()
    s3 = tiny(tiny_arch, stage=3).eval()
    x = images(2, 1)
    assert torch.allclose(s2(x)["anomaly_map"], s3(x)["anomaly_map"], atol=1e-6)


def test_feature_cache_equals_full_forward(tiny_arch):
    m = tiny(tiny_arch).eval()
    x = images(3, 1)
    cached = m.extract_features(x)
    assert cached.shape == (3, 3, 64, 4, 4)
    full, fast = m(x), m.forward_features(cached)
    assert torch.equal(full["anomaly_map"], fast["anomaly_map"])
    assert torch.equal(full["pred_score"], fast["pred_score"])
    with pytest.raises(RuntimeError, match="frozen backbone"):
        tiny(tiny_arch, stage=3).extract_features(x)


def test_training_step_moves_only_trainable_parts(tiny_arch):
    m = tiny(tiny_arch, stage=3)
    losses, frozen = train_steps(m, 32, 5)
    assert losses[-1] < losses[0]
    after = dict(m.clip.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(after[n], before), n  # LoRA never writes the base weights (model.lora)
        assert after[n].grad is None, n


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(2, 2, 32, 32), "1 \\(grey\\) or 3 channels"),
        (torch.rand(2, 1, 64, 64), "32x32"),
        (torch.rand(1, 32, 32), "\\(B, C, H, W\\)"),
        (torch.randint(0, 2, (1, 1, 32, 32)), "floating point"),
    ],
)
def test_bad_input_is_refused(tiny_arch, x, match):
    m = tiny(tiny_arch)
    with pytest.raises(ValueError, match=match):
        m(x)


@pytest.mark.parametrize("x", [torch.rand(2, 1, 32, 32) * 255, -torch.rand(2, 1, 32, 32),
                               torch.full((1, 1, 32, 32), float("nan"))])
def test_values_outside_the_unit_range_are_refused_where_data_enters(x):
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        check_unit_range(x)
    check_unit_range(x.nan_to_num(0.5).clamp(0, 1))  # the same batch in range passes


def test_text_features_given_once_give_the_same_maps(tiny_arch):
    m = tiny(tiny_arch).eval()
    x = images(2)
    with torch.no_grad():
        assert torch.equal(m(x, text=m.text_features())["anomaly_map"], m(x)["anomaly_map"])


def test_bad_settings_are_refused(tiny_arch):
    with pytest.raises(ValueError, match="do not exist in a ViT of depth 4"):
        tiny(tiny_arch, feature_blocks=(2, 5))
    with pytest.raises(ValueError, match="strictly increasing"):
        FusionMedCLIPConfig(feature_blocks=(3, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        FusionMedCLIPConfig(feature_blocks=(0, 2))
    with pytest.raises(ValueError, match="prompt_mode"):
        FusionMedCLIPConfig(prompt_mode="fancy")
    with pytest.raises(ValueError, match="stage"):
        FusionMedCLIPConfig(stage=1)
    with pytest.raises(ValueError, match="unknown"):
        FusionMedCLIPConfig.from_dict({"archh": "x"})


def test_config_json_round_trip():
    cfg = FusionMedCLIPConfig(arch="ViT-B-16", feature_blocks=(6, 9, 12), class_names={"normal": ["a"], "anomaly": ["b", "c"]})
    assert FusionMedCLIPConfig.from_json(cfg.to_json()) == cfg
    assert FusionMedCLIPConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_head_alignment_maps_each_patch_through_clips_own_head(tmp_path):
    """alignment="head": every patch token through the tower's frozen ln_post and projection. With one patch
    (patch size = image size) and average pooling, that is exactly open_clip's encode_image."""
    cfg = json.loads(json.dumps(TINY))
    cfg["vision_cfg"].update(patch_size=32, pool_type="avg", final_ln_after_pool=True)
    (tmp_path / "fmc-tiny-one-patch.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    m = tiny("fmc-tiny-one-patch", prompt_mode="manual", alignment="head", feature_blocks=(4,)).eval()
    assert sum(p.numel() for p in m.trainable_parameters().values()) == 0
    x = images(2, 3)
    with torch.no_grad():
        img = F.normalize(m.clip.encode_image(m.preprocess(x)), dim=-1)
        tokenizer = open_clip.get_tokenizer("fmc-tiny-one-patch")
        txt = F.normalize(m.clip.encode_text(tokenizer(["a photo of a normal", "a photo of a abnormal"])), dim=-1)
        out = m(x)
    p = (img @ txt.T / 0.07).softmax(-1)[:, 1]
    assert torch.allclose(out["pred_score"], p, atol=1e-5)
    with pytest.raises(ValueError, match="stage 3 trains through the alignment adapter"):
        FusionMedCLIPConfig(alignment="head", stage=3)
