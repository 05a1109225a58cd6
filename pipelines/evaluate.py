"""``fmclip evaluate RUN --data PREPARED [--checkpoint best|latest|PATH] [--split test] [--out DIR]``: measure a
trained run on a prepared dataset's test split; ``fmclip evaluate --method zeroshot|patchcore --support FILE
--data PREPARED --out DIR [--run RUN | model.key=value ...]``: the two baselines on the same backbone and draw.

Writes into ``RUN/eval/<dataset>_<split>/`` (or ``--out``): metrics.json, scores.csv, overlays.png and
overlays/, roc.png, reliability.png; prints a summary. The job is ``pipelines.evaluation.evaluate``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, help="the run folder (made by `fmclip train`)")
    parser.add_argument("overrides", nargs="*", metavar="model.key=value",
                        help="backbone of a baseline without --run, e.g. model.arch=ViT-B-16 model.pretrained=openai")
    parser.add_argument("--data", required=True, help="prepared dataset (made by `fmclip prepare`)")
    parser.add_argument("--split", default="test", help="the split to score (default test)")
    parser.add_argument("--checkpoint", default="best", help="best (default), latest, or a checkpoint file")
    parser.add_argument("--method", choices=("model", "zeroshot", "patchcore"), default="model",
                        help="the trained run (default), or a baseline on the same backbone")
    parser.add_argument("--support", default=None, help="support file of the draw (patchcore's memory bank)")
    parser.add_argument("--out", default=None, help="output folder (default RUN/eval/<dataset>_<split>)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=16, help="images scored together")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_out(run: str | None, data: str, split: str, method: str) -> Path:
    name = f"{Path(data).resolve().name}_{split}"
    if run is None:
        raise ValueError("--out is needed without a run folder")
    return Path(run) / "eval" / (name if method == "model" else f"{name}_{method}")


def summary_lines(result: dict) -> list[str]:
    keys = ("image_AUROC", "image_AUPR", "image_F1Max", "image_ECE", "pixel_AUROC", "pixel_AUROC_anomalous",
            "pixel_AUPRO", "pixel_F1Max")
    cells = [f"{k} {result[k]:.4f}" for k in keys if result.get(k) is not None]
    lines = [f"{result['method']} on {result['dataset'].get('name')} {result['split']}: {result['images']} images "
             f"({result['normal']} normal, {result['abnormal']} abnormal)", ", ".join(cells)]
    return lines + [f"note: {n}" for n in result["notes"]]


def run(args: argparse.Namespace) -> int:
    from .evaluation import evaluate
    from .testset import EvaluationError
    from .train_config import ConfigError, load_config, model_config

    if args.run is not None and "=" in args.run and not Path(args.run).exists():
        args.overrides, args.run = [args.run, *args.overrides], None  # no run folder: the first override
    try:
        config = None
        if args.overrides:
            if any(not o.startswith("model.") for o in args.overrides):
                raise ConfigError("evaluate takes model.* settings only")
            config = model_config(load_config(None, args.overrides))
        out = Path(args.out) if args.out else default_out(args.run, args.data, args.split, args.method)
        result = evaluate(data=args.data, out=out, method=args.method, run=args.run, checkpoint=args.checkpoint,
                          split=args.split, support=args.support, model_config=config, device=args.device,
                          batch=args.batch, progress=not args.no_progress)
    except (EvaluationError, ConfigError, ValueError) as exc:
        print(f"fmclip evaluate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fmclip evaluate: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line in summary_lines(result):
        print(line)
    print(f"-> {out}")
    return 0
