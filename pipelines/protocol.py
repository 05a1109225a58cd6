"""``fmclip protocol --data PREPARED --k 4 8 16 32 --seeds 0 1 2 [--config CONFIG.yaml] [key=value ...] --out DIR``:
the k x seeds table. For each cell: a seeded support draw, a cache, a trained run, its evaluation and both
baselines on the same draw; ``DIR/results.csv`` and ``DIR/results.md``. A killed protocol resumes cell by
cell. ``--dry-run`` prints the grid and where each cell's files go. The job is ``pipelines.grid.run_grid``.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides (as fmclip train)")
    parser.add_argument("--data", required=True, help="prepared dataset (made by `fmclip prepare`)")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 16, 32], help="support sizes (default 4 8 16 32)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--config", default=None, help="YAML training config (sections model, train, data)")
    parser.add_argument("--out", required=True, help="the protocol's folder")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its folders, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dataprep import FewShotError, LeakageError

    from .batches import SplitError
    from .cache import CacheError
    from .grid import cells, run_grid
    from .runs import RunError
    from .sources import DataError
    from .testset import EvaluationError
    from .train_config import ConfigError, load_config
    from .trainer import TrainError

    try:
        config = load_config(args.config, args.overrides)
        grid = cells(args.k, args.seeds, args.out)
        if args.dry_run:
            samples = config["train"]["epochs"]
            print(f"{len(grid)} cells; each: support.json, cache.zarr ({samples} x k samples unless "
                  "train.epoch_samples is set), run/, eval_model/, eval_zeroshot/, eval_patchcore/, done.json")
            for cell in grid:
                state = "done" if (cell["dir"] / "done.json").is_file() else "to do"
                print(f"k={cell['k']} seed={cell['seed']}: {cell['dir']} ({state})")
            return 0
        rows = run_grid(args.data, args.k, args.seeds, config, args.out, progress=not args.no_progress)
    except (ConfigError, TrainError, RunError, SplitError, EvaluationError, DataError, CacheError, FewShotError,
            LeakageError, ValueError) as exc:
        print(f"fmclip protocol: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} rows -> {args.out}/results.csv, {args.out}/results.md")
    return 0
