"""Stage 1 under ``fmclip pretrain`` (method.md section 3): the whole vision tower of an open_clip model
learns from image-caption pairs, the text tower frozen.

    run_path = pretrain(load_pretrain_config("pretrain.yaml", ["data.pairs=roco/train/radiology"]), out="runs")

CLIP's symmetric contrastive loss with label smoothing, mixup of the images (and of their captions'
embeddings), dropout on the image embedding; AdamW with layer-wise learning-rate decay, warmup then cosine
decay to ``min_lr``; early stopping on the validation loss. The frozen text tower encodes every caption once
(``text_features.pt``). The run folder is ``fmclip train``'s (``pipelines.runs``), plus:

    runs/NAME/pairs.json       the training and validation pairs used (the split is saved with the run)
    runs/NAME/skipped.jsonl    every listing entry left out, with the reason
    runs/NAME/best/            the best epoch's weights as an open_clip local-dir folder

``best/`` loads with ``open_clip.create_model_and_transforms("local-dir:runs/NAME/best")``, and its
``open_clip_pytorch_model.bin`` with ``create_model_and_transforms(ARCH, pretrained=FILE)``; ``fmclip train
model.pretrained=local-dir:runs/NAME/best`` starts stages 2 and 3 from it. Each epoch checkpoint holds
open_clip's ``state_dict`` too (so open_clip loads it as well) with the optimiser and what a resume needs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import open_clip
import torch

from model import FusionMedCLIPConfig, atomic_save, clip_loss, create_clip, layer_decay_groups

from .pair_data import EpochBatches, PairImages
from .pairs import Pair, listing_identity, read_pairs, split_pairs
from .pretrain_steps import encode_captions, export_config, gather_rows, mixup, validate
from .runs import RunDir, code_version, load_state
from .runtime import Runtime, callers_threads
from .trainer import lr_factor

FORMAT = "fmclip-pretrain-v1"
WEIGHTS = "open_clip_pytorch_model.bin"


class PretrainError(Exception):
    """Stage 1 cannot start as asked; the message says why and what to do."""


def _pairs(config: dict[str, Any], run: RunDir, rt: Runtime, progress: bool) -> tuple[list[Pair], list[Pair]]:
    """The training and validation pairs: read and split once, then always from the run's pairs.json."""
    saved = run.path / "pairs.json"
    if rt.main and not saved.is_file():
        data, t = config["data"], config["train"]
        skipped: list[dict[str, Any]] = []
        if data["val_pairs"]:
            val, skipped, hashes = read_pairs(data["val_pairs"], progress=progress)
            train, more, _ = read_pairs(data["pairs"], exclude=hashes, progress=progress)
            skipped += more
        else:
            pairs, skipped, _ = read_pairs(data["pairs"], progress=progress)
            train, val = split_pairs(pairs, t["val_fraction"], t["seed"])
        for what, pairs, listing in (("training", train, data["pairs"]), ("validation", val, data["val_pairs"] or data["pairs"])):
            if len(pairs) < 2:
                raise PretrainError(f"{listing}: {len(pairs)} usable {what} pair(s); the contrastive loss needs two")
        run.write_text("skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped))
        run.write_text("pairs.json", json.dumps({k: [[p.image, p.caption] for p in v]
                                                  for k, v in (("train", train), ("val", val))}))
        run.log(f"pairs: {len(train)} training, {len(val)} validation, {len(skipped)} skipped (skipped.jsonl)")
    rt.barrier()
    listed = json.loads(saved.read_text())
    return ([Pair(*p) for p in listed["train"]], [Pair(*p) for p in listed["val"]])


def pretrain(config: dict[str, Any], *, out: str | Path = "runs", name: str | None = None, resume: bool = False,
             progress: bool = True) -> Path:
    """Run stage 1 as ``config`` says (``pipelines.pretrain_config``); returns the run folder."""
    with callers_threads():
        return _pretrain(config, out, name, resume, progress)


def _pretrain(config: dict[str, Any], out: str | Path, name: str | None, resume: bool, progress: bool) -> Path:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    t, data, m = config["train"], config["data"], config["model"]
    if not data["pairs"]:
        raise PretrainError("no pairs given: pass --pairs FOLDER_OR_LISTING (a CSV image,caption or a JSON-lines file)")
    rt = Runtime(t)
    if rt.world > 1 and not name:
        raise PretrainError("under torchrun, give the run a --name (every rank must open the same folder)")
    if t["batch_size"] % rt.world:
        raise PretrainError(f"train.batch_size {t['batch_size']} must split evenly over {rt.world} ranks")
    record = {"config": config, "data": {"pairs": listing_identity(data["pairs"]),
                                         "val_pairs": listing_identity(data["val_pairs"]) if data["val_pairs"] else None},
              "code": code_version()}
    made = RunDir.start(out, name, record, resume, write=True) if rt.main else None
    rt.barrier()
    run = made or RunDir.start(out, name, record, resume=True, write=False)
    train_pairs, val_pairs = _pairs(config, run, rt, progress)

    torch.manual_seed(t["seed"] + rt.rank)  # dropout's stream
    mcfg = FusionMedCLIPConfig(arch=m["arch"], pretrained=m["pretrained"], image_size=int(m["image_size"]))
    clip = create_clip(mcfg).to(rt.device)
    for p in clip.parameters():
        p.requires_grad_(False)
    for p in clip.visual.parameters():
        p.requires_grad_(True)
    text = encode_captions(clip, mcfg, [p.caption for p in train_pairs + val_pairs], run, rt, progress)
    train_text, val_text = text[:len(train_pairs)], text[len(train_pairs):]
    scale = clip.logit_scale.exp().detach().float()

    groups = layer_decay_groups(clip.visual, t["lr"], t["layer_decay"], t["weight_decay"])
    optimizer = torch.optim.AdamW(groups, betas=tuple(t["betas"]), eps=t["eps"])
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    schedule = {"schedule": "warmup_cosine", "warmup_epochs": t["warmup_epochs"], "min_lr_ratio": t["min_lr"] / t["lr"]
                if t["lr"] > 0 else 0.0}
    dropout = torch.nn.Dropout(t["dropout"])
    batch = t["batch_size"]
    sampler = EpochBatches(len(train_pairs), batch, t["seed"], rt.rank, rt.world)
    per_epoch = len(sampler)
    total = t["epochs"] * per_epoch
    stopping = {"best_loss": None, "best_epoch": None, "bad_epochs": 0, "stopped": False}
    start_epoch, step = 0, 0
    latest = run.latest() if resume else None
    if latest is not None:
        state = load_state(latest)
        clip.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, stopping = state["epoch"], state["step"], state["early_stopping"]
        if len(state["rng"]) == rt.world:
            torch.set_rng_state(state["rng"][rt.rank])
        run.truncate_metrics(start_epoch)
        run.log(f"resumed from {latest.name}: epoch {start_epoch}, step {step}")
    visual: torch.nn.Module = clip.visual
    if rt.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        visual = DistributedDataParallel(visual, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    mean, std = preprocess["mean"], preprocess["std"]
    augment = {k: t[k] for k in ("crop_scale", "hflip", "color_jitter", "rotation_deg")}
    images = PairImages([p.image for p in train_pairs], size=mcfg.image_size, mean=mean, std=std,
                        augment=augment, seed=t["seed"])
    val_images = PairImages([p.image for p in val_pairs], size=mcfg.image_size, mean=mean, std=std, augment=None,
                            seed=t["seed"])
    workers = 2 if data["workers"] is None else int(data["workers"])
    # workers live across epochs (the epoch travels with each index): spawning them costs seconds
    loader = DataLoader(images, batch_sampler=sampler, num_workers=workers, pin_memory=rt.device.type == "cuda",
                        multiprocessing_context="spawn" if workers else None, persistent_workers=workers > 0)
    val_loader = DataLoader(val_images, batch_size=batch, num_workers=min(workers, 1),
                            multiprocessing_context="spawn" if workers else None, persistent_workers=workers > 0)
    run.log(f"stage 1: {len(train_pairs)} training pairs, {len(val_pairs)} validation pairs; up to {t['epochs']} "
            f"epochs x {per_epoch} steps of {batch}; {rt.device}, {rt.precision}, {rt.threads} threads, "
            f"{rt.world} rank(s), {workers} loader workers")
    bar = tqdm(total=total, initial=step, unit="step", desc=f"pretrain {run.path.name}", dynamic_ncols=True,
               disable=not (progress and rt.main))
    clip.train()
    for epoch in range(start_epoch, t["epochs"]):
        if stopping["stopped"]:
            break
        sampler.set_epoch(epoch)
        started, waited, loss_sum = time.perf_counter(), 0.0, 0.0
        ask = time.perf_counter()
        for pixels, index in loader:
            waited += time.perf_counter() - ask
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lr_factor(schedule, step, total, per_epoch)
            pixels, texts, weights = mixup(pixels.to(rt.device, non_blocking=True), train_text[index].to(rt.device),
                                           t["mixup_alpha"], t["text_mixup"], seed=(t["seed"], step, rt.rank))
            with rt.autocast():
                features = dropout(visual(pixels))
            features, texts = gather_rows(features.float(), rt), [gather_rows(x, rt) for x in texts]
            loss = sum(w * clip_loss(features, x, scale, t["label_smoothing"]) for w, x in zip(weights, texts))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            ask = time.perf_counter()
        seconds = time.perf_counter() - started
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "loss": rt.mean([loss_sum / per_epoch])[0],
                               "lr": optimizer.param_groups[-1]["lr"], "images_per_s": per_epoch * batch / seconds,
                               "seconds": seconds, "data_wait": waited / seconds}
        improved = False
        if rt.main:
            row["val"] = validate(clip, val_loader, val_text, scale, batch, rt)
            value = row["val"]["loss"]
            improved = stopping["best_loss"] is None or value < stopping["best_loss"] - t["min_delta"]
            if improved:
                stopping.update(best_loss=value, best_epoch=epoch + 1, bad_epochs=0)
            else:
                stopping["bad_epochs"] += 1
            stopping["stopped"] = stopping["bad_epochs"] >= t["patience"]
        stopping = rt.gather(stopping)[0]  # rank 0 decides for every rank
        rng = rt.gather(torch.get_rng_state())
        if rt.main:
            run.append_metrics(row)
            blob = {"format": FORMAT, "name": m["arch"], "epoch": epoch + 1, "step": step,
                    "state_dict": clip.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
                    "early_stopping": stopping}
            if improved:
                (run.path / "best").mkdir(exist_ok=True)
                run.write_text("best/open_clip_config.json", json.dumps(export_config(clip, mcfg), indent=2))
                atomic_save(clip.state_dict(), run.path / "best" / WEIGHTS)
            run.save(lambda path, blob=blob: atomic_save(blob, path), epoch + 1, t["keep"], best=False)
            v = row["val"]
            line = (f"epoch {epoch + 1}/{t['epochs']} step {step} loss {row['loss']:.4f} val loss {v['loss']:.4f} "
                    f"R@1 {v['image_to_text_R@1']:.3f}/{v['text_to_image_R@1']:.3f} "
                    f"{row['images_per_s']:.1f} images/s data wait {100 * row['data_wait']:.1f} %")
            bar.write(line)
            run.log(line)
            if stopping["stopped"]:
                run.log(f"early stop: no validation-loss improvement over {t['min_delta']} in {t['patience']} epochs")
        rt.barrier()
    bar.close()
    run.log(f"done: best validation loss {stopping['best_loss']} at epoch {stopping['best_epoch']} (best/)")
    return run.path
