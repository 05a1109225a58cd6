"""FusionMedCLIP on an open_clip model with a timm vision tower and a Hugging Face text tower (BiomedCLIP-like).

A tiny BiomedCLIP is written to a local folder: open_clip_config.json shaped like BiomedCLIP's
(timm ViT, BERT through HFTextEncoder, MLP text projection, [CLS] pooling), a 2-layer BERT
config and a small WordPiece vocabulary, and random open_clip weights. It is loaded through
``local-dir:``, open_clip's offline twin of ``hf-hub:``, the same way a user passes BiomedCLIP.
Nothing is downloaded: the network is switched off while these tests run.
"""

from __future__ import annotations

import json
import re
import socket

import huggingface_hub.constants
import open_clip
import pytest
import torch
import torch.nn.functional as F
from model_helpers import encode_text_reference, train_steps
from transformers import BasicTokenizer, BertConfig, BertTokenizer

from model import (
    FusionMedCLIP,
    FusionMedCLIPConfig,
    load_checkpoint,
    load_merged,
    param_groups,
    save_checkpoint,
    save_merged,
)
from model.umls import NORMAL_DEFINITIONS, UMLS_CLASS_NAMES, UMLS_CONTEXT_INIT

SIZE = 64  # vit_tiny is built at 224 px; open_clip resamples its position embeddings to 64 (4x4 patches)
WIDTH, DEPTH, MLP, EMBED, BERT_WIDTH = (
    192,
    12,
    768,
    24,
    32,
)  # vit_tiny_patch16_224, the joint size, the tiny BERT
WORDS = "the absence of disease or condition within expected"  # 8 words, one token each in the vocabulary


