"""Beats from the voice: stressed syllables lift the brows a little and (the strongest) nod the
head slightly; a phrase end (a pause after speech) makes a blink likely.

A vowel's prominence is its loudness and pitch against the line's own (z-scores: 6 dB and 3
semitones count one each) plus its dictionary stress when the words are known. A beat is a vowel
with prominence >= :data:`BEAT`, the most prominent within :data:`SPACING` seconds. Pitch is one
autocorrelation at the vowel's middle (40 ms, 70-400 Hz), so this costs ~0.1 ms a vowel.
"""

from __future__ import annotations

import numpy as np

from runtime.animate import phonemes as ph
from runtime.animate.gestures import BLINK, BROW, NOD, Gestures
from runtime.audio import energy

BEAT = 1.0  # prominence for a brow lift
NOD_AT = 1.6  # ... and for a nod too
SPACING = 0.5  # seconds between beats at least
PAUSE = 0.25  # seconds of silence after speech that end a phrase
BLINK_P = 0.6  # chance of a blink at a phrase end
RATE = 16000


def pitch(x: np.ndarray, t: float, rate: int = RATE) -> float:
    """F0 in Hz at ``t`` seconds (nan when unvoiced): autocorrelation over 40 ms."""
    n = int(0.04 * rate)
    a = int(t * rate) - n // 2
    if a < 0 or a + n > len(x):
        return float("nan")
    w = x[a: a + n].astype(np.float64) * np.hanning(n)
    f = np.fft.rfft(w, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    if ac[0] <= 1e-9:
        return float("nan")
    lo, hi = int(rate / 400), int(rate / 70)
    k = lo + int(np.argmax(ac[lo:hi]))
    return float(rate / k) if ac[k] / ac[0] > 0.3 else float("nan")


def _cached(cache: dict, x16: np.ndarray | None, p) -> float:
    if x16 is None:
        return float("nan")
    key = (p.start, p.end)
    if key not in cache:
        cache[key] = pitch(x16, (p.start + p.end) / 2)
    return cache[key]


def detect(phones, db: np.ndarray, x16: np.ndarray | None = None, *, seed: int = 0,
           strength: float = 1.0, until: float | None = None, cache: dict | None = None) -> Gestures:
    """Gestures for timed phones (``TimedPhone``-like: phone, start, end) with loudness ``db``
    (and 16 kHz samples ``x16`` for pitch). ``until``: audio analysed so far (streaming): no
    phrase end is declared in the last PAUSE before it. ``cache``: a dict kept between calls on a
    growing clip, so each vowel's pitch is measured once."""
    cache = {} if cache is None else cache
    vowels = [p for p in phones if ph.split(p.phone)[0] in ph.VOWELS]
    peaks, kinds, amps = [], [], []
    if len(vowels) >= 2:
        lv = np.array([energy.span_db(db, p.start, p.end) for p in vowels])
        f0 = np.array([_cached(cache, x16, p) for p in vowels])
        st = 12 * np.log2(f0 / 100.0)
        z = (lv - np.median(lv)) / 6.0
        if np.isfinite(st).sum() >= 2:
            z = z + np.nan_to_num((st - np.nanmedian(st)) / 3.0)
        stress = np.array([ph.split(p.phone)[1] for p in vowels])
        z = z + np.where(stress == 1, 0.4, np.where(stress == 0, -0.6, 0.0))
        z[lv < energy.SILENCE_DB] = -np.inf
        centre = np.array([(p.start + p.end) / 2 for p in vowels])
        taken: list[float] = []
        for i in np.argsort(-z):
            if z[i] < BEAT:
                break
            if all(abs(centre[i] - c) >= SPACING for c in taken):
                taken.append(centre[i])
                a = float(np.clip(0.6 + 0.25 * (z[i] - BEAT), 0.6, 1.0)) * strength
                peaks.append(centre[i])
                kinds.append(BROW)
                amps.append(a)
                if z[i] >= NOD_AT:
                    peaks.append(centre[i] + 0.05)
                    kinds.append(NOD)
                    amps.append(a)
    rng = np.random.default_rng(seed)
    end = until if until is not None else len(db) * energy.HOP + PAUSE
    for k, p in enumerate(phones):
        nxt = phones[k + 1].start if k + 1 < len(phones) else end
        if nxt - p.end >= PAUSE and p.end + PAUSE <= end and rng.random() < BLINK_P:
            peaks.append(p.end + 0.03)  # closed just after the voice stops, open by the release
            kinds.append(BLINK)
            amps.append(1.0)
    return Gestures(peaks, kinds, amps)
