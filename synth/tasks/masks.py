"""Anomaly masks: binarised Perlin noise, ellipses and rectangles, with a foreground
constraint. A Perlin lesion is the image-wide Perlin field (lattice 2^U{0..5} cells
per axis, rotated) thresholded inside an elliptical envelope of the same size rule
as the shapes: irregular like DRAEM's masks, but one compact lesion whose cost
scales with its size. Sampling returns JSON-ready parameters; :func:`render` turns parameters
back into the same mask, bit for bit, in any process."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import kernels
from ..config import MaskConfig
from .draws import cumulative, uniform, weighted_index
from .geometry import as_list, grow, half_extent, identity, inverse, random_rotation, shape_matrix, window

SHAPE_KINDS = ("ellipse", "rectangle")
MASK_KINDS = ("perlin",) + SHAPE_KINDS


@dataclass
class Lesion:
    """A rendered anomaly mask: a boolean window of the image and where it sits."""

    params: dict
    mask: np.ndarray | None  # bool, the window (None when rendered without its raster)
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    inv: np.ndarray | None = field(default=None, repr=False)  # see ``inverse``

    @functools.cached_property
    def window(self):
        return window(self.lo, self.hi)

    @property
    def shape(self) -> tuple[int, ...]:
        """The window's shape."""
        return tuple([b - a for a, b in zip(self.lo, self.hi)])

    @property
    def inverse(self) -> np.ndarray:
        """The inverse shape matrix: lesion coordinates of an offset from the centre (kept
        from rendering, where shapes need it too)."""
        if self.inv is None:
            self.inv = inverse(self.params["matrix"])
        return self.inv

    def grown(self, margin: int, spatial_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The lesion's window grown by ``margin`` pixels, clipped to the image: (lo, hi)."""
        return grow(self.lo, self.hi, margin, spatial_shape)

    def inside(self, lo) -> tuple[slice, ...]:
        """Where the lesion's window sits within a larger window starting at ``lo``."""
        return tuple(slice(a - b, a - b + n) for a, b, n in zip(self.lo, lo, self.mask.shape))

    def mask_in(self, lo, hi, dtype=bool) -> np.ndarray:
        """The lesion mask placed in the larger window [lo, hi)."""
        out = np.zeros(tuple(b - a for a, b in zip(lo, hi)), dtype)
        out[self.inside(lo)] = self.mask
        return out

    @property
    def centre(self) -> np.ndarray:
        if "centre" in self.params:
            return np.asarray(self.params["centre"])
        return (np.asarray(self.lo) + np.asarray(self.hi) - 1) / 2.0


# ----------------------------------------------------------------------------- rendering

def perlin_tables(noise_seed: int, ndim: int) -> tuple[np.ndarray, ...]:
    """The permutation and the 256 unit gradients that ``noise_seed`` stands for."""
    g = np.random.default_rng(noise_seed)
    perm = g.permutation(kernels.TABLE).astype(np.int64)
    if ndim == 2:
        angle = g.uniform(0.0, 2.0 * math.pi, size=kernels.TABLE)
        return perm, np.sin(angle), np.cos(angle)
    v = g.normal(size=(kernels.TABLE, 3))
    return perm, v / np.linalg.norm(v, axis=1, keepdims=True)


def perlin_field(spatial_shape, lattice, rotation, noise_seed: int, lo=None, hi=None, octaves: int = 1,
                 persistence: float = 0.5) -> np.ndarray:
    """(Fractal) Perlin noise, float32, of the frame ``spatial_shape`` on the window [lo, hi).
    ``rotation`` is an angle (2D) or a 3x3 matrix (3D)."""
    ndim = len(spatial_shape)
    lo = (0,) * ndim if lo is None else tuple(lo)
    hi = tuple(spatial_shape) if hi is None else tuple(hi)
    out = np.empty(tuple(b - a for a, b in zip(lo, hi)), np.float32)
    tables = perlin_tables(noise_seed, ndim)
    if ndim == 2:
        kernels.perlin_2d(out, lo[0], lo[1], spatial_shape[0], spatial_shape[1], lattice[0], lattice[1],
                          *tables, math.cos(rotation), math.sin(rotation), octaves, persistence)
    else:
        kernels.perlin_3d(out, np.array(lo, np.int64), np.array(spatial_shape, np.int64),
                          np.array(lattice, np.int64), *tables, np.asarray(rotation, np.float64),
                          octaves, persistence)
    return out


def _shape_box(params, spatial_shape, box: bool):
    """The window (lo, hi) that holds a shape, clipped to the image."""
    centre = params["centre"]
    ext = half_extent(params["matrix"], box)
    lo = tuple(max(0, int(math.floor(c - e))) for c, e in zip(centre, ext))
    hi = tuple(min(n, int(math.ceil(c + e)) + 1) for c, e, n in zip(centre, ext, spatial_shape))
    if any(b <= a for a, b in zip(lo, hi)):
        raise ValueError("the mask's shape lies outside the image")
    return lo, hi


def _as_3d(params, lo):
    """Centre, inverse matrix and origin padded to 3D (2D gets a unit depth axis)."""
    ndim = len(lo)
    inv = np.eye(3)
    inv[3 - ndim:, 3 - ndim:] = inverse(params["matrix"])
    centre = np.zeros(3)
    centre[3 - ndim:] = params["centre"]
    origin = np.zeros(3)
    origin[3 - ndim:] = lo
    return centre, inv, origin


def _blob(params, field, frame, threshold) -> tuple[np.ndarray, int]:
    """Threshold ``field`` inside the envelope; ``frame`` is ``_as_3d(params, lo)``."""
    out = np.empty(field.shape, np.uint8)
    shape3 = (1,) * (3 - field.ndim) + field.shape
    centre, inv, origin = frame
    count = kernels.blob_threshold(field.reshape(shape3), out.reshape(shape3), origin, centre, inv,
                                   params["envelope"], threshold)
    return out.view(bool), count


def _render_perlin(params, spatial_shape):
    """A Perlin lesion: noise of the whole-image lattice, thresholded inside an elliptical
    envelope (so the cost, and the lesion, stay local)."""
    lo, hi = _shape_box(params, spatial_shape, box=False)
    field = perlin_field(spatial_shape, params["lattice"], params["rotation"], params["noise_seed"], lo, hi)
    mask, count = _blob(params, field, _as_3d(params, lo), params["threshold"])
    if count == 0:
        raise ValueError("perlin mask parameters render an empty mask")
    return mask, lo, hi


def _render_shape(params, spatial_shape, raster: bool) -> Lesion:
    box = params["kind"] == "rectangle"
    lo, hi = _shape_box(params, spatial_shape, box)
    inv = inverse(params["matrix"])
    if not raster:
        return Lesion(params, None, lo, hi, inv)
    out = np.zeros(tuple(b - a for a, b in zip(lo, hi)), np.uint8)
    centre = params["centre"]
    if len(spatial_shape) == 2:
        kernels.shape_2d(out, lo[0], lo[1], float(centre[0]), float(centre[1]), inv, box)
    else:
        kernels.shape_3d(out, np.array(lo, np.float64), np.asarray(centre, np.float64), inv, box)
    return Lesion(params, out.view(bool), lo, hi, inv)


def render(params: dict, spatial_shape, raster: bool = True) -> Lesion:
    """Render mask parameters (as sampled) into a :class:`Lesion`; ``raster=False`` places an
    ellipse or rectangle without rasterising it (for tasks that only need its window)."""
    if params["kind"] == "perlin":
        return Lesion(params, *_render_perlin(params, spatial_shape))
    if params["kind"] in SHAPE_KINDS:
        return _render_shape(params, spatial_shape, raster)
    raise ValueError(f"unknown mask kind {params['kind']!r}; expected one of {MASK_KINDS}")


# ----------------------------------------------------------------------------- sampling

def _foreground_fraction(lesion: Lesion, foreground) -> float:
    if foreground is None:
        return 1.0
    inside = np.count_nonzero(foreground[lesion.window] & lesion.mask)
    return inside / max(1, np.count_nonzero(lesion.mask))


def random_foreground_point(rng, foreground: np.ndarray, points: list) -> tuple[int, ...]:
    """A uniform random anatomy pixel: rejection sampling (cheap while the anatomy is a fair
    share of the image), else an index list built once per sample in ``points``."""
    if not points:
        shape = foreground.shape
        for _ in range(32):
            candidate = tuple([int(u * n) for u, n in zip(rng.random(len(shape)).tolist(), shape)])
            if foreground[candidate]:
                return candidate
        points.append(np.argwhere(foreground))
    return tuple(points[0][rng.integers(len(points[0]))].tolist())


def _random_centre(rng, spatial_shape, foreground, points) -> list[float]:
    if foreground is None:
        return [uniform(rng, (0, n - 1)) for n in spatial_shape]
    return [p + uniform(rng, (-0.5, 0.5)) for p in random_foreground_point(rng, foreground, points)]


def _sample_shape(rng, kind, spatial_shape, cfg: MaskConfig, centre, scale):
    ndim = len(spatial_shape)
    extent = cfg.size_base + rng.gamma(cfg.size_gamma_shape, cfg.size_gamma_scale, size=ndim)
    # plain floats: numpy's clip and maximum on two numbers cost more than the whole rendering
    semi = [max(min(max(e, cfg.size_min), cfg.size_max) * n * scale / 2.0, 1.0)
            for e, n in zip(extent.tolist(), spatial_shape)]
    shear = identity(ndim)
    for i in range(ndim):
        for j in range(i + 1, ndim):
            shear[i][j] = uniform(rng, (-cfg.shear, cfg.shear))
    return {"kind": kind, "centre": centre, "matrix": shape_matrix(semi, random_rotation(rng, ndim), shear)}


def _sample_perlin(rng, spatial_shape, cfg: MaskConfig, centre, scale) -> Lesion | None:
    """A Perlin lesion whose threshold covers an accepted share of its envelope, rendered
    while sampling (the same computation :func:`render` repeats from the parameters)."""
    ndim = len(spatial_shape)
    params = _sample_shape(rng, "perlin", spatial_shape, cfg, centre, scale)
    params["lattice"] = [int(2 ** rng.integers(cfg.perlin_min_exponent, cfg.perlin_max_exponent + 1))
                         for _ in range(ndim)]
    params["rotation"] = uniform(rng, (-math.pi, math.pi)) if ndim == 2 else random_rotation(rng, 3)
    params["noise_seed"] = int(rng.integers(2 ** 63))
    params["envelope"] = cfg.perlin_envelope
    lo, hi = _shape_box(params, spatial_shape, box=False)
    field = perlin_field(spatial_shape, params["lattice"], params["rotation"], params["noise_seed"], lo, hi)
    frame = _as_3d(params, lo)  # the same for every threshold tried
    area = _blob(params, field, frame, -np.inf)[1]
    lo_cov, hi_cov = cfg.perlin_coverage
    for _ in range(cfg.threshold_tries):
        threshold = uniform(rng, cfg.perlin_threshold)
        mask, count = _blob(params, field, frame, threshold)
        if area and lo_cov <= count / area <= hi_cov:
            params["threshold"] = threshold
            return Lesion(params, mask, lo, hi)
    return None


def _deepest_point_shape(foreground, spatial_shape):
    """Fallback: the largest ellipse centred on the deepest foreground point (fully inside)."""
    import scipy.ndimage as ndi  # only on this rare path

    depth = ndi.distance_transform_edt(foreground)
    point = np.unravel_index(int(np.argmax(depth)), depth.shape)
    radius = max(0.5, float(depth[point]) - 1.0)
    return {"kind": "ellipse", "centre": as_list(np.asarray(point, np.float64)),
            "matrix": as_list(np.eye(len(spatial_shape)) * radius)}


def sample_lesions(rng: np.random.Generator, spatial_shape, foreground, cfg: MaskConfig,
                   kinds: dict[str, float], count: int, points: list | None = None) -> list[Lesion]:
    """Sample ``count`` anomaly masks. ``kinds`` weights the mask kinds; each mask has at
    least ``cfg.foreground_fraction`` of its pixels on ``foreground`` (when given)."""
    names = [k for k, w in kinds.items() if w > 0]
    weights = cumulative(kinds[k] for k in names)
    points = [] if points is None else points
    lesions = []
    for _ in range(count):
        lesion = None
        for attempt in range(cfg.max_tries):
            kind = names[weighted_index(rng, weights)]
            centre = _random_centre(rng, spatial_shape, foreground, points)
            if kind == "perlin":
                candidate = _sample_perlin(rng, spatial_shape, cfg, centre, cfg.retry_shrink ** attempt)
                if candidate is None:
                    continue
            else:
                candidate = render(_sample_shape(rng, kind, spatial_shape, cfg, centre, cfg.retry_shrink ** attempt),
                                   spatial_shape)
            if _foreground_fraction(candidate, foreground) >= cfg.foreground_fraction:
                lesion = candidate
                break
        if lesion is None:  # rare: fall back to a shape that surely qualifies
            if foreground is None:
                centre = _random_centre(rng, spatial_shape, None, points)
                params = _sample_shape(rng, "ellipse", spatial_shape, cfg, centre, 1.0)
            else:
                params = _deepest_point_shape(foreground, spatial_shape)
            lesion = render(params, spatial_shape)
        lesions.append(lesion)
    return lesions


__all__ = ["Lesion", "MASK_KINDS", "perlin_field", "random_foreground_point", "render", "sample_lesions"]
