"""A second opinion on the lips: was a recognised consonant made with them (p, b, m) or not?

PocketSphinx's phone recogniser, with no text to hold it, hears m as n (or, on formant voices,
as a close back vowel), b as d/g/v and a p's silent closure as th: the lips then stay open where
the voice closed them (issue 17). Place of articulation shows in the sound around the consonant:
the nasal murmur's spectrum (m's antiresonance lies lower than n's), the burst's spectrum (flat or
falling for p/b, rising for t/d, a mid peak for k/g) and the neighbouring vowels' formant
transitions (lips lower F2). A small net (exported_models/labial.json, trained by
tools/train_labial.py on synthetic speech with exact phone times, no eval text) reads log-mel
frames around each recognised consonant and, where it is sure the lips closed, the phone is
renamed to the bilabial of its manner (nasal -> M, voiced -> B, voiceless -> P): above
``threshold_up`` for the confusions whose verdict held on voices of an engine it never heard
(:data:`RELIABLE`), above ``threshold_strict`` for the rest. Renaming a recognised p/b/m away
(``threshold_down``) is there but off: it cost recall on unheard voices (docs/BENCHMARKS.md).

Features are normalised inside each phone's own window (about 0.2 s), so a phone reads the same
in a whole clip and in a stream, and a channel's colour cancels out. Cost: a few 512-point FFTs
per phone; it runs where the recogniser runs (runtime.audio.worker's child process).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.audio.model_file import ModelFile

log = logging.getLogger(__name__)

RATE = 16000
WIN, HOP, NFFT = 400, 160, 512  # 25 ms Hann windows; offsets below are in 10 ms frames
BANDS, FMIN, FMAX = 32, 80.0, 7600.0
MODEL = Path(__file__).resolve().parents[2] / "exported_models" / "labial.json"
RIGHT = 0.08  # seconds of audio a phone needs after its end before it can be judged

# What the recogniser may have called a bilabial (seen in tools/train_labial.py's data), by manner
NASAL = {"M", "N", "NG", "UW", "UH", "L", "W", "R"}
VOICED = {"B", "D", "G", "V", "DH", "Z"}
VOICELESS = {"P", "T", "K", "TH", "F", "HH", "S"}
CANDIDATES = NASAL | VOICED | VOICELESS
GROUPS = ("M", "N", "NG", "B", "D", "G", "P", "T", "K", "TH", "F", "V", "DH", "UW", "other")
LABIAL_OF = {**{p: "M" for p in NASAL}, **{p: "B" for p in VOICED}, **{p: "P" for p in VOICELESS}}
# Where the net's verdict held across synthesis engines (trained on espeak-ng, tested on festival
# and back): the recogniser's labiodental or dental fricative at a weak p/b. Elsewhere (m heard
# as n, b as d/g) it learned each engine's own sound and is trusted only when very sure.
RELIABLE = {"TH", "F", "V", "DH"}
NOT_LABIAL = {"M": "N", "B": "D", "P": "T"}  # only below threshold_down (0 as shipped: never)
JUDGED = CANDIDATES | NOT_LABIAL.keys()


def _mel() -> np.ndarray:
    hz = np.linspace(0, RATE / 2, NFFT // 2 + 1)
    mel = 2595 * np.log10(1 + np.array([FMIN, FMAX]) / 700)
    edges = 700 * (10 ** (np.linspace(mel[0], mel[1], BANDS + 2) / 2595) - 1)
    fb = np.zeros((BANDS, len(hz)))
    for i in range(BANDS):
        lo, c, hi = edges[i: i + 3]
        fb[i] = np.clip(np.minimum((hz - lo) / (c - lo), (hi - hz) / (hi - c)), 0, None)
    return (fb / fb.sum(axis=1, keepdims=True)).astype(np.float32)


_FB = _mel()
_HANN = np.hanning(WIN).astype(np.float32)


def logmel(x16: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Log-mel spectra (len(centres) x BANDS) of 25 ms windows centred at sample ``centres``."""
    idx = centres[:, None] - WIN // 2 + np.arange(WIN)[None, :]
    ok = (idx >= 0) & (idx < len(x16))
    frames = np.where(ok, x16[np.clip(idx, 0, max(len(x16) - 1, 0))], 0.0) * _HANN
    spec = np.abs(np.fft.rfft(frames, NFFT)) ** 2
    return np.log(spec @ _FB.T + 1e-8).astype(np.float32)


