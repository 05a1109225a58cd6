"""The evaluation job under ``fmclip evaluate``: score a prepared dataset's test split, measure, report.

    summary = evaluate(data="prepared/brainmri", out="runs/r/eval/brainmri_test", run="runs/r")
    summary = evaluate(data="prepared/brainmri", out="baselines/zs", method="zeroshot", run="runs/r")
    summary = evaluate(data="prepared/brainmri", out="baselines/pc", method="patchcore",
                       support="prepared/brainmri/fewshot/k16_seed0.json", run="runs/r")

Before scoring, no image the model or baseline has seen (the run's cache sources, or the support file's
images) may be in the split by content hash: a leak is refused. Writes ``metrics.json`` (anomalib's metric
names, the checkpoint, the dataset's identity, the support ids), ``scores.csv`` (``id,image,gt_label,
pred_score``), ``overlays.png`` with ``overlays/``, ``roc.png`` and ``reliability.png``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import image_metrics, pixel_metrics, reliability_bins, roc_curve
from .testset import EvaluationError, TestSplit

METHODS = ("model", "zeroshot", "patchcore")
CHECKPOINTS = ("best", "latest")


def run_record(run: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise EvaluationError(f"{run}: not a run folder (no config.yaml); train one with `fmclip train`")
    return yaml.safe_load(path.read_text())


def checkpoint_path(run: str | Path, checkpoint: str) -> Path:
    path = Path(run) / "checkpoints" / ("best.pt" if checkpoint == "best" else "epoch_latest.pt") \
        if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not path.is_file():
        hint = " (no validated epoch yet: use --checkpoint latest)" if checkpoint == "best" else ""
        raise EvaluationError(f"{path}: no such checkpoint{hint}")
    return path


def source_hashes(cache: str | Path) -> dict[str, str]:
    """Content hash -> id of the images a cache was made from, as the prepared index hashes pixels."""
    from dataprep.io import content_hash, to_uint16

    from .sources import DataError, SourceSet

    spec = json.loads((Path(cache) / "sources.json").read_text())
    sources = SourceSet(spec, keep=1)
    out = {}
    for i, item in enumerate(spec["items"]):
        try:
            image, _ = sources.read(i)
        except DataError as exc:
            raise EvaluationError(f"cannot check the run's training images for leakage: {exc}") from None
        out[content_hash(to_uint16(image))] = item["id"]
    return out


def support_of(test: TestSplit, support_file: str | Path) -> tuple[list[str], dict[str, str]]:
    """A support file's ids and their content hashes, after dataprep's check that it was drawn from this
    dataset's current index and holds only normal training images whose content is not in the test split."""
    from dataprep import FewShotError, LeakageError, load_support, read_index

    try:
        doc = load_support(support_file, test.root)
    except (OSError, ValueError, KeyError, FewShotError, LeakageError) as exc:
        raise EvaluationError(f"{support_file}: cannot use this support file ({exc})") from None
    records = {r["id"]: r for r in read_index(test.root)}
    return list(doc["support"]), {records[i]["sha256"]: i for i in doc["support"]}


def check_leakage(test: TestSplit, seen: dict[str, str]) -> None:
    leaks = [(seen[h], test.hashes[h]) for h in seen if h in test.hashes]
    if leaks:
        pairs = ", ".join(f"{a} = test {b}" for a, b in leaks[:5])
        raise EvaluationError(f"{len(leaks)} image(s) used for training are in the {test.split} split "
                           f"(same content): {pairs}; draw the support set again with `fmclip fewshot`")


