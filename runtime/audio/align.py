"""Phones and their times from a voice, with PocketSphinx (CMU's recogniser; its wheel ships the
en-US acoustic model and dictionary, so nothing is downloaded).

* :func:`align`: the text is known, so forced alignment: the words' pronunciations (PocketSphinx's
  dictionary, ours for words it lacks) are fitted to the audio, which gives every phone's start and
  end to the 10 ms frame. Pauses come out as silence.
* :func:`recognize`: no text, so phone recognition (PocketSphinx's "allphone" search with its
  phone trigram model): less exact, but it needs nothing but the audio.
* :class:`PhoneStream`: phone recognition fed chunk by chunk; after each chunk it reports the
  phones so far (the last one or two may still change).

Input is float32 mono at 16 kHz (:func:`runtime.audio.wav.resample`). A PocketSphinx decoder is
not thread-safe and takes ~0.1 s to build, so each thread keeps its own (:func:`_decoder`).
Phones are ARPAbet; vowels get a stress digit (from our dictionary when the word is known, else
from the vowel's length), so the speech layer treats them as it treats phones from text.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from runtime.animate import phonemes as ph
from runtime.audio.wav import AudioError, to_pcm16

log = logging.getLogger(__name__)

RATE = 16000  # what the acoustic model was trained on
FRAME = 0.01  # seconds per recogniser frame
# Forced alignment with a narrow beam fails outright on synthetic voices the model finds odd
# (espeak-ng's formant voice): try a normal beam, then a very wide one before giving up.
_ALIGN_BEAMS = (1e-60, 1e-300)
_SILENCES = {"SIL", "<sil>", "<s>", "</s>"}
# Digital silence (exact zeros, as synthesizers write) gives the recogniser's features log(0) and
# derails it: forced alignment of espeak-ng's voice fails outright without a noise floor.
NOISE_FLOOR = 1e-3  # about -60 dBFS of fixed-seed white noise added before recognition


class AlignError(AudioError):
    """The recogniser could not fit the text to the audio (or found no speech)."""


@dataclass(frozen=True)
class TimedPhone:
    phone: str  # ARPAbet, vowels with a stress digit ("AA1"); never silence
    start: float  # seconds from the audio's start
    end: float
    word: str = ""  # the word it belongs to, when aligned to text


_pool: dict[tuple, list] = {}  # idle decoders by (kind, beam): built once, lent to one user at a time
_pool_lock = threading.Lock()


def _model() -> tuple[str, str]:
    import pocketsphinx

    base = pocketsphinx.get_model_path()
    return os.path.join(base, "en-us", "en-us"), os.path.join(base, "en-us", "en-us-phone.lm.bin")


def _build(kind: str, beam: float):
    import pocketsphinx

    hmm, phone_lm = _model()
    if kind == "align":
        return pocketsphinx.Decoder(hmm=hmm, lm=None, loglevel="FATAL", beam=beam, pbeam=beam, wbeam=beam)
    return pocketsphinx.Decoder(hmm=hmm, lm=None, allphone=phone_lm, loglevel="FATAL",
                                beam=1e-20, pbeam=1e-20, lw=2.0)


@contextmanager
def _decoder(kind: str, beam: float = 1e-60) -> Iterator:
    """Borrow an idle decoder for ``kind`` ("align" | "phones"); built on first need (~0.1 s)."""
    d = _take(kind, beam)
    try:
        yield d
    finally:
        _give(kind, beam, d)


def _take(kind: str, beam: float = 1e-60):
    with _pool_lock:
        idle = _pool.setdefault((kind, beam), [])
        if idle:
            return idle.pop()
    return _build(kind, beam)


def _give(kind: str, beam: float, d) -> None:
    with _pool_lock:
        _pool.setdefault((kind, beam), []).append(d)


def _pcm(x: np.ndarray) -> bytes:
    noise = np.random.default_rng(len(x)).standard_normal(len(x)).astype(np.float32)
    return to_pcm16(np.asarray(x, np.float32) + NOISE_FLOOR * noise)


def warm() -> None:
    """Build a decoder of each kind now (about 0.2 s), so the first line does not wait."""
    for kind, beam in (("align", _ALIGN_BEAMS[0]), ("phones", 1e-60)):
        with _pool_lock:
            if _pool.get((kind, beam)):
                continue
        _give(kind, beam, _build(kind, beam))


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def words_of(text: str) -> list[str]:
    """The words PocketSphinx is asked to find: tokens of the text, numbers spelled out, lowercase."""
    return [t.text.lower().replace("’", "'") for t in ph.tokenize(text) if t.kind == "word"]


def _stressed(base: str, dur: float) -> str:
    """A stress digit for a vowel without a dictionary entry: short central vowels are reduced."""
    if base not in ph.VOWELS:
        return base
    return base + ("0" if base in ("AH", "IH", "ER") and dur < 0.07 else "1")


def _with_stress(word: str, phones: list[tuple[str, float, float]]) -> list[TimedPhone]:
    ours = ph.pronounce(word) if word else []
    if [ph.split(p)[0] for p in ours] == [p for p, _, _ in phones]:
        return [TimedPhone(o, a, b, word) for o, (_, a, b) in zip(ours, phones)]
    return [TimedPhone(_stressed(p, b - a), a, b, word) for p, a, b in phones]


def align(x: np.ndarray, text: str) -> list[TimedPhone]:
    """Forced alignment of ``text`` to 16 kHz float32 mono ``x``. Raises :class:`AlignError`."""
    words = words_of(text)
    if not words:
        raise AlignError("the text has no words to align")
    pcm = _pcm(x)
    for beam in _ALIGN_BEAMS:
        with _decoder("align", beam) as d:
            out = _align_once(d, words, pcm, beam)
        if out:
            return out
    raise AlignError(f"could not align the text to the audio ({len(x) / RATE:.2f} s, {len(words)} words)")


def _align_once(d, words: list[str], pcm: bytes, beam: float) -> list[TimedPhone]:
    for w in set(words):
        if d.lookup_word(w) is None:
            seq = [ph.split(p)[0] for p in ph.pronounce(w)]
            if seq:
                d.add_word(w, " ".join(seq), True)
    spoken = [w for w in words if d.lookup_word(w) is not None]
    try:
        d.set_align_text(" ".join(spoken))
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        if hyp is None or len(hyp.hypstr.split()) < len(spoken):  # the beam lost the path
            return []
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        al = d.get_alignment()
    except RuntimeError as e:
        log.debug("alignment at beam %g failed: %s", beam, e)
        return []
    if al is None:
        return []
    out: list[TimedPhone] = []
    for word in al:
        name = word.name.split("(")[0]
        if name in _SILENCES or name.startswith("["):
            continue
        phones = [(p.name, p.start * FRAME, (p.start + p.duration) * FRAME) for p in word
                  if p.name not in _SILENCES]
        out += _with_stress(name, phones)
    return out


def _phones_from_seg(segs) -> list[TimedPhone]:
    out = []
    for s in segs:
        name = s.word
        if name in _SILENCES or name.startswith("+") or name.startswith("["):
            continue
        a, b = s.start_frame * FRAME, (s.end_frame + 1) * FRAME
        out.append(TimedPhone(_stressed(name, b - a), a, b))
    return out


def recognize(x: np.ndarray) -> list[TimedPhone]:
    """Phone recognition (no text) on 16 kHz float32 mono ``x``."""
    with _decoder("phones") as d:
        d.start_utt()
        d.process_raw(_pcm(x), full_utt=True)
        d.end_utt()
        return _phones_from_seg(d.seg() or [])


class PhoneStream:
    """Phone recognition, chunk by chunk, on a decoder of its own until :meth:`close` (feed it
    from one thread at a time)."""

    def __init__(self) -> None:
        self._d = _take("phones")
        self._d.start_utt()
        self.closed = False
        self.samples = 0

    def feed(self, x: np.ndarray) -> list[TimedPhone]:
        """16 kHz float32 mono -> every phone recognised so far (the tail is provisional)."""
        if len(x):
            self._d.process_raw(_pcm(x))
            self.samples += len(x)
        return _phones_from_seg(self._d.seg() or [])

    def close(self) -> list[TimedPhone]:
        if self.closed:
            return self._final
        self._d.end_utt()
        self.closed = True
        self._final = _phones_from_seg(self._d.seg() or [])
        _give("phones", 1e-60, self._d)
        return self._final