# Where each phone is read: (fraction of the way from its start to its end, then seconds): the
# vowel before, the closure, and densely around the release, where a stop's burst tells its place
_AT = ((0, -0.08), (0, -0.05), (0, -0.03), (0, -0.01), (0, 0.01), (0.5, 0.0), (1, -0.02), (1, -0.01),
       (1, 0.0), (1, 0.01), (1, 0.02), (1, 0.04), (1, 0.07))


def features(x16: np.ndarray, spans: np.ndarray, phones: list[str]) -> np.ndarray:
    """One row per phone: log-mel at the points in _AT, less their mean per band (the window's own
    colour), their levels against the window's loudest, duration and the recogniser's phone."""
    n = len(spans)
    if n == 0:
        return np.zeros((0, nfeat()), np.float32)
    s, e = spans[:, 0], spans[:, 1]
    t = np.stack([s + f * (e - s) + d for f, d in _AT], axis=1)  # n x P seconds
    lm = logmel(x16, np.round(t.ravel() * RATE).astype(np.int64)).reshape(n, len(_AT), BANDS)
    level = np.log(np.exp(lm).sum(axis=2))  # n x P
    shape = lm - lm.mean(axis=1, keepdims=True)
    lvl = level - level.max(axis=1, keepdims=True)
    onehot = np.zeros((n, len(GROUPS)), np.float32)
    for i, p in enumerate(phones):
        onehot[i, GROUPS.index(p) if p in GROUPS else len(GROUPS) - 1] = 1.0
    dur = np.log(np.maximum(e - s, 0.005))[:, None]
    return np.concatenate([shape.reshape(n, -1), lvl, dur, onehot], axis=1).astype(np.float32)


def nfeat() -> int:
    return len(_AT) * BANDS + len(_AT) + 1 + len(GROUPS)


class Net:
    """Standardise, one hidden ReLU layer, sigmoid: the weights in exported_models/labial.json."""

    def __init__(self, card: dict) -> None:
        self.mean = np.asarray(card["mean"], np.float32)
        self.std = np.asarray(card["std"], np.float32)
        self.w1 = np.asarray(card["w1"], np.float32)
        self.b1 = np.asarray(card["b1"], np.float32)
        self.w2 = np.asarray(card["w2"], np.float32)
        self.b2 = float(card["b2"])
        self.up = float(card["threshold_up"])  # rename a RELIABLE phone to a bilabial above this
        self.strict = float(card.get("threshold_strict", self.up))  # any other candidate above this
        self.down = float(card["threshold_down"])  # rename a bilabial away below this

    def __call__(self, f: np.ndarray) -> np.ndarray:
        h = np.maximum((f - self.mean) / self.std @ self.w1 + self.b1, 0.0)
        return 1.0 / (1.0 + np.exp(-(h @ self.w2 + self.b2)))


_FILE = ModelFile(MODEL, Net, "lips' second opinion")


def net() -> Net | None:
    """The model in exported_models/labial.json (loaded once), or None when off or its file is
    missing. A file that cannot be read as one turns the second pass off with a log line: the phones
    stay as the recogniser heard them, and the mouth goes on."""
    return _FILE.get()


def use(path: Path | None) -> None:
    """Judge with the model at ``path`` from now on (None: the second pass is off; eval_speech.py
    --no-labial)."""
    _FILE.use(path)


def relabel(x16: np.ndarray, phones: list, model: Net | None = None, cache: dict | None = None,
            complete: bool = True) -> list:
    """``phones`` (TimedPhone) with each candidate renamed by the net's verdict. Phones whose right
    context is not yet in ``x16`` (a stream, ``complete=False``) are left as heard; ``cache``
    (kept by a stream) holds verdicts by (phone, start, end) so each is computed once."""
    model = model or net()
    if model is None or not phones:
        return phones
    cache = {} if cache is None else cache
    heard = len(x16) / RATE
    judged = JUDGED if model.down > 0 else CANDIDATES
    todo = [p for p in phones if p.phone.rstrip("012") in judged
            and (complete or p.end + RIGHT <= heard) and (p.phone, p.start, p.end) not in cache]
    if todo:
        spans = np.array([[p.start, p.end] for p in todo])
        prob = model(features(x16, spans, [p.phone.rstrip("012") for p in todo]))
        cache.update(zip([(p.phone, p.start, p.end) for p in todo], prob.tolist()))
    out = []
    for p in phones:
        base, pr = p.phone.rstrip("012"), cache.get((p.phone, p.start, p.end))
        if pr is not None and base in NOT_LABIAL and pr < model.down:
            p = replace(p, phone=NOT_LABIAL[base])
        elif pr is not None and base in CANDIDATES and pr > (model.up if base in RELIABLE else model.strict):
            p = replace(p, phone=LABIAL_OF[base])
        out.append(p)
    return out
