"""The speech layer: the words of a line -> jaw and lip poses in time with the voice.

Words become phonemes (:mod:`runtime.animate.phonemes`), phonemes become timed segments, and each
segment pulls the mouth toward its viseme's ARKit pose with a dominance function (Cohen & Massaro
1993): a plateau over the segment that decays before it (anticipation) and after it (carry-over).
The pose at time t is the dominance-weighted mean of the nearby targets, which is what gives
coarticulation: a "t" before "oo" is already rounded, a schwa between two "b"s barely opens.
Bilabials (p, b, m) dominate strongly and briefly, so the lips meet at the start of the sound,
where a word timing from a TTS engine puts it.

Timing, best source first: word timings from the TTS engine (``[{"word": "hello", "start": 0.0,
"end": 0.32}, ...]``, seconds from the audio's start), else the total duration of the audio, else
a speaking-rate model; ``start`` shifts all of it to where the audio starts in the line.

No per-channel Python loops: an offline render is one (frames x window) dominance matrix times a
(window x channels) target stack in numpy; the frame clock's path (:meth:`SpeechPlan.apply_at`)
runs the same formula for one instant in a small Numba kernel, so both give the same numbers.
A plan is built off the frame clock (the dictionary lookups take milliseconds); after that it is
read-only, so any thread may sample it.

    plan = SpeechPlan.from_text("Hello there.", words=None, duration=None, start=0.2)
    mouth = plan.render(60)            # float32[n, 61]: NaN where speech does not drive
    frames = compose(expression, mouth, plan.weight(60))
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from runtime import channels
from runtime.animate import phonemes as ph
from runtime.animate.gestures import Gestures

# -- channels -------------------------------------------------------------------------------------
# Owned: while speaking, speech replaces the expression here. Additive: speech adds to it (a spread
# vowel adds a little smile; the expression's smile stays).
_OWNED_NAMES = ("JawOpen", "JawForward", "MouthClose", "MouthFunnel", "MouthPucker", "MouthRollLower",
                "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPress", "MouthLowerDown",
                "MouthUpperUp", "MouthStretch", "TongueOut")
_ADDITIVE_NAMES = ("MouthSmile",)


def _idx(names: Iterable[str]) -> np.ndarray:
    return np.array([i for n in names for i in channels.indices(n)], dtype=np.intp)


OWNED = np.zeros(channels.COUNT, dtype=bool)
OWNED[_idx(_OWNED_NAMES)] = True
ADDITIVE = np.zeros(channels.COUNT, dtype=bool)
ADDITIVE[_idx(_ADDITIVE_NAMES)] = True
MASK = OWNED | ADDITIVE  # every channel the layer drives
DRIVEN = np.flatnonzero(MASK)  # column order of the compact pose vectors below
K = len(DRIVEN)
_COL = {int(c): k for k, c in enumerate(DRIVEN)}
JAW, CLOSE = channels.INDEX["JawOpen"], channels.INDEX["MouthClose"]


def _pose(**values: float) -> np.ndarray:
    v = np.zeros(K, dtype=np.float64)
    for name, x in values.items():
        for i in channels.indices(name):
            v[_COL[i]] = x
    return v


# -- visemes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Viseme:
    pose: np.ndarray  # float64[K], in DRIVEN order
    alpha: float  # dominance strength: how hard this sound insists on its shape
    before: float  # seconds: how early the shape is anticipated (dominance 1/e that far before)
    after: float  # seconds: how long it lingers after the sound


# Calibration toward real speech capture (S88-001 in ../shared/data/recordings; measured with
# tools/eval_realism.py): a captured jaw does not swing shut at every consonant and wide open at
# every vowel, and lips move less than the textbook visemes; at the table's raw values our mouths
# moved 3-5x faster than real speech. Every sound's jaw opening is drawn toward JAW_CENTRE by
# JAW_CONTRAST (MouthClose rises by what the jaw gained, so the lips still meet at p/b/m), the
# secondary lip shapes are scaled by LIP_GAIN (the defining ones, pucker and the f/v lip, by
# SHAPE_GAIN: smaller, and the rule checks of tools/eval_speech.py fail), an unstressed vowel opens
# the jaw UNSTRESSED_JAW as far as a stressed one, and every sound softer than _CRISP (not p/b/m,
# f/v, rounding) is anticipated and carried over SPREAD times longer. JAW_CONTRAST, LIP_GAIN,
# SHAPE_GAIN, SPREAD = 1 and UNSTRESSED_JAW = UNSTRESSED give the table as written.
JAW_CENTRE = 0.25
JAW_CONTRAST = 0.25
LIP_GAIN = 0.25
SPREAD = 1.0
SHAPE_GAIN = 1.0
UNSTRESSED_JAW = 0.8  # was UNSTRESSED (0.6): a jaw swing at every schwa
_DEFINING = ("MouthPucker", "MouthRollLower")
_CRISP = 2.0  # alpha at or above which a sound keeps its own timing (p, b, m, f, rounded vowels)
_GAINED = ("MouthFunnel", "MouthRollUpper", "MouthShrugLower",
           "MouthShrugUpper", "MouthPress", "MouthLowerDown", "MouthUpperUp", "MouthStretch", "MouthSmile",
           "TongueOut")


def _v(alpha: float, before: float, after: float, **pose: float) -> Viseme:
    if pose:  # a sound (silence keeps the rest pose)
        jaw = pose.get("JawOpen", 0.0)
        lifted = JAW_CENTRE + JAW_CONTRAST * (jaw - JAW_CENTRE)
        pose["JawOpen"] = lifted
        if "MouthClose" in pose:
            pose["MouthClose"] += max(lifted - jaw, 0.0)
        for name in _GAINED:
            if name in pose:
                pose[name] *= LIP_GAIN
        for name in _DEFINING:
            if name in pose:
                pose[name] *= SHAPE_GAIN
        if alpha < _CRISP and "MouthPucker" not in pose:  # rounding keeps its own timing too
            before, after = before * SPREAD, after * SPREAD
    return Viseme(_pose(**pose), alpha, before, after)


# Lips touch when JawOpen - MouthClose <= 0.05 (ARKit's MouthClose closes the lips over an open
# jaw); the bilabial pose sits below that with margin, open vowels well above 0.15.
VISEMES: dict[str, Viseme] = {
    "sil": _v(1.0, 0.05, 0.05),
    "PP": _v(20.0, 0.015, 0.015, JawOpen=0.04, MouthClose=0.1, MouthPress=0.35, MouthRollLower=0.12,
             MouthRollUpper=0.08),
    "MM": _v(20.0, 0.015, 0.015, JawOpen=0.03, MouthClose=0.08, MouthPress=0.2, MouthRollLower=0.08),
    "FF": _v(6.0, 0.025, 0.025, JawOpen=0.08, MouthClose=0.02, MouthRollLower=0.55, MouthUpperUp=0.25,
             MouthShrugUpper=0.1),
    "TH": _v(2.0, 0.03, 0.03, JawOpen=0.12, TongueOut=0.12, MouthUpperUp=0.08),
    "SS": _v(1.5, 0.04, 0.03, JawOpen=0.06, MouthStretch=0.25, MouthUpperUp=0.12, MouthLowerDown=0.12),
    "SH": _v(3.0, 0.05, 0.04, JawOpen=0.1, MouthFunnel=0.45, MouthPucker=0.25, MouthShrugUpper=0.2,
             MouthUpperUp=0.1),
    "DD": _v(0.6, 0.04, 0.04, JawOpen=0.12, MouthStretch=0.1),
    "NN": _v(0.5, 0.04, 0.04, JawOpen=0.1, MouthStretch=0.08),
    "LL": _v(0.5, 0.04, 0.04, JawOpen=0.16),
    "KK": _v(0.5, 0.04, 0.04, JawOpen=0.14),
    "HH": _v(0.2, 0.04, 0.04, JawOpen=0.18),
    "RR": _v(1.2, 0.06, 0.04, JawOpen=0.1, MouthPucker=0.3, MouthFunnel=0.2),
    "WW": _v(3.0, 0.08, 0.04, JawOpen=0.05, MouthPucker=0.75, MouthFunnel=0.35),
    "YY": _v(0.8, 0.04, 0.04, JawOpen=0.08, MouthStretch=0.25, MouthSmile=0.08),
    # vowels
    "AA": _v(1.5, 0.06, 0.06, JawOpen=0.55, MouthLowerDown=0.2),
    "AE": _v(1.5, 0.06, 0.06, JawOpen=0.45, MouthStretch=0.3, MouthUpperUp=0.15, MouthLowerDown=0.2),
    "AH": _v(1.5, 0.06, 0.06, JawOpen=0.4, MouthLowerDown=0.12),
    "AO": _v(1.5, 0.06, 0.06, JawOpen=0.45, MouthFunnel=0.35, MouthPucker=0.15),
    "EH": _v(1.2, 0.06, 0.06, JawOpen=0.32, MouthStretch=0.25, MouthLowerDown=0.15),
    "ER": _v(1.2, 0.06, 0.06, JawOpen=0.2, MouthFunnel=0.3, MouthPucker=0.25),
    "IH": _v(1.0, 0.06, 0.06, JawOpen=0.2, MouthStretch=0.3),
    "IY": _v(1.2, 0.06, 0.06, JawOpen=0.12, MouthStretch=0.45, MouthSmile=0.15),
    "UH": _v(1.5, 0.06, 0.06, JawOpen=0.2, MouthPucker=0.6, MouthFunnel=0.3),
    "UW": _v(2.0, 0.08, 0.06, JawOpen=0.12, MouthPucker=0.8, MouthFunnel=0.45),
    "OW": _v(1.5, 0.07, 0.06, JawOpen=0.35, MouthFunnel=0.5, MouthPucker=0.45),
}

# Phoneme -> viseme(s). Diphthongs glide: two segments sharing the phoneme's time (fractions).
PHONEME_VISEMES: dict[str, tuple[tuple[str, float], ...]] = {
    "P": (("PP", 1.0),), "B": (("PP", 1.0),), "M": (("MM", 1.0),),
    "F": (("FF", 1.0),), "V": (("FF", 1.0),), "TH": (("TH", 1.0),), "DH": (("TH", 1.0),),
    "S": (("SS", 1.0),), "Z": (("SS", 1.0),), "SH": (("SH", 1.0),), "ZH": (("SH", 1.0),),
    "CH": (("SH", 1.0),), "JH": (("SH", 1.0),), "T": (("DD", 1.0),), "D": (("DD", 1.0),),
    "N": (("NN", 1.0),), "L": (("LL", 1.0),), "K": (("KK", 1.0),), "G": (("KK", 1.0),),
    "NG": (("KK", 1.0),), "HH": (("HH", 1.0),), "R": (("RR", 1.0),), "W": (("WW", 1.0),),
    "Y": (("YY", 1.0),),
    "AA": (("AA", 1.0),), "AE": (("AE", 1.0),), "AH": (("AH", 1.0),), "AO": (("AO", 1.0),),
    "EH": (("EH", 1.0),), "ER": (("ER", 1.0),), "IH": (("IH", 1.0),), "IY": (("IY", 1.0),),
    "UH": (("UH", 1.0),), "UW": (("UW", 1.0),), "OW": (("OW", 0.6), ("UH", 0.4)),
    "AW": (("AA", 0.6), ("UH", 0.4)), "AY": (("AA", 0.6), ("IY", 0.4)), "EY": (("EH", 0.6), ("IY", 0.4)),
    "OY": (("AO", 0.5), ("IY", 0.5)),
}

# Vowel groups for the measures and tests.
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY"})
ROUNDED_VOWELS = frozenset({"UW", "UH", "OW"})
BILABIALS = frozenset({"P", "B", "M"})

# Intrinsic durations (seconds) of each sound, relative to one another (after Klatt 1979).
DURATIONS: dict[str, float] = {
    "AA": 0.13, "AE": 0.13, "AH": 0.09, "AO": 0.13, "AW": 0.16, "AY": 0.16, "EH": 0.10, "ER": 0.12,
    "EY": 0.14, "IH": 0.08, "IY": 0.11, "OW": 0.14, "OY": 0.17, "UH": 0.08, "UW": 0.12,
    "P": 0.08, "B": 0.07, "T": 0.07, "D": 0.06, "K": 0.08, "G": 0.07, "CH": 0.10, "JH": 0.09,
    "F": 0.09, "V": 0.06, "TH": 0.09, "DH": 0.04, "S": 0.10, "Z": 0.08, "SH": 0.11, "ZH": 0.08,
    "HH": 0.06, "M": 0.07, "N": 0.06, "NG": 0.07, "L": 0.06, "R": 0.06, "W": 0.06, "Y": 0.05,
}
PACE = 1.25  # the table is brisk (~205 words a minute with pauses): x1.25 gives ~165 at rate 1
UNSTRESSED = 0.6  # duration and jaw factor of an unstressed vowel (a schwa is short and closed)
PHRASE_FINAL = 1.4  # the last sound before a pause is drawn out
MIN_GAP = 0.1  # seconds: a shorter gap between timed words is not a pause
WINDOW = 4  # segments either side of the current one that can influence a frame
RAMP_IN, RAMP_OUT, MERGE = 0.12, 0.18, 0.4  # speech weight envelope (seconds)

_VIS_NAMES = tuple(VISEMES)
_VIS_POSE = np.stack([VISEMES[v].pose for v in _VIS_NAMES])
_VIS_PARAMS = np.array([[VISEMES[v].alpha, VISEMES[v].before, VISEMES[v].after] for v in _VIS_NAMES])
_VIS_ID = {v: i for i, v in enumerate(_VIS_NAMES)}
_JAWCOL = _COL[JAW]
_OWNED_K = OWNED[DRIVEN]
_LOW_K, _HIGH_K = channels.LOW[DRIVEN], channels.HIGH[DRIVEN]


@dataclass(frozen=True)
class Phone:
    """One timed phoneme, in line time (seconds)."""

    phoneme: str  # ARPAbet with stress digit, e.g. "AA1"
    start: float
    end: float
    word: int  # index into SpeechPlan.words
    gain: float = 1.0  # jaw factor from the voice's loudness (runtime.audio): 0 silent, >1 loud


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


def _check_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return float(value)


def validate_words(words: object) -> list[tuple[str, float, float]]:
    """Check TTS word timings; raise ValueError naming the first bad entry and what is wrong."""
    if not isinstance(words, list | tuple):
        raise ValueError(f"words must be a list of {{\"word\", \"start\", \"end\"}} objects, "
                         f"not {type(words).__name__}")
    out: list[tuple[str, float, float]] = []
    prev = -math.inf
    for i, w in enumerate(words):
        where = f"words[{i}]"
        if not isinstance(w, dict):
            raise ValueError(f"{where} must be an object with \"word\", \"start\", \"end\", "
                             f"not {type(w).__name__} {w!r}")
        missing = [k for k in ("word", "start", "end") if k not in w]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}: {w!r}")
        if not isinstance(w["word"], str):
            raise ValueError(f"{where}.word must be a string, not {type(w['word']).__name__}")
        start = _check_number(w["start"], f"{where}.start")
        end = _check_number(w["end"], f"{where}.end")
        if start < 0:
            raise ValueError(f"{where}.start is negative ({start}); times are seconds from the audio's start")
        if end < start:
            raise ValueError(f"{where} ({w['word']!r}) ends ({end}) before it starts ({start})")
        if start < prev:
            raise ValueError(f"{where} ({w['word']!r}) starts at {start}, before words[{i - 1}] "
                             f"(at {prev}); words must be in time order")
        prev = start
        out.append((w["word"], start, end))
    return out


def _durations(phones: Sequence[str]) -> np.ndarray:
    d = np.empty(len(phones))
    for i, p in enumerate(phones):
        base, stress = ph.split(p)
        d[i] = DURATIONS.get(base, 0.08) * (UNSTRESSED if stress == 0 else 1.0)
    return d


@dataclass
class SpeechPlan:
    """A line's timed phonemes and the dominance segments that animate them."""

    words: list[Word]
    phones: list[Phone]
    source: str  # "words" | "duration" | "rate": where the timing came from
    start: float = 0.0
    # segments (diphthongs split, silences added), in line time
    seg_start: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seg_end: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seg_pose: np.ndarray = field(default_factory=lambda: np.zeros((0, K)))  # targets, DRIVEN order
    seg_params: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # alpha, before, after
    env_t: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0]))  # speech weight breakpoints
    env_w: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0]))
    gestures: Gestures | None = None  # beats (brows, nods, blinks) added on top, e.g. from the voice

    def __post_init__(self) -> None:
        # plain-Python and reciprocal copies for the per-frame path
        self._starts: list[float] = self.seg_start.tolist()
        self._first = float(self.seg_start[0]) if len(self.seg_start) else 0.0
        self._last = float(self.seg_end[-1]) if len(self.seg_end) else 0.0
        self._env = (self.env_t.tolist(), self.env_w.tolist())
        self._alpha = np.ascontiguousarray(self.seg_params[:, 0])
        self._inv_before = 1.0 / self.seg_params[:, 1]
        self._inv_after = 1.0 / self.seg_params[:, 2]

    mask = MASK

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str = "", words: object = None, duration: float | None = None,
                  start: float = 0.0, rate: float = 1.0) -> SpeechPlan:
        """Plan the mouth for a line.

        ``words``: TTS word timings (seconds from the audio's start); when given, their spellings
        are what is pronounced and ``text`` is not used. ``duration``: seconds of audio, when
        there are no word timings. Otherwise ``rate`` (1 = about 165 words a minute) sets the pace.
        ``start``: where the audio starts in the line's time.
        """
        start = _check_number(start, "start")
        rate = _check_number(rate, "rate")
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if duration is not None:
            duration = _check_number(duration, "duration")
            if duration <= 0:
                raise ValueError(f"duration must be positive seconds, not {duration}")
        if words is not None:
            return cls._from_words(validate_words(words), start)
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, not {type(text).__name__}")
        return cls._from_rate(text, duration, start, rate)

    @classmethod
    def _from_words(cls, timed: list[tuple[str, float, float]], start: float) -> SpeechPlan:
        words: list[Word] = []
        phones: list[Phone] = []
        for i, (text, t0, t1) in enumerate(timed):
            seq = [p for tok in ph.tokenize(text) if tok.kind == "word" for p in ph.pronounce(tok.text)]
            # a gap shorter than MIN_GAP before the next word is part of this one, not a pause
            nxt = timed[i + 1][1] if i + 1 < len(timed) else math.inf
            if t1 < nxt < t1 + MIN_GAP:
                t1 = nxt
            t1 = min(t1, nxt)  # overlapping TTS words: the next word wins
            words.append(Word(text, start + t0, start + t1))
            if not seq or t1 <= t0:
                continue
            d = _durations(seq)
            edges = t0 + (t1 - t0) * np.concatenate([[0.0], np.cumsum(d) / d.sum()])
            phones += [Phone(p, start + a, start + b, len(words) - 1)
                       for p, a, b in zip(seq, edges[:-1].tolist(), edges[1:].tolist())]
        return cls._build(words, phones, "words", start)

    @classmethod
    def from_phones(cls, phones: Sequence[tuple], start: float = 0.0, source: str = "audio") -> SpeechPlan:
        """Plan the mouth from timed phones found in the audio (:mod:`runtime.audio`).

        ``phones``: ``(phoneme, start, end, word, gain)`` tuples in time order, seconds from the
        audio's start; ``word`` (text, may be "") and ``gain`` (jaw factor, default 1) optional.
        The same segments, dominance blend and envelope as a plan from text; ``start`` shifts it
        to where the audio starts in the line."""
        start = _check_number(start, "start")
        words: list[Word] = []
        out: list[Phone] = []
        last_word = None
        for item in phones:
            p, a, b = item[0], float(item[1]), float(item[2])
            w = item[3] if len(item) > 3 else ""
            g = float(item[4]) if len(item) > 4 else 1.0
            if b <= a:
                continue
            if not words or w != last_word or not w:
                words.append(Word(w, start + a, start + b))
                last_word = w
            else:
                words[-1] = Word(w, words[-1].start, start + b)
            out.append(Phone(p, start + a, start + b, len(words) - 1, g))
        return cls._build(words, out, source, start)

    @classmethod
    def _from_rate(cls, text: str, duration: float | None, start: float, rate: float) -> SpeechPlan:
        # (word, phonemes, pause after) with leading pauses dropped
        items: list[tuple[str, list[str], float]] = []
        for tok in ph.tokenize(text):
            if tok.kind == "pause":
                if items:
                    w, seq, p = items[-1]
                    items[-1] = (w, seq, p + tok.pause)
                continue
            seq = ph.pronounce(tok.text)
            if seq:
                items.append((tok.text, seq, 0.0))
        if items:  # no pause after the last word: the audio ends with it
            items[-1] = (items[-1][0], items[-1][1], 0.0)
        durs = []
        for _, seq, pause in items:
            d = _durations(seq)
            if pause > 0:
                d[-1] *= PHRASE_FINAL
            durs.append(d)
        total = sum(float(d.sum()) + p for d, (_, _, p) in zip(durs, items))
        scale = (duration / total) if (duration is not None and total > 0) else PACE / rate
        words: list[Word] = []
        phones: list[Phone] = []
        t = start
        for d, (text_w, seq, pause) in zip(durs, items):
            edges = t + np.concatenate([[0.0], np.cumsum(d * scale)])
            words.append(Word(text_w, float(edges[0]), float(edges[-1])))
            phones += [Phone(p, a, b, len(words) - 1)
                       for p, a, b in zip(seq, edges[:-1].tolist(), edges[1:].tolist())]
            t = float(edges[-1]) + pause * scale
        return cls._build(words, phones, "duration" if duration is not None else "rate", start)

    @classmethod
    def _build(cls, words: list[Word], phones: list[Phone], source: str, start: float) -> SpeechPlan:
        starts: list[float] = []
        ends: list[float] = []
        vis: list[int] = []
        jaw: list[float] = []
        sil = _VIS_ID["sil"]

        def add(a: float, b: float, v: int, j: float = 1.0) -> None:
            starts.append(a)
            ends.append(b)
            vis.append(v)
            jaw.append(j)

        first = phones[0].start if phones else start
        add(first - 10.0, first, sil)  # rest before speech (long, so any earlier time finds it)
        for k, p in enumerate(phones):
            if k and p.start > phones[k - 1].end:
                add(phones[k - 1].end, p.start, sil)  # a pause between words
            base, stress = ph.split(p.phoneme)
            j = (UNSTRESSED_JAW if stress == 0 else 1.0) * p.gain
            a = p.start
            for name, frac in PHONEME_VISEMES.get(base, (("NN", 1.0),)):
                b = a + frac * (p.end - p.start)
                add(a, b, _VIS_ID[name], j)
                a = b
        last = phones[-1].end if phones else start
        add(last, last + 10.0, sil)
        v = np.array(vis, dtype=np.intp)
        pose = _VIS_POSE[v].copy()
        pose[:, _JAWCOL] *= np.array(jaw)
        # speech weight: 1 while talking (short pauses included), ramping at the edges of each stretch
        bt: list[float] = []
        bw: list[float] = []
        if phones:
            runs = [[phones[0].start, phones[0].end]]
            for p in phones[1:]:
                if p.start - runs[-1][1] < MERGE:
                    runs[-1][1] = max(runs[-1][1], p.end)
                else:
                    runs.append([p.start, p.end])
            for a, b in runs:
                bt += [a - RAMP_IN, a - 0.02, b + 0.02, b + RAMP_OUT]
                bw += [0.0, 1.0, 1.0, 0.0]
        return cls(words, phones, source, start, np.array(starts), np.array(ends), pose, _VIS_PARAMS[v],
                   np.array(bt or [0.0, 1.0]), np.array(bw or [0.0, 0.0]))

    # -- times ------------------------------------------------------------------------------------
    @property
    def end(self) -> float:
        """Line time of the last sound (the start offset if there is nothing to say)."""
        return self.phones[-1].end if self.phones else self.start

    @property
    def duration(self) -> float:
        """Line time until the mouth is back at rest: the last sound plus the release ramp."""
        return self.end + RAMP_OUT if self.phones else 0.0

    def frames(self, fps: float) -> int:
        return int(math.floor(self.duration * fps + 1e-9)) + 1

    # -- evaluating -------------------------------------------------------------------------------
    def _poses(self, t: np.ndarray) -> np.ndarray:
        """Compact poses (n x K) at line times t: dominance-weighted mean of nearby targets."""
        m = len(self.seg_start)
        t = np.clip(t, self.seg_start[0], self.seg_end[-1])  # beyond the outer rests: rest
        j = np.searchsorted(self.seg_start, t, side="right") - 1
        idx = j[:, None] + np.arange(-WINDOW, WINDOW + 1)
        valid = (idx >= 0) & (idx < m)
        idx = np.clip(idx, 0, m - 1)
        alpha, before, after = (self.seg_params[idx, c] for c in range(3))
        tt = t[:, None]
        dist = np.maximum((self.seg_start[idx] - tt) / before, 0.0) + np.maximum((tt - self.seg_end[idx]) / after, 0.0)
        dom = alpha * np.exp(-dist * dist) * valid
        dom /= dom.sum(axis=1, keepdims=True)
        return np.einsum("nw,nwk->nk", dom, self.seg_pose[idx])

    def times(self, fps: float, n: int | None = None) -> np.ndarray:
        return np.arange(self.frames(fps) if n is None else n) / float(fps)

    def render(self, fps: float, n: int | None = None) -> np.ndarray:
        """float32[n, 61] mouth track, frame i at line time i/fps; NaN on channels not driven.

        ``n`` defaults to :meth:`frames` (through the release); pass the expression track's length
        to get tracks that line up.
        """
        t = self.times(fps, n)
        out = np.full((len(t), channels.COUNT), np.nan, dtype=np.float32)
        out[:, DRIVEN] = self._poses(t)
        return out

    def weight(self, fps: float | None = None, n: int | None = None, *, t: np.ndarray | None = None) -> np.ndarray:
        """float32[n]: how much speech owns the mouth at each frame (0 before, 1 while talking)."""
        if t is None:
            t = self.times(fps, n)
        return np.interp(t, self.env_t, self.env_w).astype(np.float32)

    def _pose_at(self, t: float, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`_poses` for one time (compact float64[K]): the frame clock's path, in Numba."""
        out = np.empty(K) if out is None else out
        t = min(max(t, self._first), self._last)
        j = bisect.bisect_right(self._starts, t) - 1
        _pose_kernel(t, max(j - WINDOW, 0), min(j + WINDOW + 1, len(self._starts)), self.seg_start,
                     self.seg_end, self._alpha, self._inv_before, self._inv_after, self.seg_pose, out)
        return out

    def _weight_at(self, t: float) -> float:
        xs, ys = self._env
        i = bisect.bisect_right(xs, t)
        if i == 0 or i == len(xs):
            return 0.0
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (t - x0) / (x1 - x0) if x1 > x0 else y1

    def sample(self, t: float, out: np.ndarray) -> float:
        """Write the mouth pose at line time t into ``out`` (float32[61], driven channels only);
        return the speech weight there. For the frame clock: no allocation beyond a few tiny arrays."""
        out[DRIVEN] = self._pose_at(t)
        return self._weight_at(t)

    def apply(self, expression: np.ndarray, fps: float) -> np.ndarray:
        """Offline: compose this line's mouth over an expression track (float32[n, 61], frame i at
        line time i/fps). When the speech outlasts the track, the track's last frame is held so
        the take runs until the mouth is back at rest."""
        expression = np.asarray(expression, dtype=np.float32)
        n = max(len(expression), self.frames(fps))
        if len(expression) < n:
            tail = expression[-1:] if len(expression) else np.zeros((1, channels.COUNT), np.float32)
            expression = np.concatenate([expression, np.repeat(tail, n - len(expression), axis=0)])
        out = compose(expression, self.render(fps, n), self.weight(fps, n))
        if self.gestures is not None and len(self.gestures):
            out += self.gestures.render(self.times(fps, n))
            channels.clamp(out, out=out)
        return out

    def apply_at(self, t: float, frame: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
        """Streaming: compose the mouth at line time t over ``frame`` (float32[61]) in place.

        The same arithmetic as :func:`compose`, on the driven channels only (others are left as
        they are, unclamped), in Numba. ``scratch``: optional float64[K] buffer, to allocate
        nothing per frame."""
        if self.gestures is not None:
            self.gestures.add_at(t, frame)
        w = self._weight_at(t)
        if w <= 0.0:
            return frame
        pose = self._pose_at(t, scratch if scratch is not None and scratch.shape == (K,) else None)
        _compose_kernel(frame, pose, w, DRIVEN, _OWNED_K, _LOW_K, _HIGH_K)
        return frame


@njit(cache=True)
def _pose_kernel(t: float, a: int, b: int, start: np.ndarray, end: np.ndarray, alpha: np.ndarray,
                 inv_before: np.ndarray, inv_after: np.ndarray, poses: np.ndarray, out: np.ndarray) -> None:
    out[:] = 0.0
    total = 0.0
    for i in range(a, b):
        dist = max((start[i] - t) * inv_before[i], 0.0) + max((t - end[i]) * inv_after[i], 0.0)
        dom = alpha[i] * np.exp(-dist * dist)
        total += dom
        for k in range(out.shape[0]):
            out[k] += dom * poses[i, k]
    for k in range(out.shape[0]):
        out[k] /= total


@njit(cache=True)
def _compose_kernel(frame: np.ndarray, pose: np.ndarray, w: float, driven: np.ndarray, owned: np.ndarray,
                    low: np.ndarray, high: np.ndarray) -> None:
    for k in range(driven.shape[0]):
        c = driven[k]
        e = frame[c]
        v = e + w * ((pose[k] - e) if owned[k] else pose[k])
        frame[c] = min(max(v, low[k]), high[k])


def compose(expression: np.ndarray, speech: np.ndarray, weight: float | np.ndarray | None = None,
            mask: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Speech over expression, every channel clamped to its range.

    ``expression``: float32[61] or [n, 61]; ``speech``: [61] or [n, 61], NaN where it has nothing
    to say; ``weight``: scalar or [n], how much speech owns the mouth (default 1); ``mask``:
    bool[61], the channels speech may touch (default :data:`MASK`). Owned channels (jaw, lips)
    blend from expression to speech by the weight; additive ones (smile) add speech on top of the
    expression, so a smile stays while talking; brows, eyes, cheeks and head are the expression's.
    """
    expression = np.asarray(expression, dtype=np.float32)
    speech = np.asarray(speech, dtype=np.float32)
    use = (MASK if mask is None else (np.asarray(mask, dtype=bool) & MASK)) & ~np.isnan(speech)
    s = np.where(use, speech, 0.0)
    e = expression
    delta = np.where(OWNED, s - e, s) * use
    w = np.float32(1.0) if weight is None else np.asarray(weight, dtype=np.float32)
    if w.ndim == 1:
        w = w[:, None]
    res = e + w * delta
    if out is None:
        out = np.empty(np.broadcast_shapes(e.shape, s.shape), dtype=np.float32)
    out[...] = res
    return channels.clamp(out, out=out)


def load_words(source: str | bytes | Path) -> list[dict]:
    """Word timings from a JSON file (``--words FILE.json``) or JSON text: a list of
    ``{"word", "start", "end"}`` or an object holding one under ``"words"``. Validated; raises
    ValueError with a message that names the file and the problem."""
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("[", "{"))):
        where = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read word timings from {where}: {e.strerror or e}") from None
    else:
        where, text = "word timings", source
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not JSON: {e}") from None
    if isinstance(data, dict) and "words" in data:
        data = data["words"]
    try:
        validate_words(data)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return data


def warm() -> None:
    """Load the pronouncing dictionary and compile the streaming kernels now (about half a second,
    longer on a first run without Numba's cache), so the first line does not wait."""
    ph.load()
    SpeechPlan.from_text("Hello.").apply_at(0.1, np.zeros(channels.COUNT, np.float32))
