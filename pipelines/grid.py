"""The k x seeds protocol under ``fmclip protocol``: for every cell, draw, generate, train, evaluate, baselines.

    results = run_grid("prepared/brainmri", ks=[4, 8, 16, 32], seeds=[0, 1, 2], config=load_config(...),
                       out="protocol/brainmri")

Cell ``k{K}_seed{S}/`` holds ``support.json`` (the seeded draw, leakage-checked), ``cache.zarr`` (the
method's run: ``train.epochs`` x ``train.epoch_samples`` samples, by default 200 k), ``run/`` (the trained
run; ``best.pt`` chosen on held-out synthetic anomalies), ``eval_model/``, ``eval_zeroshot/``,
``eval_patchcore/`` (the same test split, backbone and draw), and ``done.json`` last. A killed protocol
resumes: finished cells are kept as they are, an unfinished cell goes on where it stopped (generate and train
resume themselves). ``results.csv`` has one row per cell and method with every metric; ``results.md`` the mean
+- std over seeds per k and method, with ECE beside AUROC and the number of seeds of each cell.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

METHODS = ("model", "zeroshot", "patchcore")
LABELS = {"model": "FusionMedCLIP (ours)", "zeroshot": "zero-shot CLIP", "patchcore": "PatchCore-style"}


def cells(ks: list[int], seeds: list[int], out: str | Path) -> list[dict[str, Any]]:
    return [{"k": k, "seed": s, "dir": Path(out) / f"k{k}_seed{s}"} for k in ks for s in seeds]


def _trained(run: Path, epochs: int) -> bool:
    rows = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return bool(rows) and json.loads(rows[-1])["epoch"] >= epochs


def run_cell(data: str | Path, cell: dict[str, Any], config: dict[str, Any], progress: bool = True) -> list[dict]:
    """One (k, seed) cell, resumed where it stopped; returns its rows (one per method)."""
    import copy

    import dataprep as dp

    from .evaluation import evaluate
    from .generate import generate_cache
    from .train_config import model_config
    from .trainer import train

    folder: Path = cell["dir"]
    folder.mkdir(parents=True, exist_ok=True)
    support = dp.write_support(dp.draw_support(data, cell["k"], cell["seed"]), folder / "support.json")
    cfg = copy.deepcopy(config)
    cfg["train"]["seed"] = cell["seed"]
    samples = cfg["train"]["epochs"] * int(cfg["train"]["epoch_samples"] or cell["k"])
    cache = folder / "cache.zarr"
    generate_cache(data, cache, samples=samples, seed=cell["seed"], size=cfg["model"]["image_size"], support=support,
                   progress=progress)
    cfg["data"]["cache"] = str(cache.resolve())
    run = folder / "run"
    if not _trained(run, cfg["train"]["epochs"]):
        train(cfg, out=folder, name="run", resume=(run / "config.yaml").is_file(), progress=progress)
    rows = []
    for method in METHODS:
        target = folder / f"eval_{method}"
        if (target / "metrics.json").is_file():
            result = json.loads((target / "metrics.json").read_text())
        else:
            result = evaluate(data=data, out=target, method=method, run=run, support=str(support),
                              model_config=model_config(cfg), progress=progress)
        rows.append({"k": cell["k"], "seed": cell["seed"], "method": method,
                     **{key: v for key, v in result.items() if key.startswith(("image_", "pixel_"))}})
    (folder / "done.json").write_text(json.dumps(rows, indent=2))
    return rows


def run_grid(data: str | Path, ks: list[int], seeds: list[int], config: dict[str, Any], out: str | Path,
             progress: bool = True) -> list[dict]:
    """Every cell (finished ones read back), then results.csv and results.md; returns every row."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for cell in cells(ks, seeds, out):
        done = cell["dir"] / "done.json"
        rows += json.loads(done.read_text()) if done.is_file() else run_cell(data, cell, config, progress)
        write_results(out, rows)
    return rows


def write_results(out: Path, rows: list[dict]) -> None:
    keys = sorted({key for r in rows for key in r} - {"k", "seed", "method"})
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["k", "seed", "method", *keys])
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(results_table(rows))


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} +- {100 * std:.1f}"


def results_table(rows: list[dict]) -> str:
    """Per metric, a table of methods by k: mean +- std over seeds (x 100), with the number of seeds."""
    ks = sorted({r["k"] for r in rows})
    lines = ["# Results", "", "Mean +- standard deviation over seeds (sample std), x 100; n: seeds in the cell.", ""]
    for metric, title in (("image_AUROC", "Image AUROC (image ECE)"), ("pixel_AUROC", "Pixel AUROC"),
                          ("pixel_AUPRO", "Pixel AUPRO"), ("image_AUPR", "Image AUPR")):
        if not any(r.get(metric) is not None for r in rows):
            continue
        lines += [f"## {title}", "", "| method | " + " | ".join(f"k = {k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for method in METHODS:
            cells_ = []
            for k in ks:
                group = [r for r in rows if r["k"] == k and r["method"] == method and r.get(metric) is not None]
                text = f"{_mean_std([r[metric] for r in group])} (n={len(group)})"
                if metric == "image_AUROC":
                    ece = [r["image_ECE"] for r in group if r.get("image_ECE") is not None]
                    text += f" (ECE {_mean_std(ece)})" if ece else " (ECE -)"
                cells_.append(text)
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells_) + " |")
        lines.append("")
    return "\n".join(lines)
