"""Checkpoints: base weights from a local file, round trip, refusal, merged export."""

from __future__ import annotations

import json
import pickle

import open_clip
import pytest
import torch

from model import (
    FusionMedCLIP,
    FusionMedCLIPConfig,
    load_checkpoint,
    load_merged,
    save_checkpoint,
    save_merged,
    weights_fingerprint,
)

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
ARCH = "fmc-tiny-ckpt"


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Two local open_clip checkpoint files of the tiny architecture with different weights."""
    d = tmp_path_factory.mktemp("ckpt")
    (d / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d / f"{ARCH}.json")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        clip = open_clip.create_model(ARCH, pretrained=None)
        path = d / f"base{seed}.pt"
        torch.save(clip.state_dict(), path)
        paths.append((path, weights_fingerprint(clip)))
    return paths


def build(path, stage=3, **kw) -> FusionMedCLIP:
    return FusionMedCLIP(FusionMedCLIPConfig(arch=ARCH, pretrained=str(path), image_size=32, stage=stage, **kw))


def perturb(model: FusionMedCLIP, seed: int = 5) -> None:
    """Make every trainable part non-trivial (LoRA B and adapter up-projections start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def x_batch() -> torch.Tensor:
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))


def test_local_file_weights_load_through_open_clip(weight_files):
    (path0, fp0), (path1, fp1) = weight_files
    assert fp0 != fp1
    assert build(path0).base_fingerprint == fp0
    assert build(path1, stage=2).base_fingerprint == fp1


def test_fingerprint_is_deterministic_and_sensitive(weight_files):
    (path0, fp0), _ = weight_files
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH, pretrained=str(path0))
    assert weights_fingerprint(clip) == fp0
    with torch.no_grad():
        clip.visual.proj[0, 0] += 1e-3
    assert weights_fingerprint(clip) != fp0


@pytest.mark.parametrize("stage", [2, 3])
def test_round_trip_restores_the_maps(weight_files, tmp_path, stage):
    (path0, _), _ = weight_files
    trained = build(path0, stage=stage).eval()
    perturb(trained)
    ckpt = tmp_path / "run.pt"
    save_checkpoint(trained, ckpt)
    blob = torch.load(ckpt, weights_only=True)
    # only the trained parts are stored, not the backbone
    assert set(blob["trainable"]) == set(trained.trainable_parameters())
    fresh = build(path0, stage=stage).eval()
    assert not torch.allclose(fresh(x_batch())["anomaly_map"], trained(x_batch())["anomaly_map"])
    load_checkpoint(ckpt, fresh)
    assert torch.allclose(fresh(x_batch())["anomaly_map"], trained(x_batch())["anomaly_map"], atol=1e-6)
    rebuilt = load_checkpoint(ckpt).eval()  # from the stored config alone
    assert rebuilt.config == trained.config
    assert torch.allclose(rebuilt(x_batch())["anomaly_map"], trained(x_batch())["anomaly_map"], atol=1e-6)


def test_other_base_weights_are_refused(weight_files, tmp_path):
    (path0, fp0), (path1, fp1) = weight_files
    ckpt = tmp_path / "run.pt"
    save_checkpoint(build(path0), ckpt)
    with pytest.raises(ValueError, match="other base weights") as err:
        load_checkpoint(ckpt, build(path1))
    assert fp0 in str(err.value) and fp1 in str(err.value)


def test_mismatched_structure_is_refused(weight_files, tmp_path):
    (path0, _), _ = weight_files
    ckpt = tmp_path / "run.pt"
    save_checkpoint(build(path0, stage=3), ckpt)
    with pytest.raises(ValueError, match="does not match this model"):
        load_checkpoint(ckpt, build(path0, stage=2))


def test_only_weights_are_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.pt"
    torch.save({"format": "fusionmedclip-trainable-v1", "payload": Evil()}, bad)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(bad)


def test_merged_export_gives_the_same_maps(weight_files, tmp_path):
    (path0, fp0), _ = weight_files
    m = build(path0, stage=3).eval()
    perturb(m)
    merged = m.merged_copy().eval()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert any("lora_" in n for n, _ in m.named_parameters())  # the original is untouched
    x = x_batch()
    ref = m(x)["anomaly_map"]
    assert (merged(x)["anomaly_map"] - ref).abs().max() <= 1e-5
    # the copy's block-adapter hooks call the copy's adapters, not the original's
    with torch.no_grad():
        for p in m.block_adapters.parameters():
            p.add_(1.0)
    assert (merged(x)["anomaly_map"] - ref).abs().max() <= 1e-5
    with torch.no_grad():
        for p in m.block_adapters.parameters():
            p.sub_(1.0)
    out = tmp_path / "merged.pt"
    save_merged(m, out)
    loaded = load_merged(out).eval()
    assert loaded.base_fingerprint == fp0
    assert (loaded(x)["anomaly_map"] - ref).abs().max() <= 1e-5
