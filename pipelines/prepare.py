"""``fmclip prepare NAME --root RAW --out PREPARED``: a public dataset, as downloaded, to the
prepared layout (images, masks and anatomy masks at the working size, index, card).

Dataset options go as ``--option KEY=VALUE`` (repeatable), e.g. ``--option uncertain=ones``
for CheXpert or ``--option sequence=t2`` for BraTS; see docs/dataprep.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"fmclip prepare: --option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = _value(value.strip())
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dataprep.datasets import indexers  # the names only: no MONAI import for --help

    parser.add_argument("name", choices=sorted(indexers()), help="dataset layout of the raw folder")
    parser.add_argument("--root", required=True, help="raw dataset folder, as downloaded")
    parser.add_argument("--out", required=True, help="prepared dataset folder (created; resumable)")
    parser.add_argument("--size", type=int, default=224, help="working size in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="worker processes (default: min(4, CPUs))")
    parser.add_argument("--strict", action="store_true", help="fail if any raw file had to be skipped")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option, repeatable (e.g. uncertain=ones, sequence=t2, test_fraction=0.5)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dataprep import PrepareError, prepare_dataset

    options = parse_options(args.option)
    bar = tqdm(total=0, unit="unit", desc=f"prepare {args.name}", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        card = prepare_dataset(args.name, args.root, args.out, size=args.size, workers=args.workers,
                               strict=args.strict, options=options, on_progress=progress)
    except (PrepareError, ValueError, TypeError) as exc:
        bar.close()
        print(f"fmclip prepare: error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    c = card["counts"]
    print(f"prepared {c['total']} images into {args.out}: "
          f"train {c['train']['normal']} normal / {c['train']['abnormal']} abnormal, "
          f"test {c['test']['normal']} normal / {c['test']['abnormal']} abnormal; "
          f"{card['skipped']['count']} files skipped (see {args.out}/skipped.jsonl)")
    dups = card["duplicates_across_splits"]
    if dups["count"]:
        train_id, test_id = dups["pairs"][0]
        print(f"warning: {dups['count']} training images have the same pixels as a test image (first: {train_id} = "
              f"{test_id}); few-shot draws leave them out (card.json duplicates_across_splits)", file=sys.stderr)
    return 0
