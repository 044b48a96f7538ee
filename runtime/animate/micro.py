"""Holds that breathe: the small, never-still motion of a real face, with the spectrum of real holds.

A held expression in capture is never frame-perfectly still: every channel wanders a little, in
three bands measured from the quiet half of the recordings' 2-second windows
(``tools/measure_coupling.py``, :mod:`runtime.animate.capture`): jitter (faster than ~10 Hz),
tremor (~2.5-10 Hz) and sway (~0.6-2.5 Hz), each with its own size per channel. Each band here is
value noise: a random value per channel at knots spaced to the band, linearly interpolated.
Knot values come in blocks drawn from ``(seed, band, block)``, so any time can be sampled without
replaying the ones before it, and stepping through a take frame by frame gives the same numbers as
sampling it all at once. One frame costs three small interpolations over the 52 blendshapes.
"""

from __future__ import annotations

import numpy as np

from runtime import channels
from runtime.animate import capture

N = channels.SHAPES
SPACING = (1.0 / 30.0, 0.1, 0.4)  # seconds between knots: jitter, tremor, sway
# value noise loses power to interpolation and the bands' filters overlap: knots are drawn this
# much larger than the measured band deviation (set with tools/eval_realism.py)
CORRECTION = np.array([1.6, 1.4, 1.2], dtype=np.float32)
BLOCK = 256
MIRROR = channels.MIRROR[:N]
_RIGHT = np.array([i for i in range(N) if MIRROR[i] < i])  # right channels of left/right pairs
_RIGHT_PARTNER = MIRROR[_RIGHT]
SIDES_SHARED = 0.85  # correlation of a pair's two sides (set with tools/eval_realism.py's velocity mismatch)
# ... but the eyes: they wander up and down together (capture: left - right pitch sd 0.003) and
# sideways each on its own (yaw sd 0.025: the L/R gaze asymmetry; tools/measure_saccades.py)
_RHO = np.array([0.0 if channels.NAMES[i].startswith(("EyeLookIn", "EyeLookOut"))
                 else 0.98 if channels.NAMES[i].startswith("EyeLook") else SIDES_SHARED for i in _RIGHT])


class Micro:
    def __init__(self, gain: float = 1.0, seed: int | None = None, symmetric: bool = False) -> None:
        self.key = int(np.random.default_rng(seed).integers(2 ** 31))
        self.gain = float(gain)
        amp = capture.load()["micro"] * CORRECTION[:, None] * self.gain  # [3, 52]
        self.symmetric = symmetric  # a symmetric rig: each right channel moves as its left partner
        if symmetric:
            amp = 0.5 * (amp + amp[:, MIRROR])
        self.amp = amp.astype(np.float32)
        self.on = self.gain > 0.0
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    def _block(self, band: int, b: int) -> np.ndarray:
        blk = self._blocks.get((band, b))
        if blk is None:
            if len(self._blocks) > 48:  # a long stream: forget old blocks
                self._blocks.clear()
            rng = np.random.default_rng([self.key, band, b & 0x7FFFFFFF])
            z = rng.standard_normal((BLOCK, N))
            # the two sides of a face wander mostly together: a right channel shares SIDES_SHARED
            # of its left partner's noise (all of it on a symmetric rig)
            rho = 1.0 if self.symmetric else _RHO
            z[:, _RIGHT] = rho * z[:, _RIGHT_PARTNER] + np.sqrt(1.0 - rho * rho) * z[:, _RIGHT]
            blk = (z * self.amp[band]).astype(np.float32)
            self._blocks[(band, b)] = blk
        return blk

    def _knots(self, band: int, k: np.ndarray) -> np.ndarray:
        out = np.empty((len(k), N), dtype=np.float32)
        blocks = k // BLOCK
        for b in np.unique(blocks).tolist():
            m = blocks == b
            out[m] = self._block(band, b)[k[m] - b * BLOCK]
        return out

    def sample(self, t: np.ndarray | float) -> np.ndarray:
        """float32[n, 52] offsets at times t (seconds)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.zeros((len(t), N), dtype=np.float32)
        if not self.on:
            return out
        for band, h in enumerate(SPACING):
            u = t / h
            k = np.floor(u).astype(np.int64)
            f = (u - k).astype(np.float32)[:, None]
            out += self._knots(band, k) * (1.0 - f) + self._knots(band, k + 1) * f
        return out

    def sample1(self, t: float) -> np.ndarray:
        """float32[52] at one time: the frame clock's path."""
        out = np.zeros(N, dtype=np.float32)
        if not self.on:
            return out
        for band, h in enumerate(SPACING):
            u = t / h
            k = int(np.floor(u))
            f = np.float32(u - k)
            b0, b1 = divmod(k, BLOCK), divmod(k + 1, BLOCK)
            out += self._block(band, b0[0])[b0[1]] * (1.0 - f) + self._block(band, b1[0])[b1[1]] * f
        return out
