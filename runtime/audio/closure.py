"""Lips shut, heard frame by frame: the p/b/m that phone recognition did not hear at all.

The lips' second opinion (:mod:`runtime.audio.labial`) can only rename a consonant the recogniser
found. Some bilabials leave no such consonant: espeak-ng's m heard as a vowel (IY, UW), a
line-initial p/b whose silent closure lies before the first sound, where the viseme layer's
anticipation of the next vowel opens the lips (docs/BENCHMARKS.md, issue 17, stop 29). This
detector reads the sound itself: for every 10 ms frame, log-mel bands 200 ms back and 80 ms ahead
(each band less its mean over the window, so a channel's colour cancels; levels against the
window's loudest) -> small nets of one hidden ReLU layer, their probabilities averaged -> how sure
it is that the lips are shut for a p/b/m there. Where it stays above ``threshold`` for
``min_frames`` frames, no recognised p/b/m overlaps it and the recogniser heard a vowel or nothing
there, a B of the run's span is cut in. Where the recogniser heard a consonant a p/b/m is often
heard as (:data:`labial.CANDIDATES`) the second opinion decides; renaming those here as well
(``rename`` in the card) found more p/b/m but closed the lips on t/d/n/k/g of voices from an
engine the nets never heard about as often (docs/BENCHMARKS.md, issue 17, stop 30). The weights
(exported_models/closure.json) come from tools/train_closure.py: synthetic speech with exact phone
times, no eval text.

It runs where the recogniser runs (runtime.audio.worker's child process): ~100 FFTs and one
small matrix product per second of audio. A stream computes each frame once, when 80 ms of audio
after it is in (the same right context as the second opinion), and keeps it.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.audio import labial
from runtime.audio.model_file import ModelFile

log = logging.getLogger(__name__)

RATE, HOP = labial.RATE, labial.HOP  # 10 ms frames
BACK, AHEAD = 20, 8  # frames of context: 200 ms before, 80 ms after
MODEL = Path(__file__).resolve().parents[2] / "exported_models" / "closure.json"
BILABIAL = {"P", "B", "M"}
_FLOOR = float(np.log(1e-8))  # a band's level outside the clip (labial.logmel's floor)


def windows(lm: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """Features of frames ``idx`` from log-mel frames ``lm``: the window BACK..AHEAD around each
    (frames outside 0..n-1 at the floor), each band less its window mean, levels vs the window's
    loudest."""
    off = np.arange(-BACK, AHEAD + 1)
    j = idx[:, None] + off[None, :]
    w = lm[np.clip(j, 0, max(len(lm) - 1, 0))]
    w = np.where(((j < 0) | (j >= n))[:, :, None], _FLOOR, w)
    level = np.log(np.exp(w).sum(axis=2))
    shape = w - w.mean(axis=1, keepdims=True)
    lvl = level - level.max(axis=1, keepdims=True)
    return np.concatenate([shape.reshape(len(idx), -1), lvl], axis=1).astype(np.float32)


def nfeat() -> int:
    return (BACK + AHEAD + 1) * (labial.BANDS + 1)


class Detector:
    """Nets of one hidden ReLU layer (standardise, ReLU, sigmoid), their probabilities averaged:
    the members in exported_models/closure.json."""

    def __init__(self, card: dict) -> None:
        self.members = []
        for m in card["members"]:
            w = tuple(np.asarray(m[k], np.float32) for k in ("mean", "std", "w1", "b1", "w2")) + (float(m["b2"]),)
            if w[2].shape != (nfeat(), len(w[3])) or w[0].shape != (nfeat(),):
                raise ValueError(f"weights of shape {w[2].shape} do not fit {nfeat()} features")
            self.members.append(w)
        if not self.members:
            raise ValueError("no members")
        self.threshold = float(card["threshold"])
        self.min_frames = int(card["min_frames"])
        # rename a recognised candidate too (the second opinion's job), or only put closures in
        # where the recogniser heard a vowel or nothing
        self.rename = bool(card.get("rename", False))

    def __call__(self, f: np.ndarray) -> np.ndarray:
        p = np.zeros(len(f), np.float32)
        for mean, std, w1, b1, w2, b2 in self.members:
            h = np.maximum((f - mean) / std @ w1 + b1, 0.0)
            p += 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
        return p / len(self.members)

    def at(self, threshold: float, rename: bool | None = None) -> Detector:
        """The same nets with another threshold (and rename rule): for tools choosing one."""
        d = copy.copy(self)
        d.threshold = threshold
        d.rename = self.rename if rename is None else rename
        return d


class Frames:
    """A clip's per-frame state, grown as audio comes: log-mel frames and the detector's verdicts
    (``p``: once computed, a frame's verdict does not change)."""

    def __init__(self) -> None:
        self.lm = np.zeros((0, labial.BANDS), np.float32)
        self.p = np.zeros(0, np.float32)

    def update(self, x16: np.ndarray, model: Detector, complete: bool) -> np.ndarray:
        total = len(x16) // HOP + 1
        # a frame's 25 ms window must be in; at the clip's end the rest is zeros, as offline
        n_lm = total if complete else max(0, min(total, (len(x16) - labial.WIN // 2) // HOP + 1))
        if n_lm > len(self.lm):
            new = labial.logmel(x16, np.arange(len(self.lm), n_lm) * HOP)
            self.lm = np.concatenate([self.lm, new])
        n_p = total if complete else max(0, n_lm - AHEAD)
        if n_p > len(self.p):
            idx = np.arange(len(self.p), n_p)
            self.p = np.concatenate([self.p, model(windows(self.lm, idx, total))])
        return self.p


def runs(p: np.ndarray, threshold: float, min_frames: int, complete: bool) -> list[tuple[int, int]]:
    """[start, end) frame runs above ``threshold`` at least ``min_frames`` long; in a stream a run
    still open at the last judged frame waits (it may grow)."""
    on = np.concatenate([[0], (p > threshold).astype(np.int8), [0]])
    d = np.diff(on)
    out = [(int(a), int(b)) for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0])
           if b - a >= min_frames]
    if not complete and out and out[-1][1] == len(p):
        out.pop()
    return out


def insert(phones: list, p: np.ndarray, model: Detector, complete: bool = True) -> list:
    """``phones`` (TimedPhone, recognised, after the second opinion) with a closure wherever the
    detector's frames ``p`` say the lips shut and no p/b/m is there."""
    out = list(phones)
    for a, b in runs(p, model.threshold, model.min_frames, complete):
        t0, t1 = max(0.0, (a - 0.5) * HOP / RATE), (b - 0.5) * HOP / RATE  # frames are centred
        if any(q.phone.rstrip("012") in BILABIAL and q.end > t0 and q.start < t1 for q in out):
            continue
        best, at = 0.0, -1
        for i, q in enumerate(out):
            ov = min(q.end, t1) - max(q.start, t0)
            if ov > best:
                best, at = ov, i
        base = out[at].phone.rstrip("012") if at >= 0 else ""
        if base in labial.CANDIDATES:
            if model.rename:
                out[at] = replace(out[at], phone=labial.LABIAL_OF[base])
            continue
        cut = []
        for q in out:  # a B of the run's span, cut into the vowel or silence it lies in
            if q.end <= t0 or q.start >= t1:
                cut.append(q)
                continue
            if q.start < t0:
                cut.append(replace(q, end=t0))
            if q.end > t1:
                cut.append(replace(q, start=t1))
        cut.append(_phone("B", t0, t1))
        out = sorted(cut, key=lambda q: q.start)
    return out


def _phone(name: str, start: float, end: float):
    from runtime.audio.align import TimedPhone  # align imports this module

    return TimedPhone(name, start, end)


_FILE = ModelFile(MODEL, Detector, "closure detector")


def detector() -> Detector | None:
    """The model in exported_models/closure.json (loaded once), or None when off or its file is
    missing. A file that cannot be read as one turns the detector off with a log line; the mouth
    goes on."""
    return _FILE.get()


def use(path: Path | None) -> None:
    """Detect with the model at ``path`` from now on (None: off; eval_speech.py --no-closure)."""
    _FILE.use(path)


def closures(x16: np.ndarray, phones: list, frames: Frames | None = None, complete: bool = True,
             model: Detector | None = None) -> list:
    """``phones`` with the closures the detector hears in ``x16`` put in. ``frames`` (kept by a
    stream) holds what was computed for earlier chunks."""
    model = model or detector()
    if model is None:
        return phones
    frames = Frames() if frames is None else frames
    p = frames.update(np.asarray(x16, np.float32), model, complete)
    return insert(phones, p, model, complete)
