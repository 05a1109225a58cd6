"""``fmclip train`` on a tiny random open_clip model and caches made by the tests: the run folder, resume
after SIGKILL, DDP, the feature cache, validation-only model selection and every refusal."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import fmclip, make_cache, metrics, overrides, trainable, write_model

from pipelines import cli
from pipelines.train_config import load_config
from pipelines.trainer import train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return write_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def cache32(images, tmp_path_factory) -> Path:
    return make_cache(images, tmp_path_factory.mktemp("c") / "c32.zarr", 96)


def run_in_process(cache: Path, out: Path, name: str, model: str, **train_settings) -> Path:
    config = load_config(None, [f"data.cache={cache}", *overrides(model, **train_settings)])
    return train(config, out=out, name=name, progress=False)


def test_run_folder(cache32, tiny, tmp_path):
    run = run_in_process(cache32, tmp_path, "r", tiny, epochs=3, keep=2)
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["config"]["train"]["epochs"] == 3 and record["config"]["model"]["prompt_mode"] == "coop"
    assert record["cache"]["train"]["samples"] == 96 and len(record["cache"]["train"]["identity"]) == 64
    assert record["code"]["package"] == "0.1.0"
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["step"] for r in rows] == [4, 8, 12]
    assert all({"loss", "focal", "dice", "lr", "samples_per_s", "seconds", "data_wait", "val"} <= set(r) for r in rows)
    assert rows[0]["lr"] == {"prompts": 1e-3, "alignment_adapters": 1e-3}
    assert all(r["loss"] == pytest.approx(r["focal"] + r["dice"]) for r in rows)
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == ["best.pt", "epoch_2.pt", "epoch_3.pt", "epoch_latest.pt"]  # train.keep=2
    latest = torch.load(run / "checkpoints" / "epoch_latest.pt", weights_only=True)
    assert latest["extra"]["epoch"] == 3 and latest["extra"]["step"] == 12
    assert len(re.findall(r" epoch \d/3 step \d+ ", (run / "out.log").read_text())) == 3


def test_best_is_the_best_validated_epoch(cache32, tiny, tmp_path):
    run = run_in_process(cache32, tmp_path, "r", tiny, epochs=4, val_every=1, keep=4)
    scores = [r["val"]["image_AUROC"] for r in metrics(run)]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    epoch = int(np.argmax(scores)) + 1  # the first epoch with the highest validation score
    assert best["extra"]["best"] == {"metric": "image_AUROC", "value": max(scores), "epoch": epoch}
    for name, value in trainable(run / "checkpoints" / f"epoch_{epoch}.pt").items():
        assert torch.equal(best["trainable"][name], value), name


def test_resume_after_sigkill_equals_an_uninterrupted_run(cache32, tiny, tmp_path):
    settings = dict(epochs=40, val_every=5, keep=1)
    args = ["train", "--cache", str(cache32), "--out", str(tmp_path / "killed"), "--name", "r", "--no-progress",
            *overrides(tiny, **settings), "model.stage=3"]
    proc = fmclip(*args)
    log = tmp_path / "killed" / "r" / "metrics.jsonl"
    deadline = time.time() + 120
    while (not log.is_file() or len(log.read_text().splitlines()) < 3) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(metrics(tmp_path / "killed" / "r")) < 40
    resumed = fmclip(*args, "--resume", "latest")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    config = load_config(None, [f"data.cache={cache32}", *overrides(tiny, **settings), "model.stage=3"])
    whole = train(config, out=tmp_path / "whole", name="r", progress=False)
    killed = tmp_path / "killed" / "r"
    assert "resumed from epoch_latest.pt" in (killed / "out.log").read_text()
    keys = ("epoch", "step", "loss", "focal", "dice", "val")
    assert [{k: r.get(k) for k in keys} for r in metrics(killed)] == [{k: r.get(k) for k in keys} for r in metrics(whole)]
    a, b = trainable(killed / "checkpoints" / "epoch_latest.pt"), trainable(whole / "checkpoints" / "epoch_latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_two_ddp_ranks_equal_one_process(cache32, tiny, tmp_path):
    settings = dict(epochs=2, epoch_samples=16, batch_size=4, val_every=2)
    whole = run_in_process(cache32, tmp_path / "one", "r", tiny, **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import subprocess

    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pipelines.cli", "train", "--cache", str(cache32), "--out", str(tmp_path / "two"),
                           "--name", "r", "--no-progress", *overrides(tiny, **settings)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two" / "r"
    assert "2 rank(s)" in (two / "out.log").read_text()
    for x, y in zip(metrics(two), metrics(whole)):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
    a, b = trainable(two / "checkpoints" / "epoch_latest.pt"), trainable(whole / "checkpoints" / "epoch_latest.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


def test_feature_cache_gives_the_losses_of_the_backbone(cache32, tiny, tmp_path):
    settings = dict(epochs=6, epoch_samples=32, batch_size=4, val_every=3)  # 6 x 32 samples: two passes
    cached = run_in_process(cache32, tmp_path, "cached", tiny, **settings)
    plain = run_in_process(cache32, tmp_path, "plain", tiny, feature_cache="off", **settings)
    assert "feature cache: on" in (cached / "out.log").read_text()
    assert "feature cache: off" in (plain / "out.log").read_text()
    for x, y in zip(metrics(cached), metrics(plain)):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        for k, v in (y.get("val") or {}).items():
            assert x["val"][k] == pytest.approx(v, abs=1e-6)
    a, b = trainable(cached / "checkpoints" / "epoch_latest.pt"), trainable(plain / "checkpoints" / "epoch_latest.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


def refusal(capsys, *args: str) -> str:
    assert cli.main(["train", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_refusals(cache32, tiny, tmp_path, capsys):
    base = overrides(tiny, epochs=1)
    out = ["--out", str(tmp_path)]
    assert "not an fmclip cache" in refusal(capsys, "--cache", str(tmp_path / "none.zarr"), *base)
    assert "no cache given" in refusal(capsys, *base)
    broken = tmp_path / "broken.zarr"
    shutil.copytree(cache32, broken)
    (broken / "_done" / "000001.json").unlink()
    err = refusal(capsys, "--cache", str(broken), *base)
    assert "incomplete cache (2 of 3 shards finished)" in err and "fmclip verify" in err
    err = refusal(capsys, "--cache", str(cache32), *base, "model.image_size=64")
    assert "images of 32 px, but model.image_size is 64" in err
    assert "unknown key train.epoch;" in refusal(capsys, "--cache", str(cache32), *base, "train.epoch=2")
    assert "needs the run's --name" in refusal(capsys, "--cache", str(cache32), *base, *out, "--resume", "latest")
    assert cli.main(["train", "--no-progress", "--cache", str(cache32), *out, "--name", "r", *base]) == 0
    capsys.readouterr()
    assert "the run exists" in refusal(capsys, "--cache", str(cache32), *out, "--name", "r", *base)
    err = refusal(capsys, "--cache", str(cache32), *out, "--name", "r", "--resume", "latest", *base,
                  "train.lr.prompts=0.002")
    assert "config.train.lr.prompts: 0.001 -> 0.002" in err
    assert "no run to resume" in refusal(capsys, "--cache", str(cache32), *out, "--name", "new", "--resume", "latest",
                                         *base)


def test_print_config_shows_the_resolved_defaults(capsys):
    assert cli.main(["train", "--print-config", "model.stage=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["stage"] == 3 and printed["train"]["epochs"] == 200
    assert printed["train"]["lr"] == {"prompts": 1e-3, "alignment_adapters": 1e-3, "lora": 3e-5, "block_adapters": 5e-5}
    assert printed["train"]["weight_decay"] == 0.01 and printed["train"]["betas"] == [0.9, 0.999]
    assert json.dumps(printed)  # plain data, no Python objects


def test_generate_sizes_a_cache_for_the_methods_run(images, tmp_path):
    """Without --samples, a cache holds 200 k samples: the method's 200 epochs of the k images, read once."""
    assert cli.main(["generate", "--data", str(images), "--out", str(tmp_path / "c.zarr"), "--seed", "0", "--size", "16",
                     "--shard-size", "400", "--chunk-size", "40", "--workers", "1", "--no-progress"]) == 0
    from pipelines.trainer import open_cache

    cache = open_cache(str(tmp_path / "c.zarr"))
    assert cache["sources"] == 6 and cache["samples"] == 200 * 6
