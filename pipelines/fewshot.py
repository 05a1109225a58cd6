"""``fmclip fewshot PREPARED --k K --seed S [--out FILE]``: draw a seeded k-shot support set of
normal training images, refusing any image whose content also occurs in the test split.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prepared", help="prepared dataset folder (made by `fmclip prepare`)")
    parser.add_argument("--k", type=int, required=True, help="number of normal support images")
    parser.add_argument("--seed", type=int, required=True, help="seed of the draw")
    parser.add_argument("--out", default=None, help="support file (default PREPARED/fewshot/k{K}_seed{S}.json)")


def run(args: argparse.Namespace) -> int:
    from dataprep import (
        FewShotError,
        LeakageError,
        PrepareError,
        default_support_path,
        draw_support,
        write_support,
    )

    try:
        doc = draw_support(args.prepared, args.k, args.seed)
    except (FewShotError, LeakageError, PrepareError) as exc:
        print(f"fmclip fewshot: error: {exc}", file=sys.stderr)
        return 1
    path = write_support(doc, args.out or default_support_path(args.prepared, args.k, args.seed))
    print(f"{len(doc['support'])} support images (k={args.k}, seed={args.seed}, pool {doc['pool_size']}, "
          f"{len(doc['excluded_for_leakage'])} excluded for leakage) -> {path}")
    return 0
