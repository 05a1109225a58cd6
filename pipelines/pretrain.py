"""``fmclip pretrain --pairs PAIRS [--val-pairs PAIRS] [--config CONFIG.yaml] [--out runs] [--name NAME]
[key=value ...] [--resume latest]``: stage 1, the vision tower fine-tuned on image-caption pairs (method.md
section 3). See docs/pretrain.md; the job is ``pipelines.pretrainer.pretrain``.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. model.arch=ViT-B-16 train.epochs=20")
    parser.add_argument("--pairs", default=None,
                        help="the training pairs: a CSV (image,caption) or JSON-lines listing, or the folder holding it "
                             "(sets data.pairs)")
    parser.add_argument("--val-pairs", default=None,
                        help="validation pairs (ROCO's validation split); without them a seeded share of --pairs")
    parser.add_argument("--config", default=None, help="YAML config with sections model, train, data")
    parser.add_argument("--out", default="runs", help="folder of run folders")
    parser.add_argument("--name", default=None, help="the run's folder name (default: time, arch and stage)")
    parser.add_argument("--resume", choices=("latest",), default=None,
                        help="continue the run --name from its last finished epoch")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # Imported here: `fmclip pretrain --help` should not wait for torch and open_clip.
    from .pairs import PairsError
    from .pretrain_config import load_pretrain_config
    from .pretrainer import PretrainError, pretrain
    from .runs import RunError
    from .train_config import ConfigError, dump

    overrides = list(args.overrides)
    if args.pairs:
        overrides.append(f"data.pairs={args.pairs}")
    if args.val_pairs:
        overrides.append(f"data.val_pairs={args.val_pairs}")
    try:
        config = load_pretrain_config(args.config, overrides)
        if args.print_config:
            print(dump(config), end="")
            return 0
        path = pretrain(config, out=args.out, name=args.name, resume=args.resume == "latest",
                        progress=not args.no_progress)
    except (ConfigError, PretrainError, PairsError, RunError) as exc:
        print(f"fmclip pretrain: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fmclip pretrain: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{path}: done (best/ is the model: model.pretrained=local-dir:{path / 'best'})")
    return 0
