"""``fmclip protocol``: a small grid end to end, resumed cell by cell; the results table."""
from __future__ import annotations

import csv
import json

from test_pipelines_evaluate import write_folder_dataset
from train_helpers import overrides, write_model

import dataprep as dp
from pipelines import cli
from pipelines.grid import results_table


def test_a_grid_runs_and_resumes_cell_by_cell(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    dp.prepare_dataset("folder", write_folder_dataset(tmp_path / "raw"), prepared, size=32)
    model = write_model(tmp_path / "model")
    settings = overrides(model, epochs=2, epoch_samples=32, val_fraction=0.25, val_every=1)
    out = tmp_path / "grid"
    base = ["protocol", "--data", str(prepared), "--k", "4", "--out", str(out), "--no-progress", *settings]
    assert cli.main([*base, "--seeds", "0", "--dry-run"]) == 0
    assert "k=4 seed=0" in capsys.readouterr().out and not out.exists()
    assert cli.main([*base, "--seeds", "0"]) == 0, capsys.readouterr().err
    first = out / "k4_seed0"
    for name in ("support.json", "cache.zarr", "run/checkpoints/best.pt", "eval_model/metrics.json",
                 "eval_zeroshot/metrics.json", "eval_patchcore/metrics.json", "done.json"):
        assert (first / name).exists(), name
    assert json.loads((first / "support.json").read_text())["support"] == dp.draw_support(prepared, 4, 0)["support"]
    stamp = (first / "done.json").stat().st_mtime_ns
    assert cli.main([*base, "--seeds", "0", "1"]) == 0, capsys.readouterr().err
    assert (first / "done.json").stat().st_mtime_ns == stamp  # the finished cell was not redone
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["k"], r["seed"], r["method"]) for r in rows] == [
        ("4", s, m) for s in ("0", "1") for m in ("model", "zeroshot", "patchcore")]
    assert all(0 <= float(r["image_AUROC"]) <= 1 for r in rows)
    table = (out / "results.md").read_text()
    assert "| FusionMedCLIP (ours) |" in table and "(n=2)" in table and "ECE" in table
    assert cli.main([*base, "--seeds", "0", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(done)") == 2


def test_results_table_by_hand():
    rows = [{"k": 4, "seed": s, "method": "model", "image_AUROC": v, "image_ECE": 0.1} for s, v in ((0, 0.6), (1, 0.8))]
    rows += [{"k": 4, "seed": 0, "method": "zeroshot", "image_AUROC": 0.5, "image_ECE": None}]
    table = results_table(rows)
    assert "| FusionMedCLIP (ours) | 70.0 +- 14.1 (n=2) (ECE 10.0 +- 0.0) |" in table  # sample std of 0.6, 0.8
    assert "| zero-shot CLIP | 50.0 +- 0.0 (n=1) (ECE -) |" in table
    assert "| PatchCore-style | - (n=0) (ECE -) |" in table
