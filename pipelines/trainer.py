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
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import FusionLoss, FusionMedCLIP, load_checkpoint, param_groups

from .batches import TrainBatches, read_samples, split_samples, tasks_of
from .cache import DONE, n_shards, read_settings
from .features import FeatureCache
from .metrics import roc_auc
from .runs import RunDir, code_version, load_state
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
    settings = read_settings(path)
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


class Runtime:
    """Device, DDP rank and world, precision and threads of this process."""

    def __init__(self, train: dict[str, Any]) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        want = train["device"]
        cuda = torch.cuda.is_available() if want == "auto" else want.startswith("cuda")
        self.device = torch.device(f"cuda:{local}" if cuda and want in ("auto", "cuda") else (want if cuda else "cpu"))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.precision = train["precision"] if train["precision"] != "auto" else (
            "amp_bf16" if self.device.type == "cuda" else "fp32")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.threads = int(train["threads"] or max(1, cores // local_world))
        torch.set_num_threads(self.threads)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "amp_bf16")

    def mean(self, values: list[float]) -> list[float]:
        """The mean over ranks of each value (the values themselves in one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


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


def train(config: dict[str, Any], *, out: str | Path = "runs", name: str | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train as ``config`` says (``pipelines.train_config``); returns the run folder."""
    from tqdm import tqdm

    t, data = config["train"], config["data"]
    rt = Runtime(t)
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
    run = RunDir.start(out, name, record, resume, write=rt.main) if rt.main else None
    rt.barrier()
    if run is None:
        run = RunDir.start(out, name, record, resume=True, write=False)
    torch.manual_seed(t["seed"] + rt.rank)  # dropout's stream, as open_clip seeds its ranks

    model = FusionMedCLIP(mcfg).to(rt.device)
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, t["lr"]), weight_decay=t["weight_decay"],
                                  betas=tuple(t["betas"]), eps=t["eps"])
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    loss_fn = FusionLoss(t["w_img"], t["w_seg"], t["focal_gamma"], focal_on=t["focal_on"])

    from .loader import CachedDataset

    dataset = CachedDataset(cache["path"])
    if val_cache:
        train_idx = np.arange(cache["samples"])
        val_ds = CachedDataset(val_cache["path"])
        rng = np.random.default_rng([t["seed"], 0x7A1])
        val_idx = np.sort(rng.permutation(val_cache["samples"])[: t["val_samples"]])
    else:
        train_idx, val_idx = split_samples(tasks_of(cache["path"]), val_tasks=t["val_tasks"],
                                           val_fraction=t["val_fraction"], val_samples=t["val_samples"],
                                           seed=t["seed"])
        val_ds = dataset
    batch = t["batch_size"]
    epoch_samples = int(t["epoch_samples"] or cache["sources"])
    per_epoch = -(-epoch_samples // batch)
    total = t["epochs"] * per_epoch
    passes = total * batch / len(train_idx)

    start_epoch, step, best = 0, 0, {"metric": t["select_metric"], "value": None, "epoch": None}
    latest = run.latest() if resume else None
    if latest is not None:
        state = load_state(latest)
        load_checkpoint(latest, model)
        extra = state["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        start_epoch, step, best = extra["epoch"], extra["step"], extra["best"]
        if len(extra["rng"]) == rt.world:  # dropout's streams go on where they stopped
            torch.set_rng_state(extra["rng"][rt.rank]["torch"])
            if rt.device.type == "cuda" and extra["rng"][rt.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(extra["rng"][rt.rank]["cuda"], rt.device)
        else:
            run.log(f"the run was made with {len(extra['rng'])} rank(s), resumed with {rt.world}: dropout's "
                    "random streams start afresh (the data order does not depend on the ranks)")
        run.truncate_metrics(start_epoch)
        run.log(f"resumed from {latest.name}: epoch {start_epoch}, step {step}")

    tokens = val_tokens = None
    if mcfg.stage == 2:
        shape = FeatureCache.token_shape(model)
        dtype = torch.bfloat16 if rt.precision == "amp_bf16" else torch.float32
        need = FeatureCache.nbytes(len(train_idx) + len(val_idx), shape, dtype)
        if t["feature_cache"] == "off":
            why = "train.feature_cache=off"
        elif passes <= 1:
            why = "each sample is seen once"
        elif need > t["feature_cache_gb"] * 2**30:
            why = f"needs {need / 2**30:.1f} GiB > train.feature_cache_gb"
        else:
            why = ""
            tokens = FeatureCache(train_idx, shape, dtype, rt.device)
            val_tokens = FeatureCache(np.arange(len(val_idx)), shape, dtype, rt.device)
        run.log(f"feature cache: on ({need / 2**30:.2f} GiB at most, {dtype})" if tokens is not None
                else f"feature cache: off ({why}); every step runs the backbone")
    step_model: torch.nn.Module = _Step(model)
    if rt.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(step_model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    val = read_samples(val_ds, val_idx) if rt.main and len(val_idx) else None
    workers = data["workers"] if data["workers"] is not None else (2 if rt.device.type == "cuda" else 0)
    from torch.utils.data import DataLoader

    source = TrainBatches(dataset, train_idx, batch_size=batch, seed=t["seed"], start=step, stop=total,
                          rank=rt.rank, world_size=rt.world)
    # A generator of its own: the DataLoader draws a base seed when iterated, which must not advance the
    # global stream that dropout uses (a resumed run would then differ from an uninterrupted one).
    loader = DataLoader(source, batch_size=None, num_workers=workers, pin_memory=rt.device.type == "cuda",
                        multiprocessing_context="spawn" if workers else None,
                        generator=torch.Generator().manual_seed(t["seed"]))
    run.log(f"train: {len(train_idx)} samples of {cache['path']}; validation: {len(val_idx)} samples "
            f"({'second cache' if val_cache else ('held-out tasks ' + str(t['val_tasks'])) if t['val_tasks'] else 'a seeded share'}); "
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
            factor = lr_factor(t, step, total, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
            with rt.autocast():
                cached = tokens.tokens(model, images, b["index"]) if tokens is not None else None
                parts = loss_fn(step_model(images, cached), masks.float())
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            step += 1
            sums += [parts.total.item(), parts.focal.item(), parts.dice.item()]
            bar.update(1)
            rate = bar.format_dict["rate"]
            bar.set_postfix(loss=f"{parts.total.item():.3f}", samples_per_s=f"{(rate or 0) * batch:.1f}")
        seconds = time.perf_counter() - started
        loss, focal, dice = rt.mean((sums / per_epoch).tolist())
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "samples": step * batch,
                               "passes": round(step * batch / len(train_idx), 4), "loss": loss, "focal": focal,
                               "dice": dice, "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                               "samples_per_s": per_epoch * batch / seconds, "seconds": seconds,
                               "data_wait": waited / seconds}
        last = epoch + 1 == t["epochs"]
        improved = False
        if val is not None and ((epoch + 1) % t["val_every"] == 0 or last):
            row["val"] = validate(model, val, rt, val_tokens)
            value = row["val"][t["select_metric"]]
            improved = value is not None and (best["value"] is None or value > best["value"])
            if improved:
                best = {"metric": t["select_metric"], "value": value, "epoch": epoch + 1}
        rng = rt.gather({"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None})
        if rt.main:
            extra = {"epoch": epoch + 1, "step": step, "optimizer": optimizer.state_dict(),
                     "scheduler": {"schedule": t["schedule"], "step": step}, "scaler": {}, "rng": rng,
                     "best": best, "val": row.get("val")}
            run.save(model, epoch + 1, extra, t["keep"], best=improved)
            run.append_metrics(row)
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

