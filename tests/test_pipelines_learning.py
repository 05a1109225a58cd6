"""It learns: a tiny random model trained briefly from a cache of one task family detects held-out samples
of that family well above chance (the trial that found training flat at chance must not come back).

Brain slices of nilearn's MNI152 template (shipped with the package) at 64 px; structural anomalies
(CutPaste, Poisson) and normal samples; stage 3 with LoRA and block adapters at 1e-3, since a random backbone
has nothing to fine-tune gently (method.md's rates are for pretrained weights). Measured on this setting
(docs/train.md): the default per-pixel focal loss reaches validation image AUROC 0.74 after 400 steps."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from train_helpers import make_cache, metrics, overrides, write_model

import synth
from pipelines.brain import load_mni_brain
from pipelines.brain import square as _square
from pipelines.train_config import load_config
from pipelines.trainer import train


@pytest.fixture(scope="module")
def brain_slices(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slices")
    volume, _ = load_mni_brain()
    for z in np.linspace(0.3 * volume.shape[0], 0.75 * volume.shape[0], 16).astype(int):
        cv2.imwrite(str(folder / f"z{z:03d}.png"), (np.clip(_square(volume[z], 64, "area"), 0, 1) * 255).astype(np.uint8))
    return folder


def test_a_tiny_model_learns_a_task_family(brain_slices, tmp_path):
    config = synth.SynthesisConfig(task_weights=synth.family_weights(identity=0.25, structural=0.75, density=0.0,
                                                                     deformation=0.0))
    (tmp_path / "synth.json").write_text(json.dumps(config.to_dict()))
    cache = make_cache(brain_slices, tmp_path / "c.zarr", 2048, 64, 1, "--config", str(tmp_path / "synth.json"))
    model = write_model(tmp_path / "model", size=64)
    settings = overrides(model, epochs=50, epoch_samples=64, batch_size=8, val_every=10, val_fraction=0.15,
                         val_samples=256, threads=2)
    settings = [s.replace("model.image_size=32", "model.image_size=64") for s in settings]
    run = train(load_config(None, [f"data.cache={cache}", *settings, "model.stage=3", "train.lr.lora=1e-3",
                                   "train.lr.block_adapters=1e-3"]), out=tmp_path, name="r", progress=False)
    rows = metrics(run)
    assert np.mean([r["loss"] for r in rows[-10:]]) < np.mean([r["loss"] for r in rows[:5]])
    final = rows[-1]["val"]
    assert final["image_AUROC"] >= 0.65 and final["pixel_AUROC"] >= 0.65, final
