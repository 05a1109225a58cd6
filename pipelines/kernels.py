"""Numba kernels of the cache's per-sample work: the stored form of one synthesised sample,
straight into a row of the shard's arrays (one pass each instead of numpy's temporaries: a
float32 product, its rounding, the cast, the copy; 0.045 of the 0.6 ms a sample costs, measured
in the loop); and each sample's source image draw, numpy's ``default_rng(SeedSequence(seed,
spawn_key=(key,))).integers(n)`` without its objects (11 us a sample through numpy).

Example:
    >>> import numpy as np
    >>> row = np.empty((2, 2), np.uint8)
    >>> to_uint8_into(np.array([[0.0, 0.5], [1.0, 2.0]], np.float32), row)
    >>> row.tolist()
    [[0, 128], [255, 255]]
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def to_uint8_into(image: np.ndarray, out: np.ndarray) -> None:
    """``out = uint8(rint(float32(image) * 255))`` clipped to [0, 255] (numpy's cast would wrap
    values outside [0, 1]); ``out`` is a C-contiguous uint8 array of ``image``'s shape. Equals
    numpy's float32 expression (rounding half to even) on [0, 1]."""
    src, dst = image.reshape(-1), out.reshape(-1)
    for i in range(src.size):
        # Clamped before rounding (the same result, 0 and 255 being whole) and cast through
        # int32, which the compiler vectorises: 3.1 us for a 224 x 224 image, was 3.9.
        value = min(max(np.float32(src[i]) * np.float32(255.0), np.float32(0.0)), np.float32(255.0))
        dst[i] = np.uint8(np.int32(np.rint(value)))


@numba.njit(cache=True, nogil=True)
def binarize_into(mask: np.ndarray, out: np.ndarray) -> bool:
    """``out = mask > 0.5`` as uint8 {0, 1}; returns whether any pixel is set (the label)."""
    src, dst = mask.reshape(-1), out.reshape(-1)
    for i in range(src.size):
        dst[i] = src[i] > np.float32(0.5)  # float32: a float64 constant converted every pixel
    # The label in a second pass, eight bytes at a time: one fused loop did not vectorise
    # (4.6 us for a 224 x 224 mask, against 2.6 + 0.7 for the two).
    words = dst.size // 8
    found = np.uint64(0)
    packed = dst[:words * 8].view(np.uint64)
    for i in range(words):
        found |= packed[i]
    for i in range(words * 8, dst.size):
        found |= np.uint64(dst[i])
    return found != 0


_LOW32 = np.uint64(0xFFFFFFFF)
_PCG_MULT_HIGH, _PCG_MULT_LOW = np.uint64(2549297995355413924), np.uint64(4865540595714422341)


@numba.njit(cache=True, inline="always")
def _mulhi64(a, b):
    """The high 64 bits of the 128-bit product of two uint64, from 32-bit halves."""
    a0, a1, b0, b1 = a & _LOW32, a >> np.uint64(32), b & _LOW32, b >> np.uint64(32)
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    middle = (p00 >> np.uint64(32)) + (p01 & _LOW32) + (p10 & _LOW32)
    return a1 * b1 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (middle >> np.uint64(32))


@numba.njit(cache=True, inline="always")
def _add128(high, low, add_high, add_low):
    total = low + add_low
    return high + add_high + (np.uint64(1) if total < low else np.uint64(0)), total


@numba.njit(cache=True, inline="always")
def _pcg64_step(high, low, inc_high, inc_low):
    """PCG64's 128-bit LCG step, state * multiplier + increment, on (high, low) halves."""
    product_high = _mulhi64(low, _PCG_MULT_LOW) + high * _PCG_MULT_LOW + low * _PCG_MULT_HIGH
    return _add128(product_high, low * _PCG_MULT_LOW, inc_high, inc_low)


@numba.njit(cache=True, inline="always")
def _pcg64_output(high, low):
    """PCG64's XSL-RR output of a state."""
    x, rot = high ^ low, high >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@numba.njit(cache=True)
def bounded_draws(states, n):
    """For each row of ``states`` (``SeedSequence.generate_state(4, np.uint64)``, as
    ``synth.kernels.keyed_pcg64_states`` gives them): ``Generator(PCG64)`` seeded with it, then
    ``.integers(n)``, for 1 <= n <= 2**32 (Lemire's method on 32-bit draws, numpy's way)."""
    out = np.empty(len(states), np.int64)
    bound = np.uint64(n - 1)
    span = bound + np.uint64(1)
    # A draw is kept when the low half of draw * span reaches this; numpy computes it only
    # when a draw may fall below it, but it depends on n alone.
    threshold = (_LOW32 - bound) % span if bound < _LOW32 else np.uint64(0)
    for k in range(len(states)):
        if bound == 0:
            out[k] = 0
            continue
        inc_high = (states[k, 2] << np.uint64(1)) | (states[k, 3] >> np.uint64(63))
        inc_low = (states[k, 3] << np.uint64(1)) | np.uint64(1)
        # Seeding: the zero state steps to the increment, adds the initial state, steps again.
        high, low = _add128(inc_high, inc_low, states[k, 0], states[k, 1])
        high, low = _pcg64_step(high, low, inc_high, inc_low)
        buffered, has_buffered = np.uint64(0), False  # 32-bit draws: a 64-bit output's low half, then its high
        while True:
            if has_buffered:
                draw, has_buffered = buffered, False
            else:
                high, low = _pcg64_step(high, low, inc_high, inc_low)
                word = _pcg64_output(high, low)
                draw, buffered, has_buffered = word & _LOW32, word >> np.uint64(32), True
            if bound == _LOW32:
                result = draw
                break
            product = draw * span
            if product & _LOW32 >= threshold:
                result = product >> np.uint64(32)
                break
        out[k] = np.int64(result)
    return out
