"""``fmclip evaluate`` end to end on a tiny prepared dataset and a tiny random model: outputs, the leakage
refusal, the baselines, a dataset without masks."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from train_helpers import make_cache, overrides, write_model

import dataprep as dp
from model import FusionMedCLIPConfig
from pipelines import cli
from pipelines.evaluation import evaluate
from pipelines.scorers import PatchCoreScorer, zero_shot_model
from pipelines.testset import EvaluationError, TestSplit
from pipelines.train_config import load_config
from pipelines.trainer import train


def texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    f = rng.uniform(3, 8, 2)
    return 0.45 + 0.25 * np.sin(xx / f[0]) * np.cos(yy / f[1]) + 0.1 * rng.random((size, size))


def write_folder_dataset(root: Path, masks: bool = True) -> Path:
    """anomalib's Folder layout: 12 normal training images, 6 normal and 6 abnormal test images with masks."""
    rng = np.random.default_rng(0)
    for name in ("normal", "normal_test", "abnormal", "mask"):
        (root / name).mkdir(parents=True)
    for i in range(12):
        cv2.imwrite(str(root / "normal" / f"n{i}.png"), (texture(rng).clip(0, 1) * 255).astype(np.uint8))
    for i in range(6):
        cv2.imwrite(str(root / "normal_test" / f"t{i}.png"), (texture(rng).clip(0, 1) * 255).astype(np.uint8))
        image, mask = texture(rng), np.zeros((64, 64), np.uint8)
        y, x = rng.integers(8, 40, 2)
        image[y:y + 16, x:x + 16] = 1.0
        mask[y:y + 16, x:x + 16] = 255
        cv2.imwrite(str(root / "abnormal" / f"a{i}.png"), (image.clip(0, 1) * 255).astype(np.uint8))
        if masks:
            cv2.imwrite(str(root / "mask" / f"a{i}_mask.png"), mask)
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    prepared = base / "prepared"
    dp.prepare_dataset("folder", write_folder_dataset(base / "raw"), prepared, size=32)
    support = dp.write_support(dp.draw_support(prepared, 4, 0), prepared / "fewshot" / "k4_seed0.json")
    cache = make_cache(prepared, base / "c.zarr", 64, 32, 0, "--support", str(support))
    model = write_model(base / "model")
    config = load_config(None, [f"data.cache={cache}", *overrides(model, epochs=2, val_fraction=0.25)])
    run = train(config, out=base / "runs", name="r", progress=False)
    return {"prepared": prepared, "support": support, "run": run, "model": model, "base": base}


