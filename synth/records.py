"""The parameter record of one synthesised sample: frozen, JSON-serialisable, replayable."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

try:
    import orjson
except ImportError:  # optional: json writes the same records, about 5x slower
    orjson = None

# 0.1.1: guided deformation bounds displacements by an exact, deterministic distance transform
# (OpenCV's differed between processes in the last bits); the 3D Poisson solver's float32 reductions
# change its last bits.
# 0.1.2: guided deformation reads (1 - d^2) ** stiffness from a table, source deformation computes
# d ** (alpha - 1) in float32 (both to within 1e-5 px of the exact warp).
# 0.2.0: every changed pixel is in the mask; lesions cut to the anatomy where the profile says so.
# 0.2.1: the 2D Poisson solve is preconditioned by a multigrid V-cycle (6-7 iterations instead of
# 70-115 on brain slices; results within 0.05 grey levels of the exact solve, before 0.1-0.35).
# 0.2.2: the 2D Poisson solve stops at a per-pixel residual of 2e-4 instead of 1e-4 (one iteration
# fewer in most cases; results within 0.07 grey levels of the exact solve).
ENGINE_VERSION = "0.2.2"


_SCALARS = frozenset({int, float, str, bool, type(None)})


class FrozenDict(dict):
    """A record's read-only mapping: a dict that refuses every change. Being a dict, JSON
    encoders write it natively; orjson called back into Python for each mapping proxy that
    records used before (4.2 against 2.2 us a record's JSON)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a synthesis record is read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple:  # pickle builds it whole, not item by item
        return FrozenDict, (dict(self),)


def _freeze(value):
    # Scalars are returned inline, not through a call, and lists through list comprehensions
    # (a generator costs more than the short lists of floats records are mostly made of):
    # records are frozen once per sample, and a tenth of the sampling time went here.
    if isinstance(value, dict):
        return FrozenDict({k: v if type(v) in _SCALARS else _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple([v if type(v) in _SCALARS else _freeze(v) for v in value])
    return value


def _thaw(value):
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class SynthesisRecord:
    """Everything needed to reproduce a sample: the task, its drawn parameters, the seed
    they were drawn from, the image's spatial shape, the modality and the engine version.

    Example:
        >>> import numpy as np, synth
        >>> image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
        >>> result = synth.synthesize(image, rng=7)
        >>> record = synth.SynthesisRecord.from_json(result.record.to_json())
        >>> replayed, mask = synth.replay(image, record)
        >>> bool((replayed == result.image).all() and (mask == result.mask).all())
        True
    """

    task: str
    seed: int
    spatial_shape: tuple[int, ...]
    params: Any  # a read-only mapping; use .to_dict() for plain JSON types
    modality: str = "generic"
    source_id: str | None = None
    engine_version: str = ENGINE_VERSION

    def __post_init__(self):
        object.__setattr__(self, "params", _freeze(self.params))
        object.__setattr__(self, "spatial_shape", tuple(int(n) for n in self.spatial_shape))

    @property
    def has_anomaly(self) -> bool:
        return self.task != "identity"

    def to_dict(self) -> dict:
        return self._fields(_thaw(self.params))

    def _fields(self, params: Any) -> dict:
        return {"task": self.task, "seed": int(self.seed), "spatial_shape": list(self.spatial_shape),
                "params": params, "modality": self.modality, "source_id": self.source_id,
                "engine_version": self.engine_version}

    def to_json(self) -> str:
        """``self.to_dict()`` as compact JSON, keys sorted, every float written exactly. The
        params go to the encoder frozen (their mappings are dicts).

        orjson writes it when installed (0.002 ms a record; one is written per cached sample).
        orjson writes NaN and infinity as null, so a record with a null in it, and any value
        orjson refuses, is written by json instead, which keeps them (as NaN and Infinity)."""
        plain = self._fields(self.params)
        if orjson is not None:
            try:
                text = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
            except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a numpy scalar
                pass
            else:
                if b"null" not in text:
                    return text.decode()
        return json.dumps(plain, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> SynthesisRecord:
        known = {"task", "seed", "spatial_shape", "params", "modality", "source_id", "engine_version"}
        missing = {"task", "seed", "spatial_shape", "params"} - set(data)
        if missing:
            raise ValueError(f"synthesis record lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> SynthesisRecord:
        return cls.from_dict(json.loads(text))
