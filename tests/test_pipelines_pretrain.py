"""``fmclip pretrain`` (stage 1) on a tiny random open_clip model and a caption set the tests make: the captions
name what the images show, so retrieval can improve. Checked against hand rules: the loss falls and retrieval
rises, each layer's learning rate follows the decay rule, early stopping stops, a resumed run equals an
uninterrupted one, the result loads through open_clip and ``fmclip train``, bad pairs are reported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open_clip
import pytest
import torch
from train_helpers import make_cache, write_model

from model import weights_fingerprint
from pipelines import cli, pretrainer
from pipelines.pretrain_config import load_pretrain_config
from pipelines.pretrainer import pretrain

CAPTIONS = ["horizontal stripes", "vertical stripes", "a bright disc", "a dark square"]


def write_pairs(folder: Path, n: int = 48) -> Path:
    """n 64 px grey images, four kinds in turn, and captions.csv naming the kind of each."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    rows = []
    for i in range(n):
        kind = i % 4
        img = 0.4 + 0.1 * rng.random((64, 64))
        if kind == 0:
            img += 0.3 * np.sin(yy / 2.0 + rng.random() * 6)
        elif kind == 1:
            img += 0.3 * np.sin(xx / 2.0 + rng.random() * 6)
        elif kind == 2:
            cy, cx = rng.integers(16, 48, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 120] = 0.95
        else:
            cy, cx = rng.integers(8, 40, 2)
            img[cy:cy + 16, cx:cx + 16] = 0.02
        cv2.imwrite(str(folder / "images" / f"img_{i}.png"), (img.clip(0, 1) * 255).astype(np.uint8))
        rows.append(f"img_{i}.png,{CAPTIONS[kind]}")
    (folder / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pretrain")
    return {"pairs": write_pairs(root / "pairs"), "model": write_model(root / "tiny")}


def settings(setup: dict, **train) -> list[str]:
    base = {"epochs": 6, "lr": 1e-3, "warmup_epochs": 1, "batch_size": 8, "val_fraction": 0.25, "threads": 1}
    base.update(train)
    return [f"data.pairs={setup['pairs']}", f"model.pretrained={setup['model']}", "model.image_size=32",
            "data.workers=0", *(f"train.{k}={v}" for k, v in base.items())]


def run(setup: dict, out: Path, name: str = "r", resume: bool = False, **train) -> Path:
    return pretrain(load_pretrain_config(None, settings(setup, **train)), out=out, name=name, resume=resume,
                    progress=False)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory) -> Path:
    return run(setup, tmp_path_factory.mktemp("runs"))


def test_the_loss_falls_and_retrieval_improves(trained):
    metrics = rows(trained)
    assert len(metrics) == 6
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["val"]["loss"] < metrics[0]["val"]["loss"]
    # four captions: a guess finds the right one for a quarter of the images
    assert max(r["val"]["image_to_text_R@1"] for r in metrics) >= 0.75
    assert all(0.0 <= r["data_wait"] <= 1.0 and r["images_per_s"] > 0 for r in metrics)


def test_layer_rates_follow_the_decay_rule(trained):
    state = torch.load(trained / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    depth = 4  # the tiny tower's blocks
    top = [g["lr"] for g in groups if g["name"].startswith(f"layer_{depth + 1}_")][0]
    for g in groups:
        layer = int(g["name"].split("_")[1])
        assert g["lr"] == pytest.approx(top * 0.8 ** (depth + 1 - layer), rel=1e-6)
        assert g["weight_decay"] == (0.0 if "no_decay" in g["name"] else 0.05)
    # the schedule: one warmup epoch, then cosine from lr to min_lr; the last step ran at step index total - 1
    total, per_epoch = state["step"], state["step"] // 6
    progress = (total - 1 - per_epoch) / (total - per_epoch)
    floor = 1e-7 / 1e-3
    assert top == pytest.approx(1e-3 * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress))), rel=1e-6)


