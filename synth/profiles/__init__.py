"""Pathology texture and organ profiles: data, not code paths.

The shipped table (``default.json`` beside this file) covers brain MRI, breast
ultrasound, chest X-ray and a generic profile. Users can register their own with
:func:`register_modality`; tasks copy the values they draw into the record, so a
record replays without the table.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

_TABLE = json.loads((Path(__file__).with_name("default.json")).read_text())

TEXTURE_KINDS = ("fbm", "speckle", "haze")


def modalities() -> list[str]:
    """Names of the modalities that have texture and organ profiles."""
    return sorted(set(_TABLE["textures"]) & set(_TABLE["organs"]))


def texture_profiles(modality: str) -> list[dict]:
    """The pathology texture profiles of ``modality`` (copies)."""
    _check(modality)
    return copy.deepcopy(_TABLE["textures"][modality])


def organ_profile(modality: str) -> dict:
    """The organ profile (guided deformation) of ``modality`` (a copy)."""
    _check(modality)
    return dict(_TABLE["organs"][modality])


def cuts_to_anatomy(modality: str) -> bool:
    """Whether lesions of ``modality`` are cut to the anatomy (mask and change), or only sampled half on it."""
    _check(modality)
    return bool(_TABLE["organs"][modality].get("cut_to_anatomy", False))


def register_modality(name: str, textures: list[dict], organ: dict) -> None:
    """Add or replace a modality's profiles, e.g. from a JSON file of your own."""
    for t in textures:
        if t.get("kind") not in TEXTURE_KINDS:
            raise ValueError(f"texture profile {t.get('name')!r} has kind {t.get('kind')!r}; expected one of {TEXTURE_KINDS}")
    for key in ("radius", "max_displacement", "stiffness"):
        if key not in organ:
            raise ValueError(f"organ profile for {name!r} lacks {key!r}")
    low, high = organ["stiffness"]
    if not 2.0 <= low <= high:
        # the warp tabulates (1 - d^2) ** stiffness; its accuracy bound needs stiffness >= 2
        raise ValueError(f"organ profile for {name!r} has stiffness range {organ['stiffness']}; "
                         "expected 2 <= low <= high")
    _TABLE["textures"][name] = copy.deepcopy(textures)
    _TABLE["organs"][name] = dict(organ)


def _check(modality: str) -> None:
    if modality not in _TABLE["textures"] or modality not in _TABLE["organs"]:
        raise ValueError(f"unknown modality {modality!r}; known: {modalities()}")