def _scorer(method: str, test: TestSplit, run: str | Path | None, checkpoint: str, support: str | None,
            model_config: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """The scorer, and what metrics.json records about where it came from."""
    from model import FusionMedCLIPConfig, load_checkpoint

    from .scorers import ORGANS, ModelScorer, PatchCoreScorer, zero_shot_model

    info: dict[str, Any] = {"method": method}
    if method == "model":
        if run is None:
            raise EvaluationError("evaluating a trained model needs its run folder")
        record = run_record(run)
        path = checkpoint_path(run, checkpoint)
        seen = source_hashes(record["cache"]["train"]["path"])
        info.update(run=str(Path(run).resolve()), checkpoint=str(path.resolve()),
                    epoch=torch.load(path, map_location="cpu", weights_only=True).get("extra", {}).get("epoch"),
                    support_ids=sorted(seen.values()))
        check_leakage(test, seen)
        return ModelScorer(load_checkpoint(path), device), info
    if model_config is None:
        if run is None:
            raise EvaluationError(f"--method {method} needs the backbone: --run RUN or model.* settings")
        model_config = FusionMedCLIPConfig.from_dict(run_record(run)["config"]["model"])
    info["backbone"] = {"arch": model_config.arch, "pretrained": model_config.pretrained}
    if method == "zeroshot":
        organ = ORGANS.get(test.records[0].get("modality"), "tissue")
        info["prompts"] = [f"a photo of a normal {organ}", f"a photo of a abnormal {organ}"]
        if support:
            ids, seen = support_of(test, support)
            check_leakage(test, seen)
            info["support_ids"] = ids
        return ModelScorer(zero_shot_model(model_config, organ), device, name="zeroshot"), info
    if not support:
        raise EvaluationError("--method patchcore needs --support FILE (its memory bank is the support images)")
    ids, seen = support_of(test, support)
    check_leakage(test, seen)
    info["support_ids"] = ids
    from dataprep import read_index

    records = {r["id"]: r for r in read_index(test.root)}
    images = torch.from_numpy(np.stack([test.image(records[i]) for i in ids]))[:, None]
    return PatchCoreScorer(model_config, images, device), info


def evaluate(*, data: str | Path, out: str | Path, method: str = "model", run: str | Path | None = None,
             checkpoint: str = "best", split: str = "test", support: str | None = None, model_config: Any = None,
             device: str | None = None, batch: int = 16, overlays: int = 4, seed: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Score the split with ``method``, write the outputs into ``out``; returns metrics.json's content."""
    from tqdm import tqdm

    if method not in METHODS:
        raise EvaluationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    test = TestSplit(data, split)
    if set(test.labels.tolist()) != {0, 1}:
        raise EvaluationError(f"{test.root}: split {split!r} needs normal and abnormal images, "
                              f"has labels {sorted(set(test.labels.tolist()))}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorer, info = _scorer(method, test, run, checkpoint, support, model_config, device)
    maps, scores, masks = [], [], []
    with tqdm(total=len(test), unit="image", desc=f"evaluate {method}", disable=not progress) as bar:
        for records, images, mask in test.batches(batch):
            if images.shape[-1] != scorer.image_size:
                raise EvaluationError(f"{test.root}: images of {images.shape[-1]} px, the model takes "
                                   f"{scorer.image_size}; prepare the dataset with --size {scorer.image_size}")
            m, s = scorer.score(images)
            maps.append(m)
            scores.append(s)
            masks.append(mask)
            bar.update(len(records))
    amap, score, gt = np.concatenate(maps), np.concatenate(scores), np.concatenate(masks)
    labels = test.labels
    metrics = image_metrics(score, labels) if scorer.probabilities else _image_metrics_of_distances(score, labels)
    notes = [] if scorer.probabilities else ["image_ECE: the scores are distances, not probabilities"]
    if test.has_masks:
        metrics.update(pixel_metrics(amap, gt))
    else:
        notes.append(test.mask_note)
    result = {**metrics, **info, "dataset": test.identity, "split": split, "images": len(test),
              "normal": int((labels == 0).sum()), "abnormal": int((labels == 1).sum()), "notes": notes}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    with open(out / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "gt_label", "pred_score"])
        for r, s in zip(test.records, score):
            writer.writerow([r["id"], r["image"], int(r["label"]), f"{float(s):.6g}"])
    _pictures(out, test, amap, score, gt, scorer.probabilities, overlays, seed, method)
    return result


def _image_metrics_of_distances(score: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from .metrics import average_precision, f1_max, roc_auc

    f1, threshold = f1_max(score, labels)
    return {"image_AUROC": roc_auc(score, labels), "image_AUPR": average_precision(score, labels),
            "image_F1Max": f1, "image_F1Max_threshold": threshold, "image_ECE": None}


def _pictures(out: Path, test: TestSplit, amap: np.ndarray, score: np.ndarray, gt: np.ndarray,
              probabilities: bool, count: int, seed: int, label: str) -> None:
    import cv2

    from .reports import draw_curve, draw_reliability, grid, overlay

    fpr, tpr, _ = roc_curve(score, test.labels)
    draw_curve([(fpr, tpr, label)], "ROC (image)", "false positive rate", "true positive rate", out / "roc.png")
    if probabilities:
        draw_reliability(reliability_bins(score, test.labels), out / "reliability.png", label)
    order = np.argsort(-score, kind="stable")
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[int]] = {"highest": list(order[:count]), "lowest": list(order[::-1][:count])}
    for name, value in (("normal", 0), ("abnormal", 1)):
        pool = np.flatnonzero(test.labels == value)
        chosen[f"random_{name}"] = list(rng.choice(pool, min(count, len(pool)), replace=False))
    vmin, vmax = (0.0, 1.0) if probabilities else (float(amap.min()), float(amap.max()))
    folder = out / "overlays"
    folder.mkdir(exist_ok=True)
    tiles = []
    for group, rows in chosen.items():
        for rank, i in enumerate(rows):
            r = test.records[i]
            kind = "abnormal" if r["label"] else "normal"
            tile = overlay(test.image(r), gt[i], amap[i], vmax, vmin, f"{score[i]:.3g} {kind} {group}")
            cv2.imwrite(str(folder / f"{group}_{rank}_{Path(r['id']).name}.png"), tile)
            tiles.append(tile)
    cv2.imwrite(str(out / "overlays.png"), grid(tiles, columns=4))
