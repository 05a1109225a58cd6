"""The training job under ``fmclip train``: the adapted CLIP learns from a cache made by ``fmclip generate``.

    run_path = train(load_config("train.yaml", ["model.arch=ViT-B-16"]) | ..., out="runs", name="brain")

One process, or DDP under torchrun (gloo on CPU, NCCL on CUDA): every rank builds the same model, reads its
rows of each global batch (``pipelines.batches``) and averages gradients; rank 0 validates and writes. The
run's length is ``train.epochs`` epochs of ``train.epoch_samples`` samples (by default the cache's number
of source images k: method.md's epoch), as whole batches of ``train.batch_size``. Validation uses held-out
synthetic samples only (``pipelines.batches.split_samples`` or a second cache); the test split of a prepared
dataset is never read here.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import FusionLoss, FusionMedCLIP, load_checkpoint, param_groups, save_checkpoint

from .batches import TrainBatches, read_samples, split_samples, tasks_of
from .cache import DONE, CacheError, n_shards, read_settings
from .features import FeatureCache
from .metrics import roc_auc
from .runs import RunDir, code_version, load_state
from .runtime import Runtime, callers_threads
from .train_config import model_config

VAL_BATCH = 32


class TrainError(Exception):
    """Training cannot start as asked; the message names the file and says what to do."""


def open_cache(path: str | None) -> dict[str, Any]:
    """A finished cache's settings, identity and number of source images, or TrainError saying why not."""
    import hashlib
    import json

    if not path:
        raise TrainError("no cache given: pass --cache CACHE.zarr (made by `fmclip generate`)")
    try:
        settings = read_settings(path)
    except CacheError as exc:
        raise TrainError(str(exc)) from None
    if settings is None:
        raise TrainError(f"{path}: not an fmclip cache (make one with `fmclip generate`)")
    total = n_shards(settings["samples"], settings["shard_size"])
    finished = len(list((Path(path) / DONE).glob("*.json")))
    if finished < total:
        raise TrainError(f"{path}: incomplete cache ({finished} of {total} shards finished); rerun the same "
                         "`fmclip generate` command to finish it, or check it with `fmclip verify`")
    sources = json.loads((Path(path) / "sources.json").read_text())["items"]
    identity = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {"path": str(Path(path).resolve()), "identity": identity, "samples": settings["samples"],
            "size": settings["size"], "sources": len(sources), "seed": settings["seed"]}


