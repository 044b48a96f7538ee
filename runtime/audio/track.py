"""A line's voice -> the speech layer's input: timed phones with a loudness gain each.

:func:`analyse` does a whole clip (a WAV file, a TTS engine's finished audio); :class:`VoiceTrack`
takes the same audio in chunks as it arrives (sans-I/O: it neither reads sockets nor starts
threads; :class:`runtime.audio.live.LiveSpeech` runs it on a worker thread). Both end in a
:class:`~runtime.animate.speech.SpeechPlan` built by ``SpeechPlan.from_phones``, so coarticulation,
composition with the expression and clamping are the one mechanism the text path uses.

Phones: forced alignment when the text is known (falling back to recognition if the text does
not fit the audio), phone recognition when not. Loudness: each phone's jaw gain comes from its
level (:func:`runtime.audio.energy.gain`); a phone over silence gets gain 0, so the lips close.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from runtime.animate import gestures
from runtime.animate import phonemes as ph
from runtime.animate.speech import SpeechPlan
from runtime.audio import align, beats, energy
from runtime.audio.wav import AudioError, PcmDecoder, Resampler, read_wav, resample

log = logging.getLogger(__name__)

TAIL_VOWEL = "AH1"  # heard but not yet recognised: an open vowel scaled by loudness (see plan())
_TAIL_MIN = 0.03  # seconds: a tail shorter than this is left as it is


@dataclass
class Analysis:
    """What the mouth needs from a clip: phones (audio time) and the loudness envelope."""

    phones: list[align.TimedPhone]
    db: np.ndarray  # dBFS per energy.HOP seconds
    duration: float  # seconds of audio
    method: str  # "aligned" (to the text) | "transcribed" (to words recognised) | "recognized" (phones)
    error: str = ""  # why alignment fell back, when it did
    x16: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    def plan(self, start: float = 0.0, beats: bool = True, strength: float = 1.0) -> SpeechPlan:
        """The mouth (and with ``beats``, brow lifts, nods and blinks) for the clip; audio time 0
        at line time ``start``."""
        g = _beats(self.phones, self.db, self.x16, strength) if beats else None
        return plan_from(self.phones, self.db, start=start, source=f"audio:{self.method}", gestures=g)


def _beats(phones, db, x16, strength: float, until: float | None = None, cache: dict | None = None):
    return beats.detect(phones, db, x16, seed=len(db), strength=strength, until=until, cache=cache)


def _gains(phones: list[align.TimedPhone], db: np.ndarray, cache: dict | None = None) -> list[float]:
    out = []
    for p in phones:
        base = ph.split(p.phone)[0]
        key = (p.start, p.end)
        if cache is not None and key in cache:
            g = cache[key]
        else:
            g = energy.gain(energy.span_db(db, p.start, p.end))
            if cache is not None and p.end <= len(db) * energy.HOP:  # its loudness is all in
                cache[key] = g
        out.append(g if base in ph.VOWELS else (0.0 if g == 0.0 else 1.0))
    return out


def plan_from(phones: list[align.TimedPhone], db: np.ndarray, start: float = 0.0,
              source: str = "audio", gestures=None, cache: dict | None = None) -> SpeechPlan:
    """Timed phones + loudness -> a speech plan (vowels' jaw scaled by level, silent phones shut);
    ``gestures`` (audio time) ride along, shifted with it. ``cache``: kept between calls on a
    growing clip, so each phone's loudness is measured once."""
    gains = _gains(phones, db, cache)
    plan = SpeechPlan.from_phones([(p.phone, p.start, p.end, p.word, g) for p, g in zip(phones, gains)],
                                  start=start, source=source)
    if gestures is not None and len(gestures):
        plan.gestures = gestures.shifted(start) if start else gestures
    return plan


def analyse(samples: np.ndarray, rate: int, text: str | None = None, words: bool = False,
            recognizer=None) -> Analysis:
    """A whole clip: float32 mono samples at ``rate`` -> phones and loudness.

    Without text: phone recognition; with ``words``, the words are recognised first (the wheel's
    trigram model, about real time on this box: too slow for streaming) and then force-aligned,
    falling back to phone recognition when nothing is heard. ``recognizer``: where PocketSphinx
    runs (default this process; ``runtime.audio.worker.shared()`` beside a running frame clock)."""
    from runtime.audio import worker

    rec = recognizer if recognizer is not None else worker.Local()
    x16 = resample(samples, rate, align.RATE)
    db = energy.loudness(x16, align.RATE)
    dur = len(samples) / rate
    err = ""
    if text and align.words_of(text):
        try:
            return Analysis(rec.align(x16, text), db, dur, "aligned", x16=x16)
        except AudioError as e:
            err = str(e)
            log.info("alignment failed (%s); recognising phones instead", e)
    if not text and words:
        heard = align.transcribe(x16)
        if heard:
            try:
                return Analysis(align.align(x16, heard), db, dur, "transcribed", x16=x16)
            except AudioError as e:
                err = str(e)
    return Analysis(rec.recognize(x16), db, dur, "recognized", err, x16=x16)


def analyse_wav(source, text: str | None = None, *, max_bytes: int | None = None,
                max_seconds: float | None = None, recognizer=None) -> Analysis:
    """:func:`analyse` a WAV file or its bytes; raises :class:`AudioError` naming the problem."""
    x, rate = read_wav(source, max_bytes=max_bytes, max_seconds=max_seconds)
    return analyse(x, rate, text, recognizer=recognizer)


class VoiceTrack:
    """Audio in chunks -> a speech plan that grows with it.

    ``recognizer``: where PocketSphinx runs (:mod:`runtime.audio.worker`: ``Local()`` by default,
    ``shared()`` for a child process). ``feed(chunk)``: bytes (decoded by ``decoder``, raw PCM or
    a WAV stream) or float32 samples at ``rate``; ``close()``: the audio is complete. After each,
    :meth:`plan` is the mouth for all the audio so far: phones recognised so far, and for the last
    stretch the recogniser has not yet decided, a vowel scaled by loudness (so a chunk moves the
    mouth as soon as it is fed). At
    ``close()`` with text, the whole clip is force-aligned and the plan replaced by the exact one.
    Limits: ``max_seconds`` of audio (more is an :class:`AudioError`; the audio so far stays).
    """

    def __init__(self, rate: int | None = 16000, text: str | None = None, *, channels: int = 1,
                 sample_format: str = "s16le", wav: bool = False, max_seconds: float | None = None,
                 beats: bool = True, strength: float = 1.0, recognizer=None) -> None:
        self.decoder = PcmDecoder(rate or 16000, channels, sample_format, wav=wav)
        self.text = text or None
        self.max_seconds = max_seconds
        self._resampler: Resampler | None = None  # streaming, so the chunking changes nothing
        # where PocketSphinx runs: runtime.audio.worker.Local() (this process) or .shared() (a child)
        from runtime.audio import worker

        self.rec = recognizer if recognizer is not None else worker.Local()
        self._sid = self.rec.new_stream() if hasattr(self.rec, "new_stream") else id(self)
        self._streaming = False
        self.env = energy.Envelope(align.RATE)
        self.phones: list[align.TimedPhone] = []
        self.samples = 0  # input samples so far
        self.closed = False
        self.method = "recognized"
        self.error = ""
        self.beats, self.strength = beats, strength
        self._buf = np.zeros(1 << 16, np.float32)  # 16 kHz samples so far (grown by doubling)
        self._n16 = 0
        self._seen: list[tuple[int, float, float]] = []  # (kind, peak, first seen at): no pop-in
        self._gain_cache: dict = {}
        self._pitch_cache: dict = {}

    @property
    def rate(self) -> int | None:
        return self.decoder.rate

    @property
    def duration(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> None:
        if self.closed:
            raise AudioError("audio fed after the stream was closed")
        x = np.asarray(chunk, np.float32) if isinstance(chunk, np.ndarray) else self.decoder.feed(chunk)
        if not len(x):
            return
        if self.max_seconds is not None and (self.samples + len(x)) / self.rate > self.max_seconds:
            keep = max(int(self.max_seconds * self.rate) - self.samples, 0)
            if keep:
                self._take(x[:keep])
            raise AudioError(f"the audio is over the limit of {self.max_seconds:g} s")
        self._take(x)

    def _take(self, x: np.ndarray) -> None:
        self.samples += len(x)
        if self._resampler is None:
            self._resampler = Resampler(self.rate, align.RATE)
        self._push(self._resampler.feed(x))

    def _push(self, y: np.ndarray) -> None:
        if not len(y):
            return
        while self._n16 + len(y) > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros(len(self._buf), np.float32)])
        self._buf[self._n16: self._n16 + len(y)] = y
        self._n16 += len(y)
        self.env.feed(y)
        self._streaming = True
        self.phones = self.rec.feed(self._sid, y)

    def close(self) -> None:
        """The audio is complete: final recognition, or forced alignment when the text is known."""
        if self.closed:
            return
        self.closed = True
        err = None
        try:
            self.decoder.close()
        except AudioError as e:
            err = e  # keep what was decoded; report after the mouth is made
        if self._resampler is not None:
            self._push(self._resampler.flush())
        if self._streaming:
            self.phones = self.rec.close(self._sid)
        if self.text and self._n16:
            x16 = self._buf[: self._n16]
            try:
                self.phones = self.rec.align(x16, self.text)
                self.method = "aligned"
            except AudioError as e:
                self.error = str(e)
        if err is not None:
            raise err

    def plan(self, start: float = 0.0) -> SpeechPlan:
        """The mouth for the audio so far (audio time 0 at line time ``start``)."""
        phones = list(self.phones)
        heard = self.env.duration
        if not self.closed:
            # Not yet decided by the recogniser: the stretch after its last phone. Loud hops there
            # become an open vowel scaled by level; the next plan replaces it with real phones.
            t = phones[-1].end if phones else 0.0
            db = self.env.db
            if heard - t > _TAIL_MIN:
                phones.append(align.TimedPhone(TAIL_VOWEL, t, heard))
            return plan_from(phones, db, start=start, source="audio:live", cache=self._gain_cache,
                             gestures=self._live_beats(phones[:-1] if heard - t > _TAIL_MIN else phones, heard))
        g = self._live_beats(phones, None) if self.beats else None
        return plan_from(phones, self.env.db, start=start, source=f"audio:{self.method}", gestures=g)

    def _live_beats(self, phones: list, heard: float | None):
        """Beats for the audio so far. One first seen mid-way (its rise already due) is moved
        later to start where it was seen, so a gesture never pops in half-done."""
        if not self.beats:
            return None
        g = _beats(phones, self.env.db, self._buf[: self._n16], self.strength, until=heard,
                   cache=self._pitch_cache)
        if not len(g):
            return g
        peaks = g.peak.copy()
        for i, (k, p) in enumerate(zip(g.kind.tolist(), g.peak.tolist())):
            seen = next((s for kk, pp, s in self._seen if kk == k and abs(pp - p) < 0.15), None)
            if seen is None:
                seen = heard if heard is not None else -np.inf
                self._seen.append((k, p, seen))
            rise = gestures.KINDS[k].rise
            peaks[i] = max(p, seen + rise)
        return gestures.Gestures(peaks, g.kind, g.amp)