def open_clip_config(bert_dir: str, pool: str) -> dict:
    """BiomedCLIP's open_clip_config.json with tiny towers."""
    return {
        "model_cfg": {
            "embed_dim": EMBED,
            "vision_cfg": {
                "timm_model_name": "vit_tiny_patch16_224",
                "timm_model_pretrained": False,
                "timm_pool": pool,
                "timm_proj": "linear",
                "image_size": 224,
            },
            "text_cfg": {
                "hf_model_name": bert_dir,
                "hf_tokenizer_name": bert_dir,
                "hf_model_pretrained": False,
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 32,
            },
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }


def write_bert(folder) -> None:
    """A 2-layer BERT config and a WordPiece vocabulary holding every word the model's prompts use."""
    texts = [n for names in UMLS_CLASS_NAMES.values() for n in names] + list(UMLS_CONTEXT_INIT.values())
    texts += [*NORMAL_DEFINITIONS, "X a photo of a brain tumour.", WORDS]
    basic = BasicTokenizer(do_lower_case=True)
    words = sorted({w for t in texts for w in basic.tokenize(t)})
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    BertConfig(
        vocab_size=5 + len(words),
        hidden_size=BERT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ).save_pretrained(str(folder))


@pytest.fixture(scope="module")
def offline():
    """No network: Hugging Face offline mode, and any socket connection fails loudly."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, offline) -> dict[str, str]:
    """Two local BiomedCLIP-like model folders: token pooling (as BiomedCLIP) and average pooling."""
    out = {}
    for pool, name in (("", "biomed"), ("avg", "biomed_avg")):
        d = tmp_path_factory.mktemp(name)
        write_bert(d)  # local-dir: models read their tokenizer from the folder itself
        (d / "open_clip_config.json").write_text(json.dumps(open_clip_config(str(d), pool)))
        torch.manual_seed(0)
        clip = open_clip.create_model(f"local-dir:{d}", pretrained_text=False)
        torch.save(clip.state_dict(), d / "open_clip_pytorch_model.bin")
        out[name] = str(d)
    return out


def build(folder: str, **kw) -> FusionMedCLIP:
    kw.setdefault("image_size", SIZE)
    return FusionMedCLIP(FusionMedCLIPConfig(pretrained=f"local-dir:{folder}", **kw)).eval()


def images(b: int = 2, c: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, c, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def perturb(model: FusionMedCLIP, seed: int = 5) -> None:
    """Make every trainable part non-trivial (LoRA B and adapter up-projections start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def blocks_by_hand(model: FusionMedCLIP, x: torch.Tensor, adapters: bool) -> list[torch.Tensor]:
    """Patch tokens of the feature blocks from timm's trunk run step by step (the independent reference)."""
    trunk = model.clip.visual.trunk
    h = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(model.preprocess(x)))))
    out = []
    for i, blk in enumerate(trunk.blocks):
        h = blk.forward(h)  # .forward skips the module's hooks: the block adapters are applied by hand below
        if i + 1 in model.blocks:
            if adapters:
                h = model.block_adapters[model.blocks.index(i + 1)](h)
            tokens = h[:, trunk.num_prefix_tokens :]  # drop the class token
            out.append(tokens.transpose(1, 2).reshape(x.shape[0], WIDTH, SIZE // 16, SIZE // 16))
    return out


def test_biomedclip_like_model_loads_with_its_towers(dirs):
    m = build(dirs["biomed"])
    assert type(m.clip).__name__ == "CustomTextCLIP"
    assert type(m.clip.visual).__name__ == "TimmModel" and type(m.clip.text).__name__ == "HFTextEncoder"
    info = m.info
    assert (info.depth, info.width, info.embed_dim, info.text_width) == (DEPTH, WIDTH, EMBED, BERT_WIDTH)
    assert (info.patch_size, info.image_size) == (16, SIZE)
    assert info.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert m.blocks == (6, 9, 12)


@pytest.mark.parametrize("stage", [2, 3])
def test_output_shapes_and_score_is_map_max(dirs, stage):
    out = build(dirs["biomed"], stage=stage)(images(3))
    assert out["anomaly_map"].shape == (3, 1, SIZE, SIZE)
    assert out["pred_score"].shape == (3,)
    assert torch.equal(out["pred_score"], out["anomaly_map"].amax(dim=(1, 2, 3)))
    assert ((out["anomaly_map"] >= 0) & (out["anomaly_map"] <= 1)).all()


def test_patch_tokens_equal_timm_blocks_run_by_hand(dirs):
    m = build(dirs["biomed"])
    x = images(2, 3)
    feats = m.extract_features(x)
    assert feats.shape == (2, 3, WIDTH, 4, 4)
    for k, ref in enumerate(blocks_by_hand(m, x, adapters=False)):
        assert torch.allclose(feats[:, k], ref, atol=1e-6), k


def test_block_adapters_follow_timm_blocks_and_lora_is_live(dirs):
    m = build(dirs["biomed"], stage=3)
    perturb(m)
    x = images(2, 1)
    with torch.no_grad():
        tokens = m.vision.patch_tokens(m.preprocess(x), [j - 1 for j in m.blocks])
        ref = blocks_by_hand(m, x, adapters=True)
        frozen = build(dirs["biomed"]).extract_features(x)
    for k in range(len(m.blocks)):
        assert torch.allclose(tokens[k], ref[k], atol=1e-5), k
        assert not torch.allclose(tokens[k], frozen[:, k], atol=1e-3), (
            k
        )  # LoRA and adapters change the tokens


def lora_count(r: int = 8) -> int:
    """r * (in + out) per adapted Linear: attn.qkv (W -> 3W), attn.proj (W -> W), mlp.fc1 (W -> 4W), mlp.fc2 (4W -> W)."""
    return DEPTH * r * ((WIDTH + 3 * WIDTH) + (WIDTH + WIDTH) + (WIDTH + MLP) + (MLP + WIDTH))


@pytest.mark.parametrize("stage", [2, 3])
def test_trainable_counts_by_hand_and_everything_else_frozen(dirs, stage):
    m = build(dirs["biomed"], stage=stage)
    expected = {
        "prompts": 2 * 8 * BERT_WIDTH,  # 2 classes x M=8 contexts in BERT's embedding space
        "alignment_adapters": 3 * (WIDTH * EMBED + EMBED),  # 1x1 conv weight + bias per block of J
    }
    if stage == 3:
        expected["lora"] = lora_count()
        expected["block_adapters"] = 3 * (WIDTH * 64 + 64 + 64 * WIDTH + WIDTH)
    assert {g["name"]: sum(p.numel() for p in g["params"]) for g in param_groups(m)} == expected
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == sum(expected.values())
    for name, p in m.clip.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    if stage == 3:
        adapted = {
            n.rsplit(".lora_A", 1)[0] for n, _ in m.clip.visual.named_modules() if n.endswith(".lora_A")
        }
        leaves = {
            re.sub(r"^model\.trunk\.blocks\.\d+\.", "", n) for n in adapted
        }  # peft wraps the tower as .model
        assert len(adapted) == 4 * DEPTH
        assert leaves == {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}


def test_coop_with_word_contexts_equals_encode_text_of_the_sentence(dirs):
    # Contexts set to the word embeddings of a real sentence must give exactly that sentence's features.
    # Prompts of different lengths: the shorter one is padded, so the padding mask matters.
    names = {"normal": ("brain",), "anomaly": ("brain tumour",)}
    m = build(dirs["biomed"], prompt_mode="coop", class_names=names)
    tok = open_clip.get_tokenizer(f"local-dir:{dirs['biomed']}")
    ids = tok([WORDS])[0, 1:9]
    assert (ids > 4).all()  # real words, no [UNK]
    with torch.no_grad():
        m.prompts.ctx[:] = m.clip.text.transformer.embeddings.word_embeddings(ids)[None]
    ref = F.normalize(m.clip.encode_text(tok([f"{WORDS} brain.", f"{WORDS} brain tumour."])), dim=-1)
    assert torch.allclose(m.text_features(), ref, atol=1e-5)


def test_manual_text_features_equal_open_clip_encode_text(dirs):
    names = {"normal": ("healthy", "no significant findings"), "anomaly": ("tumour",)}  # different lengths
    m = build(dirs["biomed"], prompt_mode="manual", class_names=names)
    tok = open_clip.get_tokenizer(f"local-dir:{dirs['biomed']}")
    assert torch.allclose(m.text_features(), encode_text_reference(m, tok, names), atol=1e-5)


def test_umls_contexts_start_from_the_definition_word_embeddings(dirs):
    m = build(dirs["biomed"])
    hf = open_clip.get_tokenizer(f"local-dir:{dirs['biomed']}").tokenizer
    emb = m.clip.text.transformer.embeddings.word_embeddings
    for i, c in enumerate(("normal", "anomaly")):
        ids = torch.tensor(hf(UMLS_CONTEXT_INIT[c], add_special_tokens=False).input_ids[:8])
        assert len(ids) == 8 and (ids > 4).all()
        assert torch.allclose(m.prompts.ctx[i], emb(ids))
    assert m.prompts.n_names == (11, 11)


def test_gap_manual_is_zero_shot_clip_for_an_average_pooled_timm_tower(dirs):
    # With timm average pooling, the tower's own image embedding is the GAP embedding of the last block.
    m = build(dirs["biomed_avg"], prompt_mode="manual", alignment="gap", feature_blocks=(DEPTH,))
    assert sum(p.numel() for p in m.trainable_parameters().values()) == 0
    x = images(2, 3)
    tok = open_clip.get_tokenizer(f"local-dir:{dirs['biomed_avg']}")
    with torch.no_grad():
        img = F.normalize(m.clip.encode_image(m.preprocess(x)), dim=-1)
        txt = F.normalize(m.clip.encode_text(tok(["a photo of a normal", "a photo of a abnormal"])), dim=-1)
        out = m(x)
    p = (img @ txt.T / 0.07).softmax(-1)[:, 1]
    assert torch.allclose(out["pred_score"], p, atol=1e-5)
    assert torch.allclose(out["anomaly_map"], p.view(2, 1, 1, 1).expand(2, 1, SIZE, SIZE), atol=1e-5)


def test_stage3_starts_as_stage2(dirs):
    x = images(2, 1)
    s2, s3 = build(dirs["biomed"], stage=2), build(dirs["biomed"], stage=3)
    assert torch.allclose(s2(x)["anomaly_map"], s3(x)["anomaly_map"], atol=1e-6)


def test_training_step_moves_only_trainable_parts(dirs):
    m = build(dirs["biomed"], stage=3)
    losses, frozen = train_steps(m, SIZE, 3)
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in m.trainable_parameters().values())
    after = dict(m.clip.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(after[n], before), n  # LoRA on plain Linears never touches the base weights
        assert after[n].grad is None, n


def test_checkpoint_round_trip_and_merged_export(dirs, tmp_path, monkeypatch):
    m = build(dirs["biomed"], stage=3)
    perturb(m)
    x = images(2, 1)
    ref = m(x)["anomaly_map"]
    ckpt = tmp_path / "run.pt"
    save_checkpoint(m, ckpt)
    rebuilt = load_checkpoint(ckpt).eval()  # from the stored config: local-dir source, timm + HF towers
    assert rebuilt.config == m.config and rebuilt.base_fingerprint == m.base_fingerprint
    assert torch.allclose(rebuilt(x)["anomaly_map"], ref, atol=1e-6)

    merged = m.merged_copy().eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert (merged(x)["anomaly_map"] - ref).abs().max() <= 1e-5

    out = tmp_path / "merged.pt"
    save_merged(m, out)

    def no_base_weights(*args, **kwargs):
        raise AssertionError("load_merged read the base weights")

    monkeypatch.setattr(open_clip.factory, "load_checkpoint", no_base_weights)
    loaded = load_merged(out).eval()
    assert loaded.base_fingerprint == m.base_fingerprint
    assert (loaded(x)["anomaly_map"] - ref).abs().max() <= 1e-5
