"""Procedural pathology textures, drawn from a modality's profile (see ``synth.profiles``)."""
from __future__ import annotations

import numpy as np

from ..kernels import gaussian_blur
from ..profiles import texture_profiles
from .draws import cumulative, uniform, weighted_index
from .masks import perlin_field


def sample_texture(rng: np.random.Generator, modality: str) -> dict:
    """Pick a texture profile of ``modality`` and draw its values; JSON-ready."""
    profiles = texture_profiles(modality)
    profile = profiles[weighted_index(rng, cumulative(p.get("weight", 1.0) for p in profiles))]
    kind = profile["kind"]
    drawn = {"name": profile["name"], "kind": kind, "seed": int(rng.integers(2 ** 63)),
             "level": uniform(rng, profile["level"])}
    if kind == "fbm":
        drawn["octaves"] = int(rng.integers(profile["octaves"][0], profile["octaves"][1] + 1))
        drawn["lattice"] = int(2 ** rng.integers(profile["lattice_exponent"][0], profile["lattice_exponent"][1] + 1))
        drawn["persistence"] = uniform(rng, profile["persistence"])
        drawn["contrast"] = uniform(rng, profile["contrast"])
    elif kind == "speckle":
        drawn["grain_px"] = uniform(rng, profile["grain_px"])
        drawn["strength"] = uniform(rng, profile["strength"])
    elif kind == "haze":
        drawn["lattice"] = int(2 ** rng.integers(profile["lattice_exponent"][0], profile["lattice_exponent"][1] + 1))
        drawn["variation"] = uniform(rng, profile["variation"])
        drawn["grain"] = uniform(rng, profile["grain"])
    else:
        raise ValueError(f"unknown texture kind {kind!r} in profile {profile['name']!r}")
    return drawn


def render_texture(params: dict, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """The texture T' (float32 in [0, 1]) on a window of ``shape``."""
    g = np.random.default_rng(params["seed"])
    kind = params["kind"]
    ndim = len(shape)
    if kind == "fbm":
        rotation = 0.0 if ndim == 2 else np.eye(3)
        total = perlin_field(shape, [params["lattice"]] * ndim, rotation, int(g.integers(2 ** 63)),
                             octaves=params["octaves"], persistence=params["persistence"])
        peak = float(np.abs(total).max()) or 1.0
        texture = params["level"] + params["contrast"] * 0.5 * total / peak
    elif kind == "speckle":
        # fully developed speckle: the magnitude of a complex Gaussian field (Rayleigh),
        # blurred to the grain size and normalised to mean 1
        amplitude = np.hypot(g.standard_normal(shape, np.float32), g.standard_normal(shape, np.float32))
        amplitude = gaussian_blur(amplitude, max(0.3, params["grain_px"] * scale))
        amplitude /= max(float(amplitude.mean()), 1e-6)
        texture = params["level"] * (1.0 + params["strength"] * (amplitude - 1.0))
    else:  # haze
        rotation = 0.0 if ndim == 2 else np.eye(3)
        smooth = perlin_field(shape, [params["lattice"]] * ndim, rotation, int(g.integers(2 ** 63)))
        texture = (params["level"] + params["variation"] * smooth / 0.7
                   + params["grain"] * g.standard_normal(shape, np.float32))
    return np.clip(texture, 0.0, 1.0).astype(np.float32)
