"""The public face: :func:`synthesize` and :func:`replay` on numpy arrays or torch tensors,
single images or batches, 2D or 3D, with or without channels."""
from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np

from .config import SynthesisConfig
from .engine import pool_for
from .kernels.seeds import entropy_words, spawned_seeds
from .records import SynthesisRecord
from .validation import check_intensities, check_mask_like

LAYOUTS = ("HW", "CHW", "DHW", "CDHW", "BHW", "BCHW", "BDHW", "BCDHW")
_DEFAULT_LAYOUT = {2: "HW", 5: "BCDHW"}


class Synthesis(NamedTuple):
    """Result of :func:`synthesize`: the anomalous image, its mask and the record(s)."""

    image: Any
    mask: Any
    record: Any  # a SynthesisRecord, or a list of them for a batch


def spawn_seeds(seed: int, n: int) -> list[int]:
    """The per-item seeds a batch uses: ``n`` independent 64-bit seeds spawned from ``seed``,
    ``[int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(seed).spawn(n)]``
    computed by a compiled loop."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if n < 0:
        raise ValueError(f"the number of seeds must be non-negative; got {n}")
    return spawned_seeds(entropy_words(int(seed)), np.uint64(0), int(n)).tolist()


def _draw_seed(rng) -> int:
    if rng is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(rng, (int, np.integer)):
        if rng < 0:
            raise ValueError(f"seed must be non-negative; got {rng}")
        return int(rng)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2 ** 63))
    if isinstance(rng, np.random.SeedSequence):
        return int(rng.generate_state(1, np.uint64)[0])
    raise ValueError(f"rng must be None, an int seed, a numpy Generator or SeedSequence; got {type(rng).__name__}")


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


def _as_numpy(x, name: str) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}")


def _like(reference, array: np.ndarray):
    """``array`` in the type, dtype and device of ``reference`` (MetaTensors keep their meta)."""
    if _is_tensor(reference):
        torch = sys.modules["torch"]
        if tuple(array.shape) == tuple(reference.shape):
            out = reference.detach().clone()
        else:
            out = reference.detach().new_empty(array.shape)
        out.copy_(torch.from_numpy(np.ascontiguousarray(array)))
        return out
    if np.issubdtype(reference.dtype, np.floating):
        return array.astype(reference.dtype, copy=False)
    return array


def _resolve_layout(ndim: int, layout: str | None) -> str:
    if layout is None:
        if ndim not in _DEFAULT_LAYOUT:
            raise ValueError(
                f"a {ndim}-dimensional image is ambiguous: pass layout= one of "
                f"{[lay for lay in LAYOUTS if len(lay) == ndim]}")
        return _DEFAULT_LAYOUT[ndim]
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if len(layout) != ndim:
        raise ValueError(f"layout {layout!r} needs a {len(layout)}-dimensional image; got {ndim} dimensions")
    return layout


def _canonical(array: np.ndarray, layout: str) -> np.ndarray:
    """View as (B, C, *spatial)."""
    if "B" not in layout:
        array = array[None]
    if "C" not in layout:
        array = array[:, None]
    return array


def _foreground_batch(foreground, batch: int, spatial, layout: str) -> list:
    """One boolean anatomy mask (or None) per batch item; a single mask serves every item."""
    if foreground is None:
        return [None] * batch
    fg = _as_numpy(foreground, "foreground")
    shape, spatial = tuple(fg.shape), tuple(spatial)
    if shape in (spatial, (1, *spatial)):
        single = check_mask_like(fg.reshape(spatial), spatial, "foreground")
        if not single.any():
            raise ValueError("foreground is empty")
        return [single] * batch
    if "B" not in layout or shape not in ((batch, *spatial), (batch, 1, *spatial)):
        raise ValueError(f"foreground shape {shape} does not match the image's spatial shape {spatial}"
                         + (f" (or a batch of {batch} of them)" if "B" in layout else ""))
    items = [check_mask_like(item, spatial, "foreground") for item in fg.reshape((batch, *spatial))]
    for i, item in enumerate(items):
        if not item.any():
            raise ValueError(f"foreground is empty for batch item {i}")
    return items


def synthesize(image, *, rng=None, foreground=None, source=None, layout: str | None = None,
               config: SynthesisConfig | None = None, task: str | None = None,
               source_id: str | None = None) -> Synthesis:
    """Turn a normal image into an anomalous one with an exact mask and a replayable record.

    ``image``: float intensities in [0, 1], numpy or torch, laid out as ``layout``
    (HW, CHW, DHW, CDHW or a batch of them: BHW, BCHW, BDHW, BCDHW). 2D (HW) and 5D
    (BCDHW) inputs need no layout; other ranks are ambiguous and need one.
    ``rng``: None, an int seed, a numpy Generator or SeedSequence. A batch draws
    item seeds with :func:`spawn_seeds`, so it equals a loop over its items.
    ``foreground``: the anatomy (bool or 0/1), spatial shape (or one per batch item).
    ``source``: another normal image (same layout and shape) for CutPaste/Poisson
    patches; the image itself when None. ``task``: force one task by name.

    Returns ``Synthesis(image, mask, record)``: the image in the input's type, dtype and
    device; the mask float32 in {0, 1} with one channel where the image has channels;
    a :class:`SynthesisRecord` (a list of them for a batch).

    Example:
        >>> import numpy as np, synth
        >>> image = np.random.default_rng(0).random((96, 96), dtype=np.float32)
        >>> out, mask, record = synth.synthesize(image, rng=1, task="poisson")
        >>> out.shape == image.shape and set(np.unique(mask)) <= {0.0, 1.0}
        True
    """
    layout = _resolve_layout(np.ndim(image), layout)
    array = check_intensities(_as_numpy(image, "image"))
    batch = _canonical(array.astype(np.float32, copy=False), layout)
    spatial = batch.shape[2:]
    if "D" in layout and len(spatial) != 3 or "D" not in layout and len(spatial) != 2:
        raise ValueError(f"layout {layout!r} does not match an image of shape {array.shape}")
    foregrounds = _foreground_batch(foreground, batch.shape[0], spatial, layout)
    sources = [None] * batch.shape[0]
    if source is not None:
        src = check_intensities(_as_numpy(source, "source"), "source")
        if src.shape != array.shape:
            raise ValueError(f"source shape {src.shape} does not match image shape {array.shape}")
        src = _canonical(src.astype(np.float32, copy=False), layout)
        sources = [np.ascontiguousarray(s) for s in src]
    pool = pool_for(config)
    if "B" in layout:
        seeds = spawn_seeds(_draw_seed(rng), batch.shape[0])
    else:
        seeds = [_draw_seed(rng)]
    mask_shape = (batch.shape[0], 1) + tuple(spatial)
    outs = np.empty(batch.shape, np.float32)
    masks = np.empty(mask_shape, np.float32)
    records = []
    for i, seed in enumerate(seeds):
        item = np.ascontiguousarray(batch[i])
        records.append(pool(item, seed, foregrounds[i], sources[i], task, source_id, outs[i], masks[i, 0])[2])
    out_image = _like(image, _uncanonical(outs, layout))
    out_mask = _uncanonical(masks, layout)
    if _is_tensor(image):
        out_mask = _like_mask(image, out_mask)
    return Synthesis(out_image, out_mask, records if "B" in layout else records[0])


def _uncanonical(array: np.ndarray, layout: str) -> np.ndarray:
    if "C" not in layout:
        array = array[:, 0]
    if "B" not in layout:
        array = array[0]
    return array


def _like_mask(reference, mask: np.ndarray):
    torch = sys.modules["torch"]
    return torch.from_numpy(np.ascontiguousarray(mask)).to(reference.device)


def replay(image, record: SynthesisRecord, *, foreground=None, source=None, layout: str | None = None,
           config: SynthesisConfig | None = None):
    """Apply a record to the image it was made from; returns (anomalous image, mask),
    identical to what :func:`synthesize` returned. Single images only (loop for batches).

    ``foreground`` is needed for guided-deformation records sampled with one, ``source``
    for CutPaste/Poisson records made from another image.
    """
    layout = _resolve_layout(np.ndim(image), layout)
    if "B" in layout:
        raise ValueError("replay takes one image; loop over a batch with its list of records")
    if isinstance(record, (str, bytes)):
        record = SynthesisRecord.from_json(record)
    elif isinstance(record, dict):
        record = SynthesisRecord.from_dict(record)
    array = check_intensities(_as_numpy(image, "image"))
    item = np.ascontiguousarray(_canonical(array.astype(np.float32, copy=False), layout)[0])
    fg = _foreground_batch(foreground, 1, item.shape[1:], layout)[0]
    src = None
    if source is not None:
        src = np.ascontiguousarray(_canonical(check_intensities(_as_numpy(source, "source"), "source")
                                              .astype(np.float32, copy=False), layout)[0])
    out, mask = pool_for(config).apply(item, record, fg, src)
    out_image = _like(image, _uncanonical(out[None], layout))
    out_mask = _uncanonical(mask[None, None], layout)
    return out_image, (_like_mask(image, out_mask) if _is_tensor(image) else out_mask)
