"""The voice's loudness: RMS in dBFS per 10 ms hop (the recogniser's frame rate), incrementally.

What the mouth takes from it: silence (below :data:`SILENCE_DB`) closes the lips, and each
syllable's level scales how far the jaw opens, against an absolute reference so that a shout opens
wider than a whisper (:func:`gain`).
"""

from __future__ import annotations

import numpy as np

HOP = 0.01  # seconds per envelope value
SILENCE_DB = -48.0  # below this a hop is silence
REF_DB = -20.0  # a vowel at this level opens the jaw by its viseme's own amount (gain 1)
DB_PER_DOUBLING = 12.0  # 12 dB louder opens the jaw twice as far (clipped to GAIN_RANGE)
GAIN_RANGE = (0.25, 1.6)


def loudness(x: np.ndarray, rate: int) -> np.ndarray:
    """float32 samples -> float32 dBFS per 10 ms hop (last partial hop dropped)."""
    hop = max(int(round(rate * HOP)), 1)
    n = len(x) // hop
    if n == 0:
        return np.zeros(0, np.float32)
    f = np.asarray(x[: n * hop], dtype=np.float64).reshape(n, hop)
    return (10.0 * np.log10((f * f).mean(axis=1) + 1e-12)).astype(np.float32)


class Envelope:
    """Incremental loudness: feed samples, read ``db`` (float32, one value per 10 ms so far)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._hop = max(int(round(rate * HOP)), 1)
        self._rest = np.zeros(0, np.float32)
        self._parts: list[np.ndarray] = []
        self._db: np.ndarray | None = np.zeros(0, np.float32)

    def feed(self, x: np.ndarray) -> None:
        x = np.concatenate([self._rest, np.asarray(x, np.float32)])
        n = len(x) // self._hop * self._hop
        if n:
            self._parts.append(loudness(x[:n], self.rate))
            self._db = None
        self._rest = x[n:]

    @property
    def db(self) -> np.ndarray:
        if self._db is None:
            self._db = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
            self._parts = [self._db]
        return self._db

    @property
    def duration(self) -> float:
        return len(self.db) * HOP


def gain(db: float) -> float:
    """Jaw factor for a syllable at ``db`` dBFS: 0 for silence, else 2^((db - REF_DB) / 12),
    clipped to :data:`GAIN_RANGE`."""
    if db < SILENCE_DB:
        return 0.0
    return float(np.clip(2.0 ** ((db - REF_DB) / DB_PER_DOUBLING), *GAIN_RANGE))


def span_db(db: np.ndarray, start: float, end: float) -> float:
    """The level of a sound from ``start`` to ``end`` seconds: the 80th percentile of its hops
    (a vowel's loud core, not its onset)."""
    a, b = int(start / HOP), max(int(np.ceil(end / HOP)), int(start / HOP) + 1)
    seg = db[a:b]
    if not len(seg):
        return -120.0
    return float(np.partition(seg, int(0.8 * (len(seg) - 1)))[int(0.8 * (len(seg) - 1))])  # np.percentile's
    # "lower" 80th, at a tenth of its cost (this runs for every phone of every streamed plan)


def speaking(db: np.ndarray) -> np.ndarray:
    """bool per hop: loud enough to be voice."""
    return db >= SILENCE_DB