def test_layer_decay_groups_by_parameter_name(setup):
    from model import layer_decay_groups

    clip = open_clip.create_model(setup["model"])
    groups = layer_decay_groups(clip.visual, 1.0, 0.5, 0.1)
    where = {id(p): g for g in groups for p in g["params"]}
    named = dict(clip.visual.named_parameters())
    expected = {"conv1.weight": 0, "class_embedding": 0, "positional_embedding": 0, "ln_pre.weight": 0,
                "transformer.resblocks.0.attn.in_proj_weight": 1, "transformer.resblocks.3.mlp.c_fc.bias": 4,
                "ln_post.weight": 5, "proj": 5}
    for name, layer in expected.items():
        group = where[id(named[name])]
        assert group["lr"] == 0.5 ** (5 - layer), name
        assert group["weight_decay"] == (0.1 if named[name].ndim >= 2 else 0.0), name
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_early_stopping_stops(setup, tmp_path):
    # min_delta larger than any change: only the first epoch improves, patience 2 ends the run after epoch 3
    path = run(setup, tmp_path, epochs=10, patience=2, min_delta=100.0)
    assert [r["epoch"] for r in rows(path)] == [1, 2, 3]
    assert "early stop" in (path / "out.log").read_text()
    state = torch.load(path / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    assert state["early_stopping"]["best_epoch"] == 1 and state["early_stopping"]["stopped"]
    before = (path / "metrics.jsonl").read_text()
    run(setup, tmp_path, resume=True, epochs=10, patience=2, min_delta=100.0)  # a stopped run stays stopped
    assert (path / "metrics.jsonl").read_text() == before


def test_resume_equals_an_uninterrupted_run(setup, trained, tmp_path, monkeypatch):
    real = pretrainer.validate
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in epoch 3, after epoch 2's checkpoint
        return real(*args, **kw)

    monkeypatch.setattr(pretrainer, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path)
    monkeypatch.setattr(pretrainer, "validate", real)
    path = run(setup, tmp_path, resume=True)
    assert "resumed from epoch_latest.pt: epoch 2" in (path / "out.log").read_text()
    keys = ("epoch", "step", "loss", "val")
    assert [{k: r[k] for k in keys} for r in rows(path)] == [{k: r[k] for k in keys} for r in rows(trained)]
    a = torch.load(path / "best" / "open_clip_pytorch_model.bin", weights_only=True)
    b = torch.load(trained / "best" / "open_clip_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_result_loads_through_open_clip_and_fmclip_train(setup, trained, images, tmp_path):
    from pipelines.pair_data import PairImages
    from pipelines.pretrain_steps import validate
    from pipelines.runtime import Runtime

    saved = torch.load(trained / "best" / "open_clip_pytorch_model.bin", weights_only=True)
    # as a local-dir folder, and as a weights file for a named architecture
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{trained / 'best'}")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    # best/ is the best epoch: validated again, it gives the best validation loss the run recorded
    state = torch.load(trained / "checkpoints" / "epoch_latest.pt", map_location="cpu", weights_only=True)
    pairs = json.loads((trained / "pairs.json").read_text())
    text = torch.load(trained / "text_features.pt", weights_only=True)["features"][len(pairs["train"]):]
    pp = open_clip.get_model_preprocess_cfg(model)
    val_images = PairImages([p[0] for p in pairs["val"]], size=32, mean=pp["mean"], std=pp["std"], augment=None, seed=0)
    again = validate(model, torch.utils.data.DataLoader(val_images, batch_size=8), text,
                     model.logit_scale.exp().detach(), 8, Runtime({"device": "cpu", "precision": "fp32", "threads": 1}))
    assert again["loss"] == pytest.approx(state["early_stopping"]["best_loss"], abs=1e-5)
    arch_dir = tmp_path / "arch"
    arch_dir.mkdir()
    cfg = json.loads((trained / "best" / "open_clip_config.json").read_text())["model_cfg"]
    (arch_dir / "fmc-tiny-pretrained.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(arch_dir / "fmc-tiny-pretrained.json")
    named, _, _ = open_clip.create_model_and_transforms("fmc-tiny-pretrained",
                                                        pretrained=str(trained / "best" / "open_clip_pytorch_model.bin"))
    assert all(torch.equal(v, saved[k]) for k, v in named.state_dict().items())
    base = open_clip.create_model(setup["model"])
    assert not torch.equal(base.visual.conv1.weight, model.visual.conv1.weight)  # the vision tower learned
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base.state_dict().items()
               if not k.startswith("visual.") and k != "logit_scale")  # the text tower did not
    # stages 2 and 3 start from it
    cache = make_cache(images, tmp_path / "cache.zarr", 16)
    assert cli.main(["train", "--cache", str(cache), "--out", str(tmp_path / "runs"), "--name", "s2", "--no-progress",
                     f"model.pretrained=local-dir:{trained / 'best'}", "model.image_size=32", "model.prompt_mode=coop",
                     "train.epochs=1", "train.epoch_samples=8", "train.batch_size=4", "train.threads=1"]) == 0
    from model import load_checkpoint

    trained_model = load_checkpoint(tmp_path / "runs" / "s2" / "checkpoints" / "epoch_latest.pt")
    assert trained_model.base_fingerprint == weights_fingerprint(model)


def test_bad_pairs_are_skipped_and_reported(setup, tmp_path):
    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    source = setup["pairs"] / "images"
    for i in range(6):
        (folder / "images" / f"ok_{i}.png").write_bytes((source / f"img_{i}.png").read_bytes())
    (folder / "images" / "copy.png").write_bytes((source / "img_0.png").read_bytes())
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    val = tmp_path / "val"
    (val / "images").mkdir(parents=True)
    for i in (1, 2):
        (val / "images" / f"v_{i}.png").write_bytes((source / f"img_{i + 10}.png").read_bytes())
    (val / "images" / "v_5.png").write_bytes((source / "img_5.png").read_bytes())  # also a training image
    (val / "pairs.jsonl").write_text("".join(json.dumps({"image": f"v_{i}.png", "caption": CAPTIONS[i % 4]}) + "\n"
                                             for i in (1, 2, 5)))
    lines = [f"ok_{i}.png,{CAPTIONS[i % 4]}" for i in range(6)]
    (folder / "images" / "quiet.png").write_bytes((source / "img_7.png").read_bytes())
    lines += ["missing.png,a dark square", "ok_1.png,listed again", "quiet.png,  ", "broken.png,a bright disc",
              "copy.png,horizontal stripes"]
    (folder / "captions.csv").write_text("image,caption\n" + "\n".join(lines) + "\n")
    path = pretrain(load_pretrain_config(None, [*settings(setup, epochs=1), f"data.pairs={folder}",
                                                f"data.val_pairs={val}"]), out=tmp_path / "runs", name="r",
                    progress=False)
    skipped = {Path(s["image"]).name: s["reason"] for s in map(json.loads, (path / "skipped.jsonl").read_text().splitlines())}
    assert skipped["missing.png"] == "image file not found"
    assert skipped["ok_1.png"].startswith("image listed twice")
    assert skipped["quiet.png"] == "empty caption"
    assert skipped["broken.png"].startswith("unreadable")
    assert skipped["copy.png"].startswith("the same pixels as") and skipped["copy.png"].endswith("(kept that one)")
    assert skipped["ok_5.png"].startswith("its pixels are also in the validation pairs")
    pairs = json.loads((path / "pairs.json").read_text())
    assert sorted(Path(p[0]).name for p in pairs["train"]) == ["ok_0.png", "ok_1.png", "ok_2.png", "ok_3.png", "ok_4.png"]
    assert len(pairs["val"]) == 3


def test_a_listing_without_usable_pairs_is_refused(setup, tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "captions.csv").write_text("image,caption\nnothing.png,a bright disc\n")
    code = cli.main(["pretrain", "--pairs", str(folder), "--out", str(tmp_path / "runs"), "--no-progress",
                     f"model.pretrained={setup['model']}", "model.image_size=32"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no usable image-caption pair" in err and "captions.csv" in err and "image file not found" in err
    (folder / "captions.csv").write_text("picture,text\nx.png,y\n")
    assert cli.main(["pretrain", "--pairs", str(folder), "--out", str(tmp_path / "runs2"), "--no-progress"]) == 2
    assert "must name an image column" in capsys.readouterr().err


def test_two_ddp_ranks_equal_one_process(setup, tmp_path):
    # no mixup and no dropout: both draw per rank; the loss sees the global batch through the gathered rows
    train = dict(epochs=2, mixup_alpha=0.0, dropout=0.0)
    whole = run(setup, tmp_path / "one", **train)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pipelines.cli", "pretrain", "--out", str(tmp_path / "two"), "--name", "r",
                           "--no-progress", *settings(setup, **train)],
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two" / "r"
    assert "2 rank(s)" in (two / "out.log").read_text()
    for x, y in zip(rows(two), rows(whole)):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["val"]["loss"] == pytest.approx(y["val"]["loss"], rel=1e-4)
    a = torch.load(two / "best" / "open_clip_pytorch_model.bin", weights_only=True)
    b = torch.load(whole / "best" / "open_clip_pytorch_model.bin", weights_only=True)
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.in_proj_bias"):
            # the key bias cannot change the attention (softmax ignores a shift), so its gradient is rounding
            # noise, which Adam scales up to steps of lr: compare the query and value thirds
            third = len(x) // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5), k
