"""``fmclip pretrain --pairs PAIRS [--val-pairs PAIRS] [--config CONFIG.yaml] [--out runs] [--name NAME]
[key=value ...] [--resume latest]``: stage 1, the vision tower fine-tuned on image-caption pairs (method.md
section 3). See docs/pretrain.md; the job is ``pipelines.pretrainer.pretrain``.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .train import add_run_arguments

    add_run_arguments(parser)
    parser.add_argument("--pairs", default=None,
                        help="the training pairs: a CSV (image,caption) or JSON-lines listing, or the folder holding it "
                             "(sets data.pairs)")
    parser.add_argument("--val-pairs", default=None,
                        help="validation pairs (ROCO's validation split); without them a seeded share of --pairs")


def run(args: argparse.Namespace) -> int:
    # Imported here: `fmclip pretrain --help` should not wait for torch and open_clip.
    from .pairs import PairsError
    from .pretrain_config import load_pretrain_config
    from .pretrainer import PretrainError, pretrain
    from .train import run_job

    overrides = list(args.overrides)
    if args.pairs:
        overrides.append(f"data.pairs={args.pairs}")
    if args.val_pairs:
        overrides.append(f"data.val_pairs={args.val_pairs}")
    return run_job("pretrain", args, overrides, load_pretrain_config, pretrain, (PretrainError, PairsError))
