"""Streaming audio -> a mouth on the frame clock: :class:`LiveSpeech`.

Chunks are handed over (:meth:`LiveSpeech.feed`, any thread, never blocks) through a bounded
queue to one worker thread, which decodes them, runs phone recognition incrementally
(:class:`runtime.audio.track.VoiceTrack`) and publishes a fresh read-only
:class:`~runtime.animate.speech.SpeechPlan` for all the audio so far (a reference swap). The frame
clock only samples the latest plan (:meth:`apply_at`), so alignment never delays a frame.

Time: the audio's own clock drives the mouth. ``start(at)`` says when audio time 0 plays (a
``clock()`` value, default now); until it is called, the first chunk's arrival plus ``lookahead``
is taken as the start (a caller that plays chunks as they arrive). At each frame the mouth shows
audio time ``clock() - start`` (plus ``lead`` when the frame clock makes frames ahead of sending
them), whatever line time the avatar is at.

The avatar sees the same interface as a SpeechPlan: ``apply_at(t, frame, scratch)`` and
``duration`` (line time until the mouth is back at rest: unbounded until the audio is closed and
played; a stream with no chunk for ``stall`` seconds is closed for the caller).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from runtime.animate.speech import MASK, SpeechPlan
from runtime.audio.track import VoiceTrack
from runtime.audio.wav import AudioError

log = logging.getLogger(__name__)

_CLOSE = object()
EMPTY = SpeechPlan.from_phones([])


class LiveSpeech:
    mask = MASK

    def __init__(self, rate: int | None = 16000, text: str | None = None, *, channels: int = 1,
                 sample_format: str = "s16le", wav: bool = False, max_seconds: float | None = None,
                 max_chunks: int = 256, lookahead: float = 0.0, stall: float = 10.0,
                 beats: bool = True, strength: float = 1.0, process: bool = True,
                 clock: Callable[[], float] = time.perf_counter,
                 on_error: Callable[[str], None] | None = None) -> None:
        from runtime.audio import worker

        # PocketSphinx in a child process by default: it holds the GIL inside each call
        self.track = VoiceTrack(rate, text, channels=channels, sample_format=sample_format, wav=wav,
                                max_seconds=max_seconds, beats=beats, strength=strength,
                                recognizer=worker.shared() if process else worker.Local())
        self.clock = clock
        self.lookahead = lookahead
        self.stall = stall
        self.on_error = on_error or (lambda msg: None)
        self.plan: SpeechPlan = EMPTY  # the latest; replaced whole, never mutated
        self.error = ""
        self.latency: deque[float] = deque(maxlen=4096)  # seconds from a chunk's arrival to its plan
        self.analysis_s = 0.0  # worker seconds spent on the audio (decode + recognise + plan)
        self._q: queue.Queue = queue.Queue(max_chunks)
        self._t0: float | None = None
        self._last_chunk = clock()
        self._closing = False  # close() was called (or the stream failed / stalled)
        self._done = False  # the worker has published the final plan
        self._seen = (0.0, -math.inf)  # (line time, audio time) of the last frame sampled
        self.lead = 0.0  # seconds from sampling a frame to its leaving (a clock that makes frames ahead)
        self._thread = threading.Thread(target=self._run, name="audio-align", daemon=True)
        self._thread.start()

    # -- any thread -------------------------------------------------------------------------------
    def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Hand over a chunk of audio; raises :class:`AudioError` if the stream is closed or the
        worker is so far behind that the queue is full (the chunk is dropped, the mouth goes on)."""
        if self._closing:
            raise AudioError(self.error or "audio fed after the stream was closed")
        now = self.clock()
        if self._t0 is None:
            self._t0 = now + self.lookahead
        self._last_chunk = now
        try:
            self._q.put_nowait((now, chunk))
        except queue.Full:
            raise AudioError(f"audio is arriving faster than it can be analysed ({self._q.maxsize} "
                             "chunks queued); chunk dropped") from None

    def start(self, at: float | None = None) -> None:
        """Audio time 0 plays at ``clock()`` value ``at`` (default: now)."""
        self._t0 = self.clock() if at is None else float(at)

    def close(self) -> None:
        """No more audio: the final plan (force-aligned when the text is known) replaces the live one."""
        if not self._closing:
            self._closing = True
            self._q.put((self.clock(), _CLOSE))  # blocks only if 256 chunks are queued: a moment

    @property
    def done(self) -> bool:
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the final plan (tests, offline use); True when it is there."""
        self._thread.join(timeout)
        return self._done

    # -- worker thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                arrived, chunk = self._q.get(timeout=0.25)
            except queue.Empty:
                if not self._closing and self.clock() - self._last_chunk > self.stall:
                    self._fail(f"no audio for {self.stall:g} s; the stream is ended")
                    self._closing = True
                    self._finish()
                    return
                continue
            t = time.perf_counter()
            if chunk is _CLOSE:
                try:
                    self.track.close()
                except AudioError as e:
                    self._fail(str(e))
                self._finish()
                self.analysis_s += time.perf_counter() - t
                return
            try:
                self.track.feed(chunk)
                self.plan = self.track.plan()
            except Exception as e:  # bad audio or a recogniser failure ends this mouth, never the line
                if not isinstance(e, AudioError):
                    log.exception("audio analysis failed")
                self._fail(str(e) if isinstance(e, AudioError) else f"audio analysis failed: {e}")
                self._closing = True
                self._finish()  # the mouth it had, through to rest
                return
            finally:
                self.analysis_s += time.perf_counter() - t
            self.latency.append(self.clock() - arrived)

    def _finish(self) -> None:
        try:
            if not self.track.closed:  # stalled or failed: what was heard, recognised to its end
                try:
                    self.track.close()
                except AudioError:
                    pass
            self.plan = self.track.plan()
        except Exception as e:  # keep the last live plan
            log.exception("final audio plan failed")
            self._fail(f"audio analysis failed: {e}")
        self._done = True

    def _fail(self, msg: str) -> None:
        if not self.error:
            self.error = msg
            log.warning("audio: %s", msg)
            self.on_error(msg)

    # -- frame clock ------------------------------------------------------------------------------
    def audio_time(self) -> float | None:
        return None if self._t0 is None else self.clock() - self._t0

    def apply_at(self, t: float, frame: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
        a = self.audio_time()
        if a is None:
            return frame
        a += self.lead  # the sound the frame will meet when it is sent
        self._seen = (t, a)
        return self.plan.apply_at(a, frame, scratch)

    @property
    def duration(self) -> float:
        """Line time at which the mouth is back at rest (inf while audio may still come)."""
        if not self._done:
            return math.inf
        t, a = self._seen
        if a == -math.inf:
            return math.inf if self._t0 is not None and self.plan.phones else 0.0
        return t + max(self.plan.duration - a, 0.0)
