"""The command line for a new user: help without heavy imports, one-line refusals."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import synth
from pipelines import cli
from pipelines.cli import COMMANDS


def test_help_of_every_command_imports_neither_torch_nor_monai():
    """`fmclip COMMAND --help` must answer at once: the command modules import their jobs lazily."""
    code = ("import sys\nfrom pipelines import cli\n"
            f"for name in {sorted(COMMANDS)!r}:\n"
            "    try:\n        cli.main([name, '--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'monai', 'open_clip', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_generate_refuses_a_negative_seed_in_one_line(images, tmp_path, capsys):
    assert cli.main(["generate", "--data", str(images), "--out", str(tmp_path / "c.zarr"), "--samples", "8",
                     "--seed", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "fmclip generate: error: --seed must be a non-negative integer, got -1\n"


def test_poisson_on_a_one_pixel_image_is_a_clear_error():
    with pytest.raises(ValueError, match="the mask covers the whole image"):
        synth.synthesize(np.full((1, 1), 0.5, np.float32), rng=0, task="poisson")


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "fmclip 0.1.0\n"


def test_a_second_generate_through_a_symlink_meets_the_same_lock(tmp_path):
    from pipelines.cache import CacheError
    from pipelines.generate import _exclusive

    real = tmp_path / "real.zarr"
    real.mkdir()
    (tmp_path / "link.zarr").symlink_to(real)
    with _exclusive(real), pytest.raises(CacheError, match="another `fmclip generate` is writing this cache"):
        with _exclusive(tmp_path / "link.zarr"):
            pass


def test_generate_refuses_a_dataset_as_downloaded(tmp_path, capsys):
    # a plain --data folder is read whole as normal sources: a dataset layout would give test images and masks
    import cv2

    for name in ("train/good/0.png", "test/crack/0.png", "ground_truth/crack/0_mask.png"):
        (tmp_path / "bottle" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "bottle" / name), np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8))
    code = cli.main(["generate", "--data", str(tmp_path / "bottle"), "--out", str(tmp_path / "c.zarr"),
                     "--samples", "4", "--seed", "0", "--size", "32", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "fmclip prepare mvtec" in err and "Traceback" not in err
    assert not (tmp_path / "c.zarr").exists()


def test_every_option_with_a_default_shows_it_in_help(capsys):
    import argparse
    import importlib

    for name, (module, _) in COMMANDS.items():
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        parser = argparse.ArgumentParser()
        importlib.import_module(module).add_arguments(parser)
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
                default = action.default
                forms = {str(default)} | ({" ".join(map(str, default))} if isinstance(default, list) else set())
                assert any(f in shown for f in forms), (name, action.option_strings, default)
