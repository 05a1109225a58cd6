"""``fmclip train --cache CACHE.zarr [--config CONFIG.yaml] [--out runs] [--name NAME] [key=value ...]
[--resume latest]``: train the adapted CLIP from a cache made by ``fmclip generate``.

Overrides are dotted keys of the config's sections (``model.arch=ViT-B-16 train.epochs=20``); see
docs/train.md. Under torchrun (``torchrun --nproc_per_node=N $(which fmclip) train ...``) each process is
one DDP rank. The job itself is ``pipelines.trainer.train``.
"""
from __future__ import annotations

import argparse
import sys


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training job has (``fmclip train``, ``fmclip pretrain``)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. model.arch=ViT-B-16 train.epochs=20")
    parser.add_argument("--config", default=None, help="YAML config with sections model, train, data")
    parser.add_argument("--out", default="runs", help="folder of run folders (default runs)")
    parser.add_argument("--name", default=None, help="the run's folder name (default: time, arch and stage)")
    parser.add_argument("--resume", choices=("latest",), default=None,
                        help="continue the run --name from its last finished epoch")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_job(command: str, args: argparse.Namespace, overrides: list[str], load, job, errors: tuple) -> int:
    """Load the config (``load(path, overrides)``), print it or run ``job(config, out=, name=, resume=,
    progress=)``; an error of ``errors`` (or an OSError) is one line on stderr and exit code 2."""
    from .runs import RunError
    from .train_config import ConfigError, dump

    try:
        config = load(args.config, overrides)
        if args.print_config:
            print(dump(config), end="")
            return 0
        path = job(config, out=args.out, name=args.name, resume=args.resume == "latest", progress=not args.no_progress)
    except (ConfigError, RunError, *errors) as exc:
        print(f"fmclip {command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fmclip {command}: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{path}: done ({'best/ is the model' if command == 'pretrain' else 'config.yaml, out.log, metrics.jsonl, checkpoints/'})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--cache", default=None, help="the training cache (sets data.cache)")
    parser.add_argument("--val-cache", default=None,
                        help="validate on this second cache (made with another seed) instead of held-out samples")


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `fmclip train --help` should not wait for torch and open_clip.
    from .batches import SplitError
    from .train_config import load_config
    from .trainer import TrainError, train

    overrides = list(args.overrides)
    if args.cache:
        overrides.append(f"data.cache={args.cache}")
    if args.val_cache:
        overrides.append(f"data.val_cache={args.val_cache}")
    return run_job("train", args, overrides, load_config, train, (TrainError, SplitError))
