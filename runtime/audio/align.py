"""Phones and their times from a voice, with PocketSphinx (CMU's recogniser; its wheel ships the
en-US acoustic model and dictionary, so nothing is downloaded).

* :func:`align`: the text is known, so forced alignment: the words' pronunciations (PocketSphinx's
  dictionary, ours for words it lacks) are fitted to the audio, which gives every phone's start and
  end to the 10 ms frame. Pauses come out as silence.
* :func:`recognize`: no text, so phone recognition (PocketSphinx's "allphone" search with its
  phone trigram model): less exact, but it needs nothing but the audio. It hears many m as n and
  b as d/g, so the stops and nasals it finds get a second opinion on the lips
  (:mod:`runtime.audio.labial`), and a frame-by-frame detector puts in the closures it did not hear
  at all (:mod:`runtime.audio.closure`).
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
from runtime.audio import closure, labial
from runtime.audio.wav import AudioError, to_pcm16

log = logging.getLogger(__name__)

RATE = 16000  # what the acoustic model was trained on
FRAME = 0.01  # seconds per recogniser frame
# Beams tried in turn. A narrow beam loses the path on voices the model finds odd (espeak-ng's
# formant voice needs a very wide one); a wide one can fail the second, phone-level pass where a
# narrow one succeeds (seen with festival's slt voice). The first that gives phones wins; else the
# first pass's word times are kept and the phones placed inside each word by intrinsic length.
_ALIGN_BEAMS = (1e-40, 1e-80, 1e-300)
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


PHONE_BEAM, PHONE_LW = 1e-20, 2.0  # phone recognition: beam and phone-LM weight
_CMN: dict[int, str] = {}  # each decoder's initial cepstral mean (see _start)
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
        d = pocketsphinx.Decoder(hmm=hmm, lm=None, loglevel="FATAL", beam=beam, pbeam=beam, wbeam=beam)
    elif kind == "words":  # large-vocabulary recognition with the wheel's en-US trigram model
        d = pocketsphinx.Decoder(hmm=hmm, loglevel="FATAL")
    else:
        d = pocketsphinx.Decoder(hmm=hmm, lm=None, allphone=phone_lm, loglevel="FATAL",
                                 beam=PHONE_BEAM, pbeam=PHONE_BEAM, lw=PHONE_LW)
    _CMN[id(d)] = d.get_cmn()  # decoders live as long as the process (pooled), so ids stay theirs
    return d


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


# PocketSphinx holds the GIL inside process_raw. A whole clip is decoded in one call
# (full_utt: the cepstral mean comes from the clip itself, which recognition needs: fed in slices
# it adapts from the model's mean and loses a tenth of the bilabials it finds), so whole clips
# are for a process with no clock to protect: runtime.audio.worker's child, or offline tools.
# The incremental stream is fed in 20 ms slices, each holding the GIL ~3 ms.
SLICE = 640  # bytes: 20 ms of 16 kHz 16-bit audio


def _feed(d, pcm: bytes) -> None:
    for i in range(0, len(pcm), SLICE):
        d.process_raw(pcm[i: i + SLICE])


def _start(d) -> None:
    """Begin an utterance from the model's own cepstral mean: fed in slices the decoder updates its
    mean as it goes, so without this a reused decoder's result would depend on its last clip."""
    cmn = _CMN.get(id(d))
    if cmn is None:
        _CMN[id(d)] = d.get_cmn()
    else:
        d.set_cmn(cmn)
    d.start_utt()


def _utterance(d, pcm: bytes) -> None:
    _start(d)
    d.process_raw(pcm, full_utt=True)
    d.end_utt()


def _pcm(x: np.ndarray) -> bytes:
    noise = np.random.default_rng(len(x)).standard_normal(len(x)).astype(np.float32)
    return to_pcm16(np.asarray(x, np.float32) + NOISE_FLOOR * noise)


def warm() -> None:
    """Build a decoder of each kind now (about 0.2 s), so the first line does not wait."""
    for kind, beam in (("align", _ALIGN_BEAMS[0]), ("phones", 1e-60)):  # the common case
        with _pool_lock:
            if _pool.get((kind, beam)):
                continue
        _give(kind, beam, _build(kind, beam))
    labial.net()  # the lips' second opinion: its weights, read once
    closure.detector()  # and the closure detector's


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
    word_times: list[tuple[str, float, float]] = []
    for beam in _ALIGN_BEAMS:
        with _decoder("align", beam) as d:
            out, wt = _align_once(d, words, pcm, beam)
        if out:
            return out
        word_times = word_times or wt
    if word_times:
        return _spread(word_times)
    raise AlignError(f"could not align the text to the audio ({len(x) / RATE:.2f} s, {len(words)} words)")


