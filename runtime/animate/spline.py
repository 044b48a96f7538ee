"""Monotone cubic (Fritsch–Carlson) in Numba, streaming-safe.

The tangent at a key depends only on that key's two neighbours, so a key that arrives later can
change nothing before the segment that ends at its left neighbour. A key whose right neighbour is
not known yet (a late key, or the end of a line) gets tangent 0: the curve eases into it and holds,
and when the next key arrives motion continues from rest with no jump.

All functions work on every channel at once (values have the channels on the last axis).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=False)
def fc_tangent(t0: float, t1: float, t2: float, y0: np.ndarray, y1: np.ndarray, y2: np.ndarray,
               out: np.ndarray) -> None:
    """Fritsch–Carlson tangent at the middle key (PCHIP's weighted harmonic mean)."""
    h0 = t1 - t0
    h1 = t2 - t1
    w1 = 2.0 * h1 + h0
    w2 = h1 + 2.0 * h0
    for c in range(y1.shape[0]):
        d0 = (y1[c] - y0[c]) / h0
        d1 = (y2[c] - y1[c]) / h1
        if d0 * d1 <= 0.0:
            out[c] = 0.0
        else:
            out[c] = (w1 + w2) / (w1 / d0 + w2 / d1)


@njit(cache=True)
def hermite(y0: np.ndarray, y1: np.ndarray, m0: np.ndarray, m1: np.ndarray, h: float, s: float,
            out: np.ndarray) -> None:
    """One point of a cubic Hermite segment at phase s in [0, 1] (h = segment length, seconds)."""
    s2 = s * s
    s3 = s2 * s
    a = 2.0 * s3 - 3.0 * s2 + 1.0
    b = (s3 - 2.0 * s2 + s) * h
    c = -2.0 * s3 + 3.0 * s2
    d = (s3 - s2) * h
    for k in range(y0.shape[0]):
        out[k] = a * y0[k] + b * m0[k] + c * y1[k] + d * m1[k]


@njit(cache=True)
def tangents(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Tangents for a whole key list: FC at interior keys, 0 at both ends (ease out, ease in)."""
    n, ch = values.shape
    m = np.zeros((n, ch), dtype=np.float64)
    for j in range(1, n - 1):
        fc_tangent(times[j - 1], times[j], times[j + 1], values[j - 1], values[j], values[j + 1], m[j])
    return m


@njit(cache=True)
def evaluate(times: np.ndarray, values: np.ndarray, m: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Dense curve at sorted query times (held flat outside the keys)."""
    n, ch = values.shape
    out = np.empty((query.shape[0], ch), dtype=np.float32)
    tmp = np.empty(ch, dtype=np.float64)
    j = 0
    for i in range(query.shape[0]):
        q = query[i]
        if q <= times[0]:
            out[i] = values[0]
            continue
        if q >= times[n - 1]:
            out[i] = values[n - 1]
            continue
        while times[j + 1] < q:
            j += 1
        h = times[j + 1] - times[j]
        hermite(values[j], values[j + 1], m[j], m[j + 1], h, (q - times[j]) / h, tmp)
        out[i] = tmp
    return out


def monotone_cubic(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Offline monotone cubic through keys, the same curve the streaming timeline plays."""
    t = np.ascontiguousarray(times, dtype=np.float64)
    v = np.ascontiguousarray(values, dtype=np.float64)
    return evaluate(t, v, tangents(t, v), np.ascontiguousarray(query, dtype=np.float64))


def warm_up() -> None:
    """Compile (or load from the cache) every kernel now rather than on the first frame."""
    t = np.array([0.0, 0.5, 1.0])
    v = np.zeros((3, 61))
    monotone_cubic(t, v, np.array([0.25]))
    out = np.zeros(61)
    hermite(v[0], v[1], out, out, 0.5, 0.5, out)
    # Called from Python too (the Track fixes a tangent as playback enters a segment): a jitted
    # function dispatched from Python for the first time costs 2-9 ms (the typed entry point is
    # loaded from numba's cache), which was one frame ~3 ms late early in every line.
    fc_tangent(0.0, 0.5, 1.0, v[0], v[1], v[2], out)
