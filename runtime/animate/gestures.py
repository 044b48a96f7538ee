"""Beats: small timed gestures that go with speech (brow lifts, head nods, blinks), added on top of
whatever the face is doing.

A gesture is a bump in time on a few channels: a brow lift rises over ~0.15 s to its peak and
falls over ~0.3 s; a nod dips the head and brings it back; a blink closes in ~90 ms and opens in
~120 ms (the recordings' timing). :class:`Gestures` holds them sorted by time and adds them to
one frame (the frame clock) or a whole track (offline) in numpy; the result is clamped to each
channel's range. Where the times come from is not this module's business (see runtime/audio/beats.py).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from runtime import channels

BROW, NOD, BLINK = 0, 1, 2


@dataclass(frozen=True)
class _Kind:
    weights: np.ndarray  # float32[61]: the pose at amplitude 1
    rise: float  # seconds from start to peak
    fall: float  # seconds from peak to end


def _w(**values: float) -> np.ndarray:
    v = np.zeros(channels.COUNT, np.float32)
    for name, x in values.items():
        v[channels.indices(name)] = x
    return v


KINDS = {
    BROW: _Kind(_w(BrowInnerUp=0.22, BrowOuterUpLeft=0.16, BrowOuterUpRight=0.16), 0.15, 0.3),
    NOD: _Kind(_w(HeadPitch=0.035), 0.18, 0.3),  # positive pitch: the head dips (the "nod" preset)
    BLINK: _Kind(_w(EyeBlinkLeft=1.0, EyeBlinkRight=1.0), 0.09, 0.12),
}
_SPAN = max(k.rise + k.fall for k in KINDS.values())


def _shape(u: np.ndarray) -> np.ndarray:
    """Smoothstep bump: 0 at u = -1 and 1, 1 at u = 0 (u: signed fraction of rise / fall)."""
    a = 1.0 - np.clip(np.abs(u), 0.0, 1.0)
    return a * a * (3.0 - 2.0 * a)


class Gestures:
    """Sorted gestures: ``peak`` times (seconds, line time), ``kind`` (BROW | NOD | BLINK),
    ``amp`` (1 = the kind's full pose). Read-only once built."""

    def __init__(self, peaks=(), kinds=(), amps=()) -> None:
        order = np.argsort(np.asarray(peaks, dtype=np.float64), kind="stable")
        self.peak = np.asarray(peaks, dtype=np.float64)[order]
        self.kind = np.asarray(kinds, dtype=np.intp)[order]
        self.amp = np.asarray(amps, dtype=np.float32)[order]
        self._peaks = self.peak.tolist()
        self._rise = np.array([KINDS[int(k)].rise for k in self.kind])
        self._fall = np.array([KINDS[int(k)].fall for k in self.kind])
        self._w = np.stack([KINDS[int(k)].weights for k in self.kind]) if len(self.kind) else \
            np.zeros((0, channels.COUNT), np.float32)

    def __len__(self) -> int:
        return len(self.peak)

    def shifted(self, dt: float) -> Gestures:
        return Gestures(self.peak + dt, self.kind, self.amp)

    def _levels(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        d = t[:, None] - self.peak[idx][None, :]
        u = np.where(d < 0, d / self._rise[idx], d / self._fall[idx])
        return _shape(u) * self.amp[idx]

    def render(self, t: np.ndarray) -> np.ndarray:
        """float32[n, 61] deltas at line times ``t`` (zeros where no gesture is under way)."""
        t = np.asarray(t, dtype=np.float64)
        if not len(self):
            return np.zeros((len(t), channels.COUNT), np.float32)
        return (self._levels(t, np.arange(len(self))) @ self._w).astype(np.float32)

    def add_at(self, t: float, frame: np.ndarray) -> np.ndarray:
        """Add the gestures under way at ``t`` to ``frame`` (float32[61]) in place, clamped."""
        a = bisect.bisect_left(self._peaks, t - _SPAN)
        b = bisect.bisect_right(self._peaks, t + _SPAN)
        if a >= b:
            return frame
        idx = np.arange(a, b)
        lv = self._levels(np.array([t]), idx)[0]
        if lv.any():
            frame += lv @ self._w[idx]
            np.clip(frame, channels.LOW, channels.HIGH, out=frame)
        return frame