def _spread(word_times: list[tuple[str, float, float]]) -> list[TimedPhone]:
    """Words with times -> phones placed inside each by their intrinsic lengths."""
    from runtime.animate.speech import DURATIONS

    out: list[TimedPhone] = []
    for w, a, b in word_times:
        seq = ph.pronounce(w)
        if not seq or b <= a:
            continue
        d = np.array([DURATIONS.get(ph.split(p)[0], 0.08) for p in seq])
        edges = a + (b - a) * np.concatenate([[0.0], np.cumsum(d) / d.sum()])
        out += [TimedPhone(p, float(e0), float(e1), w) for p, e0, e1 in zip(seq, edges[:-1], edges[1:])]
    return out


def _align_once(d, words: list[str], pcm: bytes, beam: float
                ) -> tuple[list[TimedPhone], list[tuple[str, float, float]]]:
    """(phones, []) on success; ([], word times) when only the word-level pass worked."""
    for w in set(words):
        if d.lookup_word(w) is None:
            seq = [ph.split(p)[0] for p in ph.pronounce(w)]
            if seq:
                d.add_word(w, " ".join(seq), True)
    spoken = [w for w in words if d.lookup_word(w) is not None]
    word_times: list[tuple[str, float, float]] = []
    try:
        d.set_align_text(" ".join(spoken))
        _utterance(d, pcm)
        hyp = d.hyp()
        if hyp is None or len(hyp.hypstr.split()) < len(spoken):  # the beam lost the path
            return [], []
        word_times = [(s.word.split("(")[0], s.start_frame * FRAME, (s.end_frame + 1) * FRAME)
                      for s in d.seg() if s.word.split("(")[0] not in _SILENCES and not s.word.startswith("[")]
        d.set_alignment()
        _utterance(d, pcm)
        al = d.get_alignment()
    except RuntimeError as e:
        log.debug("alignment at beam %g failed: %s", beam, e)
        try:
            d.end_utt()  # a failed pass can leave the utterance open
        except RuntimeError:
            pass
        return [], word_times
    if al is None:
        return [], word_times
    out: list[TimedPhone] = []
    for word in al:
        name = word.name.split("(")[0]
        if name in _SILENCES or name.startswith("["):
            continue
        phones = [(p.name, p.start * FRAME, (p.start + p.duration) * FRAME) for p in word
                  if p.name not in _SILENCES]
        out += _with_stress(name, phones)
    return out, word_times


def _phones_from_seg(segs) -> list[TimedPhone]:
    out = []
    for s in segs:
        name = s.word
        if name in _SILENCES or name.startswith("+") or name.startswith("["):
            continue
        a, b = s.start_frame * FRAME, (s.end_frame + 1) * FRAME
        out.append(TimedPhone(_stressed(name, b - a), a, b))
    return out


def transcribe(x: np.ndarray) -> str:
    """Words heard in 16 kHz float32 mono ``x`` (large-vocabulary recognition; "" if none)."""
    with _decoder("words") as d:
        _utterance(d, _pcm(x))
        hyp = d.hyp()
    return hyp.hypstr if hyp is not None else ""


def recognize(x: np.ndarray, second_pass: bool = True) -> list[TimedPhone]:
    """Phone recognition (no text) on 16 kHz float32 mono ``x``; with ``second_pass``, stops and
    nasals get the lips' second opinion (:mod:`runtime.audio.labial`) and closures the recogniser
    did not hear at all are put in (:mod:`runtime.audio.closure`)."""
    with _decoder("phones") as d:
        _utterance(d, _pcm(x))
        phones = _phones_from_seg(d.seg() or [])
    if not second_pass:
        return phones
    x = np.asarray(x, np.float32)
    return closure.closures(x, labial.relabel(x, phones))


class PhoneStream:
    """Phone recognition, chunk by chunk, on a decoder of its own until :meth:`close` (feed it
    from one thread at a time)."""

    def __init__(self) -> None:
        self._d = _take("phones")
        _start(self._d)
        self.closed = False
        self.samples = 0
        self._x = np.zeros(1 << 15, np.float32)  # the audio so far, for the lips' second opinion
        self._verdicts: dict = {}  # labial.relabel's cache: each phone judged once
        self._frames = closure.Frames()  # the closure detector's frames: each computed once

    def feed(self, x: np.ndarray) -> list[TimedPhone]:
        """16 kHz float32 mono -> every phone recognised so far (the tail is provisional)."""
        if len(x):
            _feed(self._d, _pcm(x))
            while self.samples + len(x) > len(self._x):
                self._x = np.concatenate([self._x, np.zeros(len(self._x), np.float32)])
            self._x[self.samples: self.samples + len(x)] = x
            self.samples += len(x)
        x = self._x[: self.samples]
        phones = labial.relabel(x, _phones_from_seg(self._d.seg() or []), cache=self._verdicts, complete=False)
        return closure.closures(x, phones, self._frames, complete=False)

    def close(self) -> list[TimedPhone]:
        if self.closed:
            return self._final
        self._d.end_utt()
        self.closed = True
        x = self._x[: self.samples]
        phones = labial.relabel(x, _phones_from_seg(self._d.seg() or []), cache=self._verdicts)
        self._final = closure.closures(x, phones, self._frames)
        _give("phones", 1e-60, self._d)
        return self._final
