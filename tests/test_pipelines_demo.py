"""The demo runs end to end on the MNI152 brain that nilearn ships, and its records replay."""
import json

import numpy as np

import synth
from pipelines import cli, demo


def test_demo_writes_the_gallery_and_replayable_records(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--samples", "1"]) == 0
    assert "records.jsonl" in capsys.readouterr().out
    for task in synth.TASKS:
        assert (tmp_path / f"{task}.png").stat().st_size > 0
    assert (tmp_path / "gallery.png").exists() and (tmp_path / "gallery_3d.png").exists()
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
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
