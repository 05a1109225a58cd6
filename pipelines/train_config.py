"""The training config: sections ``model`` (every ``FusionMedCLIPConfig`` field), ``train`` and ``data``,
read from YAML (``yaml.safe_load``) and changed by dotted overrides as anomalib users know them::

    config = load_config("train.yaml", ["model.arch=ViT-B-16", "train.epochs=20", "train.lr.prompts=1e-4"])

An unknown section or key is refused with the valid keys of its section. Values of overrides are YAML
(``train.val_tasks=[density]``, ``model.pretrained=null``) and are brought to the default's type
(``1e-4`` is a float, as the text reads, although YAML 1.1 makes it a string).

Example:
    >>> cfg = load_config(None, ["train.epochs=3", "model.stage=3"])
    >>> cfg["train"]["epochs"], cfg["model"]["stage"], cfg["train"]["batch_size"]
    (3, 3, 8)
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from model import LEARNING_RATES, FusionMedCLIPConfig
from model.losses import FOCAL_TARGETS

from .cache import METHOD_EPOCHS

TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    # Length: `epochs` epochs of `epoch_samples` samples each (null: the cache's number of source
    # images k, method.md's epoch of one pass over the k support images): 200 k samples by default.
    "epochs": METHOD_EPOCHS,
    "epoch_samples": None,
    "batch_size": 8,  # global: split evenly over DDP ranks
    "lr": dict(LEARNING_RATES),
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1.0e-8,
    "schedule": "constant",  # or warmup_cosine
    "warmup_epochs": 0,
    "min_lr_ratio": 0.0,  # warmup_cosine's floor, as a share of each group's rate
    "precision": "auto",  # auto: amp_bf16 on CUDA, fp32 on CPU
    "device": "auto",  # auto: cuda when available, else cpu
    "threads": None,  # null: the cores this process may use, shared among the ranks on the machine
    "focal_on": "pixels",  # or image: the dissertation's eq. 15 (docs/train.md)
    "w_img": 1.0,
    "w_seg": 1.0,
    "focal_gamma": 2.0,
    # Validation (never the test set): held-out task families of the cache, or a seeded share of it.
    "val_tasks": [],
    "val_fraction": 0.05,
    "val_samples": 256,
    "val_every": 10,  # epochs; the last epoch is always validated
    "select_metric": "image_AUROC",  # or pixel_AUROC: chooses best.pt
    "keep": 2,  # epoch_N.pt files kept
    "feature_cache": "auto",  # stage 2: auto | off
    "feature_cache_gb": 8.0,
}
DATA_DEFAULTS: dict[str, Any] = {
    "cache": None,
    "val_cache": None,
    "workers": None,  # null: none on CPU (reading is a fraction of a percent of a step), 2 on CUDA
}
SCHEDULES = ("constant", "warmup_cosine")
PRECISIONS = ("auto", "amp_bf16", "fp32")
SELECT_METRICS = ("image_AUROC", "pixel_AUROC")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


def default_config() -> dict[str, Any]:
    return {"model": FusionMedCLIPConfig().to_dict(), "train": copy.deepcopy(TRAIN_DEFAULTS),
            "data": copy.deepcopy(DATA_DEFAULTS)}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` where the text means it (YAML reads 1e-4 as a string)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(default, int) and float(number) != int(number):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return type(default)(number)
    if isinstance(default, str) and isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes as booleans
        return "on" if value else "off"
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    return value


def _merge(target: dict[str, Any], changes: dict[str, Any], where: str, defaults: dict[str, Any]) -> None:
    """Set ``changes`` into ``target`` key by key, in the types of ``defaults``; unknown keys are refused."""
    if not isinstance(changes, dict):
        raise ConfigError(f"{where} must be a mapping, got {changes!r}")
    for key, value in changes.items():
        name = f"{where}.{key}"
        if key not in target:
            raise ConfigError(f"unknown key {name}; valid keys of {where}: {', '.join(sorted(target))}")
        if isinstance(defaults[key], dict) and where != "model":  # nested settings (train.lr); not model.extra
            _merge(target[key], value, name, defaults[key])
        else:
            target[key] = _coerce(name, value, defaults[key])


def _override(config: dict[str, Any], text: str, defaults: dict[str, Any]) -> None:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must read section.key=value")
    path = key.strip().split(".")
    if path[0] not in defaults or len(path) < 2:
        raise ConfigError(f"override {text!r}: the key must start with one of {', '.join(defaults)}")
    value: Any = yaml.safe_load(raw) if raw.strip() else None
    for part in reversed(path[2:]):
        value = {part: value}
    _merge(config[path[0]], {path[1]: value}, path[0], defaults[path[0]])


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                defaults: Callable[[], dict[str, Any]] | None = None,
                checked: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Defaults, then the YAML file's sections, then the overrides; checked as a whole. ``defaults`` and
    ``checked`` are another job's (``fmclip pretrain``); by default those of ``fmclip train``."""
    defaults, checked = defaults or default_config, checked or check
    reference = defaults()
    config = defaults()
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a mapping with sections {', '.join(reference)}")
        for section, values in loaded.items():
            if section not in reference:
                raise ConfigError(f"{path}: unknown section {section!r}; sections: {', '.join(reference)}")
            _merge(config[section], values or {}, section, reference[section])
    for text in overrides:
        _override(config, text, reference)
    checked(config)
    return config


def model_config(config: dict[str, Any]) -> FusionMedCLIPConfig:
    try:
        return FusionMedCLIPConfig.from_dict(config["model"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None


def check(config: dict[str, Any]) -> None:
    """Refuse settings that cannot work, naming the key."""
    model_config(config)
    t = config["train"]
    positive = ("epochs", "batch_size", "val_samples", "val_every", "keep")
    for key in positive:
        if t[key] < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {t[key]}")
    if t["epoch_samples"] is not None and int(t["epoch_samples"]) < 1:
        raise ConfigError(f"train.epoch_samples must be at least 1 or null, got {t['epoch_samples']}")
    for key, allowed in (("schedule", SCHEDULES), ("precision", PRECISIONS), ("select_metric", SELECT_METRICS),
                         ("focal_on", FOCAL_TARGETS), ("feature_cache", ("auto", "off"))):
        if t[key] not in allowed:
            raise ConfigError(f"train.{key} must be one of {', '.join(allowed)}, got {t[key]!r}")
    if not 0.0 <= t["val_fraction"] < 1.0:
        raise ConfigError(f"train.val_fraction must lie in [0, 1), got {t['val_fraction']}")
    if len(t["betas"]) != 2:
        raise ConfigError(f"train.betas must be two numbers, got {t['betas']}")
    if any(v < 0 for v in t["lr"].values()):
        raise ConfigError(f"train.lr must not be negative, got {t['lr']}")


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def differences(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new``."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{where}.{key}" if where else str(key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name)
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