def test_evaluate_a_run(setup, capsys):
    run, prepared = setup["run"], setup["prepared"]
    assert cli.main(["evaluate", str(run), "--data", str(prepared), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    out = run / "eval" / "prepared_test"
    result = json.loads((out / "metrics.json").read_text())
    for key in ("image_AUROC", "image_AUPR", "image_F1Max", "image_ECE", "pixel_AUROC", "pixel_AUROC_anomalous",
                "pixel_AUPRO", "pixel_F1Max"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["checkpoint"].endswith("best.pt") and result["images"] == 12
    assert result["support_ids"] == sorted(json.loads(setup["support"].read_text())["support"])
    assert result["dataset"]["index_sha256"] == dp.fewshot.dataset_identity(prepared)["index_sha256"]
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [r["id"] for r in rows] == [r["id"] for r in TestSplit(prepared).records]
    assert {r["gt_label"] for r in rows} == {"0", "1"}
    for name in ("overlays.png", "roc.png", "reliability.png"):
        assert cv2.imread(str(out / name)) is not None, name
    assert len(list((out / "overlays").glob("*.png"))) == 16  # highest and lowest scored, random normal and abnormal: 4 each
    assert "image_AUROC" in printed and str(out) in printed
    # The image metrics are those of the scores written, computed independently
    from sklearn.metrics import roc_auc_score

    scores = np.array([float(r["pred_score"]) for r in rows])
    labels = np.array([int(r["gt_label"]) for r in rows])
    assert result["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_a_run_trained_on_a_test_image_is_refused(setup, tmp_path):
    """A cache made from a folder holding a test image, by content: evaluation refuses it, naming both."""
    folder = tmp_path / "sources"
    folder.mkdir()
    test = TestSplit(setup["prepared"])
    leaked = test.records[0]
    shutil.copy(setup["prepared"] / leaked["image"], folder / "copy.png")
    shutil.copy(setup["prepared"] / TestSplit(setup["prepared"], "train").records[0]["image"], folder / "other.png")
    cache = make_cache(folder, tmp_path / "c.zarr", 32, 32, 0)
    run = train(load_config(None, [f"data.cache={cache}", *overrides(setup["model"], epochs=1, val_fraction=0.25)]),
                out=tmp_path, name="r", progress=False)
    with pytest.raises(EvaluationError, match=f"copy.png = test {leaked['id']}"):
        evaluate(data=setup["prepared"], out=tmp_path / "e", run=run, checkpoint="latest", progress=False)
    assert not (tmp_path / "e").exists()


def test_baselines_on_the_same_draw(setup, capsys):
    prepared, support = setup["prepared"], setup["support"]
    for method in ("zeroshot", "patchcore"):
        out = setup["base"] / method
        assert cli.main(["evaluate", "--method", method, "--support", str(support), "--data", str(prepared),
                         "--out", str(out), "--no-progress", f"model.pretrained={setup['model']}",
                         "model.image_size=32"]) == 0, capsys.readouterr().err
        result = json.loads((out / "metrics.json").read_text())
        assert result["method"] == method and result["images"] == 12 and "pixel_AUPRO" in result
        assert result["support_ids"] == json.loads(support.read_text())["support"]
    assert json.loads((setup["base"] / "patchcore" / "metrics.json").read_text())["image_ECE"] is None
    config = FusionMedCLIPConfig(pretrained=setup["model"], image_size=32, prompt_mode="coop")
    images = next(TestSplit(prepared).batches(6))[1]
    for scorer in (PatchCoreScorer(config, images[:3], "cpu"), None):
        if scorer is None:
            from pipelines.scorers import ModelScorer

            scorer = ModelScorer(zero_shot_model(config, "brain"), "cpu")
        maps, scores = scorer.score(images)
        assert maps.shape == (6, 32, 32) and np.array_equal(scores, maps.reshape(6, -1).max(1))
    # PatchCore's own memory images are at distance 0 (up to cdist's rounding), others are not
    pc = PatchCoreScorer(config, images[:3], "cpu", sigma=1e-3)
    assert pc.score(images[:3])[1].max() < 0.01 * pc.score(images[3:])[1].min()


def test_a_dataset_without_masks_gets_image_metrics_and_says_so(setup, tmp_path):
    prepared = tmp_path / "prepared"
    dp.prepare_dataset("folder", write_folder_dataset(tmp_path / "raw", masks=False), prepared, size=32)
    support = dp.write_support(dp.draw_support(prepared, 4, 0), prepared / "fewshot" / "k4_seed0.json")
    config = FusionMedCLIPConfig(pretrained=setup["model"], image_size=32, prompt_mode="coop")
    result = evaluate(data=prepared, out=tmp_path / "e", method="patchcore", support=str(support),
                      model_config=config, progress=False)
    assert "image_AUROC" in result and "pixel_AUROC" not in result
    assert any("have no mask: image metrics only" in n for n in result["notes"])


def test_refusals(setup, tmp_path, capsys):
    def refused(*args: str) -> str:
        assert cli.main(["evaluate", "--no-progress", *args]) == 2
        return capsys.readouterr().err

    assert "not a prepared dataset" in refused(str(setup["run"]), "--data", str(tmp_path))
    assert "not a run folder" in refused(str(tmp_path), "--data", str(setup["prepared"]))
    assert "needs --support" in refused("--method", "patchcore", "--data", str(setup["prepared"]), "--out",
                                        str(tmp_path / "x"), f"model.pretrained={setup['model']}", "model.image_size=32")
    err = refused(str(setup["run"]), "--data", str(setup["prepared"]), "--checkpoint", str(tmp_path / "none.pt"))
    assert "no such checkpoint" in err
