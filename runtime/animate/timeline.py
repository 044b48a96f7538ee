"""The keys of one line, played as they arrive.

A :class:`Track` starts at the face's current pose (key 0 at line time 0) and receives the model's
keyframes one by one. Its playhead advances with the frame clock but never passes the last known
key while more keys may come: when the model is late the curve eases into the last key and holds
there, and when the next key arrives motion continues from that point, so nothing jumps. Each
segment's end tangent is fixed when playback enters the segment, from neighbours known then; a key
that arrives later never changes a frame already played.
"""

from __future__ import annotations

import numpy as np

from runtime import channels
from runtime.animate.spline import fc_tangent, hermite


class SplineSegment:
    """Cubic Hermite between two keys; the default in-between."""

    __slots__ = ("t0", "h", "y0", "y1", "m0", "m1")

    def __init__(self, t0: float, t1: float, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray,
                 m1: np.ndarray) -> None:
        self.t0, self.h = t0, t1 - t0
        self.y0, self.y1, self.m0, self.m1 = y0, y1, m0, m1

    def at(self, t: float, out: np.ndarray) -> None:
        s = min(max((t - self.t0) / self.h, 0.0), 1.0)
        hermite(self.y0, self.y1, self.m0, self.m1, self.h, s, out)


class Interpolator:
    """Makes the segment played between two keys. The learned interpolator subclasses this.

    ``prev`` is the key before the segment (or None), ``nxt`` the key after it if already known:
    never more than one key beyond the segment, because that is all a streaming runtime knows.
    """

    name = "monotone_cubic"

    def segment(self, t0: float, t1: float, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray,
                m1: np.ndarray, prev: tuple[float, np.ndarray] | None,
                nxt: tuple[float, np.ndarray] | None) -> SplineSegment:
        return SplineSegment(t0, t1, y0, y1, m0, m1)


class Track:
    """Streaming keys -> one pose per frame."""

    def __init__(self, start: np.ndarray, interpolator: Interpolator | None = None) -> None:
        self.interp = interpolator or Interpolator()
        self.times: list[float] = [0.0]
        self.values: list[np.ndarray] = [np.asarray(start, dtype=np.float64).copy()]
        self.tangents: list[np.ndarray] = [np.zeros(channels.COUNT)]  # fixed as segments start
        self.final = False
        self.pos = 0.0
        self.held = 0.0  # seconds spent waiting on a late key
        self._seg_index = -1
        self._seg: SplineSegment | None = None
        self._tmp = np.zeros(channels.COUNT)

    # keys ---------------------------------------------------------------------------------------
    def add(self, t: float, pose: np.ndarray) -> None:
        """Append a key at line time t (seconds); times must rise."""
        if self.final:
            raise ValueError("track is finished")
        if t <= self.times[-1]:
            raise ValueError(f"key time {t} does not follow {self.times[-1]}")
        self.times.append(float(t))
        self.values.append(np.asarray(pose, dtype=np.float64).copy())

    def finish(self) -> None:
        """No more keys will come: the last key ends the track."""
        self.final = True

    @property
    def end(self) -> float:
        return self.times[-1]

    @property
    def done(self) -> bool:
        return self.final and self.pos >= self.times[-1]

    @property
    def waiting(self) -> bool:
        """Holding at the last known key for a key that has not arrived."""
        return not self.final and self.pos >= self.times[-1]

    # playback -----------------------------------------------------------------------------------
    def _enter(self, j: int) -> None:
        """Start segment j (key j -> key j+1): fix the tangent at key j+1 from what is known now."""
        while len(self.tangents) <= j + 1:
            k = len(self.tangents)  # tangent index to fix
            m = np.zeros(channels.COUNT)
            if k + 1 < len(self.times):
                fc_tangent(self.times[k - 1], self.times[k], self.times[k + 1], self.values[k - 1],
                           self.values[k], self.values[k + 1], m)
            self.tangents.append(m)
        prev = (self.times[j - 1], self.values[j - 1]) if j > 0 else None
        nxt = (self.times[j + 2], self.values[j + 2]) if j + 2 < len(self.times) else None
        self._seg = self.interp.segment(self.times[j], self.times[j + 1], self.values[j],
                                        self.values[j + 1], self.tangents[j], self.tangents[j + 1],
                                        prev, nxt)
        self._seg_index = j

    def advance(self, dt: float, out: np.ndarray) -> None:
        """Move the playhead by dt seconds and write the pose there into ``out`` (float32[61])."""
        target = self.pos + dt
        if target > self.times[-1]:
            if not self.final:
                self.held += target - self.times[-1]
            target = self.times[-1]
        self.pos = target
        self.sample(out)

    def sample(self, out: np.ndarray) -> None:
        """Pose at the current playhead."""
        t = self.pos
        if len(self.times) == 1 or t <= 0.0:
            out[:] = self.values[0]
            return
        j = max(self._seg_index, 0)
        while j + 1 < len(self.times) - 1 and self.times[j + 1] <= t:
            j += 1
        if j + 1 >= len(self.times):
            out[:] = self.values[-1]
            return
        if j != self._seg_index:
            self._enter(j)
        self._seg.at(t, self._tmp)
        np.clip(self._tmp, channels.LOW, channels.HIGH, out=out)

    def render(self, fps: float) -> np.ndarray:
        """Every frame of a finished track, as fast as possible (offline render)."""
        n = int(np.floor(self.end * fps + 1e-9)) + 1
        frames = np.empty((n, channels.COUNT), dtype=np.float32)
        self.pos = 0.0
        for i in range(n):
            self.pos = i / fps
            self.sample(frames[i])
        return frames
