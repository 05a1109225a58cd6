"""``fmclip demo`` end to end, small and quick: prepare, draw, generate, train, evaluate, report. The full
demo is not run here."""
import json

import numpy as np

import synth
from pipelines import cli, demo
from pipelines.gallery import write_gallery


def test_the_fast_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--fast", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for i, name in enumerate(demo.STAGES, 1):
        assert f"[{i}/6] {name}" in printed
    assert "report.html" in printed and "random tiny ViT (nothing downloaded)" in printed
    report = (tmp_path / "report.md").read_text()
    assert "| method | image_AUROC |" in report and "| FusionMedCLIP (ours, trained) |" in report
    assert "| zero-shot CLIP |" in report and "| PatchCore-style |" in report
    assert "left out of training" in report and "randomly initialised" in report
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "roc.png" in html
    for path in ("roc.png", "eval/model/overlays.png", "gallery/gallery.png", "runs/demo/checkpoints/best.pt"):
        assert (tmp_path / path).is_file(), path
    metrics = json.loads((tmp_path / "eval" / "model" / "metrics.json").read_text())
    assert metrics["normal"] == 8 and metrics["abnormal"] == 8 and 0 <= metrics["image_AUROC"] <= 1
    # the test lesions are of the held-out family only, and the cache holds none of it
    from pipelines.batches import tasks_of

    assert not set(tasks_of(str(tmp_path / "cache.zarr"))) & set(synth.FAMILIES["density"])


def test_the_gallery_and_its_replayable_records(tmp_path):
    files = write_gallery(tmp_path, size=64, seed=0, samples=1)
    for task in synth.TASKS:
        assert (tmp_path / f"{task}.png").stat().st_size > 0
    assert files["gallery"].exists() and files["gallery_3d"].exists()
    records = [json.loads(line) for line in files["records"].read_text().splitlines()]
    assert {r["task"] for r in records} == set(synth.TASKS)
    # the anatomy is a brain-sized share of the volume, intensities normalised to [0, 1]
    volume, brain = demo.load_mni_brain()
    assert volume.dtype == np.float32 and 0.0 <= volume.min() and volume.max() <= 1.0
    assert 0.1 < brain.mean() < 0.6


def test_cli_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    try:
        code = cli.main(["nope"])
    except SystemExit as exit_:  # argparse reports unknown commands by exiting
        code = exit_.code
    assert code == 2
