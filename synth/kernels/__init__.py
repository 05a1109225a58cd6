"""Kernels: pure numba (or OpenCV) functions on arrays, no state and no randomness of their own."""
from .blur import gaussian_blur, gaussian_kernel, gaussian_radius
from .distance import (
    capped_distance_2d,
    capped_distance_3d,
    distance_to_background_2d,
    distance_to_background_3d,
)
from .extent import count_outside_unit, mask_extent
from .noise import TABLE, blob_threshold, perlin_2d, perlin_3d
from .poisson import poisson_2d, poisson_3d
from .seeds import entropy_words, spawned_seeds
from .shapes import shape_2d, shape_3d
from .warp import GUIDED, SOURCE, affine_sample_2d, affine_sample_3d, radial_warp_2d, radial_warp_3d

__all__ = [
    "GUIDED", "capped_distance_2d", "capped_distance_3d", "distance_to_background_2d", "distance_to_background_3d", "SOURCE", "TABLE", "affine_sample_2d", "affine_sample_3d", "blob_threshold", "gaussian_blur",
    "count_outside_unit", "gaussian_kernel", "gaussian_radius", "mask_extent", "perlin_2d", "perlin_3d", "poisson_2d", "poisson_3d",
    "radial_warp_2d", "radial_warp_3d", "entropy_words", "shape_2d", "shape_3d", "spawned_seeds",
]
