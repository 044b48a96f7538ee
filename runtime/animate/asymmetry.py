"""Faces that are not mirror images: the two sides of a pair move with a little different gain,
and one side a few frames behind the other.

Per face (seeded) and per left/right pair: gains ``1 + a`` and ``1 - a`` with ``a`` drawn from a
normal of the spread measured in capture (``gain_sigma``, ln of the left/right motion ratio,
:mod:`runtime.animate.capture`) times ``limit``, and a lag: one side (chosen at random) follows
the other through a first-order low-pass of time constant up to ``lag_ms * limit``. ``limit`` is
what a user sets: 0 is a symmetric rig (frames pass unchanged), 1 the measured spread. Gaze pairs
(EyeLookIn left/right...) get the gains too: the two eyes of a real face never read the same.

Streaming keeps the low-pass state between frames; :meth:`apply` over a whole take steps the same
filter frame by frame (vector operations on 61 channels, no per-channel loop), so both give the
same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from runtime import channels
from runtime.animate import capture

LAG_MS = 15.0  # most a side may trail the other (time constant; set with tools/eval_realism.py's
# velocity mismatch: 40 ms made the sides disagree twice as much as in capture)


class Asymmetry:
    def __init__(self, limit: float = 1.0, seed: int | None = None, fps: float = 60.0,
                 lag_ms: float = LAG_MS) -> None:
        self.limit = max(float(limit), 0.0)
        rng = np.random.default_rng(seed)
        pairs = np.array(channels.PAIRS)
        left, right = pairs[:, 0], pairs[:, 1]
        shapes = right < channels.SHAPES
        left, right = left[shapes], right[shapes]
        sigma = float(capture.load()["gain_sigma"]) * self.limit
        a = np.clip(rng.normal(0.0, sigma, len(left)), -2.5 * sigma, 2.5 * sigma) / 2.0
        self.gain = np.ones(channels.COUNT, dtype=np.float32)
        self.gain[left] = np.exp(a)
        self.gain[right] = np.exp(-a)
        tau = rng.uniform(0.25, 1.0, len(left)) * lag_ms * self.limit / 1000.0
        lagging = np.where(rng.random(len(left)) < 0.5, left, right)
        # per-frame smoothing factor: 1 = follows at once
        self.alpha = np.ones(channels.COUNT, dtype=np.float32)
        dt = 1.0 / fps
        self.alpha[lagging] = [1.0 - math.exp(-dt / t) if t > 1e-6 else 1.0 for t in tau]
        self.on = self.limit > 0.0
        self._state: np.ndarray | None = None

    def step(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One frame of the stream (float32[61]) -> out."""
        if not self.on:
            out[...] = frame
            return out
        if self._state is None:
            self._state = np.array(frame, dtype=np.float32)
        s = self._state
        s += self.alpha * (frame - s)
        np.multiply(s, self.gain, out=out)
        return out

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """A whole take float32[n, 61], from a fresh state."""
        x = np.asarray(frames, dtype=np.float32)
        if not self.on:
            return x.copy()
        out = np.empty_like(x)
        self._state = None
        for i in range(len(x)):
            self.step(x[i], out[i])
        self._state = None
        return out

    def reset(self) -> None:
        self._state = None
