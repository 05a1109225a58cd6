"""The ``fmclip`` command line.

Each subcommand lives in its own module of ``pipelines`` that exposes
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when
their command runs, so ``fmclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a line here to add a command.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipelines.demo", "the main job end to end on the MNI152 brain: prepare, draw, generate, train, evaluate, report"),
    "prepare": ("pipelines.prepare", "bring a public dataset, as downloaded, to the prepared layout"),
    "fewshot": ("pipelines.fewshot", "draw a seeded k-shot support set of normal training images"),
    "generate": ("pipelines.generate", "pre-generate a synthetic training set into a sharded zarr cache"),
    "verify": ("pipelines.verify", "check a cache: completeness, shard checksums, regenerated samples"),
    "pretrain": ("pipelines.pretrain", "stage 1: fine-tune the vision tower on medical image-caption pairs (ROCO)"),
    "train": ("pipelines.train", "train the adapted CLIP from a cache: run folder, checkpoints, resume, DDP"),
    "evaluate": ("pipelines.evaluate", "measure a run (or a zero-shot / PatchCore baseline) on a test split"),
    "protocol": ("pipelines.protocol", "the k x seeds table: draw, generate, train, evaluate and baselines per cell"),
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help states it already or there is
    none worth stating (None, False: a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        return f"{text} (default: %(default)s)"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("fusionmedclip")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmclip", description="fusionmedclip: few-shot medical anomaly detection. Synthesise anomalies, "
                                   "prepare datasets, train and evaluate an adapted CLIP.")
    parser.add_argument("--version", action="version", version=f"fmclip {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "--version":
        print(f"fmclip {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    command_parser = argparse.ArgumentParser(prog=f"fmclip {name}", description=COMMANDS[name][1],
                                             formatter_class=DefaultsHelpFormatter)
    module.add_arguments(command_parser)
    args = command_parser.parse_intermixed_args(argv[1:])  # train takes key=value overrides anywhere
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