class _Step(torch.nn.Module):
    """What DDP wraps: maps from images, or from cached tokens, with the same trainable parameters."""

    def __init__(self, model: FusionMedCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> dict:
        if tokens is None:
            return self.model(images)
        return self.model.forward_features(tokens, output_size=images.shape[-1])


def lr_factor(train: dict[str, Any], step: int, total: int, per_epoch: int) -> float:
    """The share of each group's learning rate at ``step``: 1 (constant), or warmup then cosine."""
    if train["schedule"] == "constant":
        return 1.0
    warmup = train["warmup_epochs"] * per_epoch
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = train["min_lr_ratio"]
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def validate(model: FusionMedCLIP, val: dict[str, Any], rt: Runtime, tokens: FeatureCache | None) -> dict:
    """image_AUROC and pixel_AUROC of the held-out samples (None where a class is missing)."""
    model.eval()
    scores, maps = [], []
    with torch.no_grad(), rt.autocast():
        text = model.text_features()  # once per validation: the prompts do not change in it
        for at in range(0, len(val["gt_label"]), VAL_BATCH):
            images = val["image"][at:at + VAL_BATCH].to(rt.device)
            if tokens is not None:
                index = torch.arange(at, at + len(images))
                out = model.forward_features(tokens.tokens(model, images, index), images.shape[-1], text=text)
            else:
                out = model(images, text=text)
            scores.append(out["pred_score"].float().cpu())
            maps.append(out["anomaly_map"].float().cpu())
    model.train()
    labels, masks = val["gt_label"].numpy(), val["gt_mask"].numpy()
    score, amap = torch.cat(scores).numpy(), torch.cat(maps).numpy()
    both = 0 < labels.sum() < len(labels)
    pixels = masks.any() and not masks.all()
    return {"image_AUROC": roc_auc(score, labels) if both else None,
            "pixel_AUROC": roc_auc(amap, masks) if pixels else None}


def _open_run(config: dict[str, Any], out: str | Path, name: str | None, resume: bool, rt: Runtime):
    """The caches, the model's config and the run folder (created by rank 0 before the others open it)."""
    data = config["data"]
    cache = open_cache(data["cache"])
    val_cache = open_cache(data["val_cache"]) if data["val_cache"] else None
    mcfg = model_config(config)
    if mcfg.image_size != cache["size"]:
        raise TrainError(f"{data['cache']}: images of {cache['size']} px, but model.image_size is "
                         f"{mcfg.image_size}; generate the cache with --size {mcfg.image_size} or set "
                         f"model.image_size={cache['size']}")
    if rt.world > 1 and not name:
        raise TrainError("under torchrun, give the run a --name (every rank must open the same folder)")
    data["cache"] = cache["path"]  # resolved: a resume from another working folder is the same run
    data["val_cache"] = val_cache["path"] if val_cache else None
    record = {"config": config, "cache": {"train": cache, "val": val_cache}, "code": code_version()}
    run = RunDir.start(out, name, record, resume, write=True) if rt.main else None
    rt.barrier()
    return (run or RunDir.start(out, name, record, resume=True, write=False)), cache, val_cache, mcfg


def _samples(t: dict[str, Any], cache: dict[str, Any], val_cache: dict[str, Any] | None):
    """(training dataset, its training indices, validation dataset, its validation indices)."""
    from .loader import CachedDataset

    dataset = CachedDataset(cache["path"])
    if val_cache:
        rng = np.random.default_rng([t["seed"], 0x7A1])
        val_idx = np.sort(rng.permutation(val_cache["samples"])[: t["val_samples"]])
        return dataset, np.arange(cache["samples"]), CachedDataset(val_cache["path"]), val_idx
    train_idx, val_idx = split_samples(tasks_of(cache["path"]), val_tasks=t["val_tasks"],
                                       val_fraction=t["val_fraction"], val_samples=t["val_samples"], seed=t["seed"])
    return dataset, train_idx, dataset, val_idx


def _resume(run: RunDir, model: FusionMedCLIP, optimizer: torch.optim.Optimizer, rt: Runtime,
            best: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    """(epochs done, steps done, best so far) from epoch_latest.pt, with the optimiser and random states."""
    latest = run.latest()
    if latest is None:
        return 0, 0, best
    extra = load_state(latest)["extra"]
    load_checkpoint(latest, model)
    optimizer.load_state_dict(extra["optimizer"])
    if len(extra["rng"]) == rt.world:  # dropout's streams go on where they stopped
        torch.set_rng_state(extra["rng"][rt.rank]["torch"])
        if rt.device.type == "cuda" and extra["rng"][rt.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(extra["rng"][rt.rank]["cuda"], rt.device)
    else:
        run.log(f"the run was made with {len(extra['rng'])} rank(s), resumed with {rt.world}: dropout's "
                "random streams start afresh (the data order does not depend on the ranks)")
    run.truncate_metrics(extra["epoch"])
    run.log(f"resumed from {latest.name}: epoch {extra['epoch']}, step {extra['step']}")
    return extra["epoch"], extra["step"], extra["best"]


def _feature_caches(model: FusionMedCLIP, t: dict[str, Any], rt: Runtime, train_idx: np.ndarray,
                    val_idx: np.ndarray, passes: float, run: RunDir) -> tuple[Any, Any]:
    """Stage 2's token caches for training and validation samples, or (None, None) with the reason logged."""
    if model.config.stage != 2:
        return None, None
    shape = FeatureCache.token_shape(model)
    dtype = torch.bfloat16 if rt.precision == "amp_bf16" else torch.float32
    need = FeatureCache.nbytes(len(train_idx) + len(val_idx), shape, dtype)
    why = ("train.feature_cache=off" if t["feature_cache"] == "off" else "each sample is seen once"
           if passes <= 1 else f"needs {need / 2**30:.1f} GiB > train.feature_cache_gb"
           if need > t["feature_cache_gb"] * 2**30 else "")
    if why:
        run.log(f"feature cache: off ({why}); every step runs the backbone")
        return None, None
    run.log(f"feature cache: on ({need / 2**30:.2f} GiB at most, {dtype})")
    return (FeatureCache(train_idx, shape, dtype, rt.device),
            FeatureCache(np.arange(len(val_idx)), shape, dtype, rt.device))


def train(config: dict[str, Any], *, out: str | Path = "runs", name: str | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train as ``config`` says (``pipelines.train_config``); returns the run folder. Sets torch's thread
    count for the run and puts the caller's back afterwards."""
    with callers_threads():
        return _train(config, out, name, resume, progress)


def _train(config: dict[str, Any], out: str | Path, name: str | None, resume: bool, progress: bool) -> Path:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    t, data = config["train"], config["data"]
    rt = Runtime(t)
    run, cache, val_cache, mcfg = _open_run(config, out, name, resume, rt)
    torch.manual_seed(t["seed"] + rt.rank)  # dropout's stream, as open_clip seeds its ranks
    model = FusionMedCLIP(mcfg).to(rt.device)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, t["lr"]), weight_decay=t["weight_decay"],
                                  betas=tuple(t["betas"]), eps=t["eps"])
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    loss_fn = FusionLoss(t["w_img"], t["w_seg"], t["focal_gamma"], focal_on=t["focal_on"])
    dataset, train_idx, val_ds, val_idx = _samples(t, cache, val_cache)
    batch = t["batch_size"]
    per_epoch = -(-int(t["epoch_samples"] or cache["sources"]) // batch)
    total = t["epochs"] * per_epoch
    passes = total * batch / len(train_idx)
    best = {"metric": t["select_metric"], "value": None, "epoch": None}
    start_epoch, step, best = _resume(run, model, optimizer, rt, best) if resume else (0, 0, best)
    tokens, val_tokens = _feature_caches(model, t, rt, train_idx, val_idx, passes, run)
    step_model: torch.nn.Module = _Step(model)
    if rt.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(step_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    val = read_samples(val_ds, val_idx) if rt.main and len(val_idx) else None
    workers = data["workers"] if data["workers"] is not None else (2 if rt.device.type == "cuda" else 0)
    source = TrainBatches(dataset, train_idx, batch_size=batch, seed=t["seed"], start=step, stop=total,
                          rank=rt.rank, world_size=rt.world)
    # A generator of its own: the DataLoader draws a base seed when iterated, which must not advance the
    # global stream that dropout uses (a resumed run would then differ from an uninterrupted one).
    loader = DataLoader(source, batch_size=None, num_workers=workers, pin_memory=rt.device.type == "cuda",
                        multiprocessing_context="spawn" if workers else None,
                        generator=torch.Generator().manual_seed(t["seed"]))
    held = "a second cache" if val_cache else f"held-out tasks {t['val_tasks']}" if t["val_tasks"] else "a seeded share"
    run.log(f"train: {len(train_idx)} samples of {cache['path']}; validation: {len(val_idx)} samples ({held}); "
            f"{t['epochs']} epochs x {per_epoch} steps of {batch} ({total * batch} samples, {passes:.2f} passes); "
            f"{rt.device}, {rt.precision}, {rt.threads} threads, {rt.world} rank(s), {workers} loader workers")
    batches = iter(loader)
    bar = tqdm(total=total, initial=step, unit="step", desc=f"train {run.path.name}", dynamic_ncols=True,
               disable=not (progress and rt.main))
    for epoch in range(start_epoch, t["epochs"]):
        started, waited, sums = time.perf_counter(), 0.0, np.zeros(3)
        for _ in range(per_epoch):
            ask = time.perf_counter()
            b = next(batches)
            waited += time.perf_counter() - ask
            images = b["image"].to(rt.device, non_blocking=True)
            masks = b["gt_mask"].to(rt.device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lr_factor(t, step, total, per_epoch)
            with rt.autocast():
                cached = tokens.tokens(model, images, b["index"]) if tokens is not None else None
                parts = loss_fn(step_model(images, cached), masks.float())
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            step += 1
            sums += [parts.total.item(), parts.focal.item(), parts.dice.item()]
            bar.update(1)
            bar.set_postfix(loss=f"{parts.total.item():.3f}", samples_per_s=f"{(bar.format_dict['rate'] or 0) * batch:.1f}")
        seconds = time.perf_counter() - started
        loss, focal, dice = rt.mean((sums / per_epoch).tolist())
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "samples": step * batch,
                               "passes": round(step * batch / len(train_idx), 4), "loss": loss, "focal": focal,
                               "dice": dice, "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                               "samples_per_s": per_epoch * batch / seconds, "seconds": seconds,
                               "data_wait": waited / seconds}
        improved = False
        if val is not None and ((epoch + 1) % t["val_every"] == 0 or epoch + 1 == t["epochs"]):
            row["val"] = validate(model, val, rt, val_tokens)
            value = row["val"][t["select_metric"]]
            improved = value is not None and (best["value"] is None or value > best["value"])
            if improved:
                best = {"metric": t["select_metric"], "value": value, "epoch": epoch + 1}
        rng = rt.gather({"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None})
        if rt.main:
            # The line first: a kill before the checkpoint redoes the epoch, and the resume drops the line.
            run.append_metrics(row)
            extra = {"epoch": epoch + 1, "step": step, "optimizer": optimizer.state_dict(),
                     "scheduler": {"schedule": t["schedule"], "step": step}, "scaler": {}, "rng": rng,
                     "best": best, "val": row.get("val")}
            run.save(lambda path, extra=extra: save_checkpoint(model, path, extra=extra), epoch + 1, t["keep"], best=improved)
            line = (f"epoch {epoch + 1}/{t['epochs']} step {step} samples {step * batch} loss {loss:.4f} "
                    f"(focal {focal:.4f} dice {dice:.4f}) {row['samples_per_s']:.1f} samples/s "
                    f"data wait {100 * row['data_wait']:.1f} %")
            if "val" in row:
                line += "".join(f" val {k} {v:.4f}" for k, v in row["val"].items() if v is not None)
                bar.write(line)
            run.log(line)
        rt.barrier()
    bar.close()
    run.log(f"done: best {best['metric']} {best['value']} at epoch {best['epoch']}")
    return run.path
