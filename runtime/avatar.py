"""One face: its line queue, the generator thread, the timeline, and the fan-out to its sinks.

Two threads meet here and only through bounded queues:

* the **generator thread** takes lines from ``lines``, streams keyframes from the model and puts
  ``(kind, line, payload)`` events on ``handoff``; it may block (the model, a full queue);
* the **frame clock** calls :meth:`tick` 60 times a second; it drains ``handoff`` without waiting,
  advances the current line's :class:`Track`, and hands the frame to the sinks. It never blocks:
  when the model is late the track eases into its last key and holds.

The track makes the *expression*; an optional idle layer (blinks, saccades, breath, drift) is
composed on top of it for the frame that is sent, so a new line always starts from the expression
and never bakes an old blink into its first key.

:meth:`interrupt` (any thread) cancels the line being generated, drops every queued line and tells
the clock, which drops the playing line and blends from the current expression to rest over
``interrupt_blend`` seconds (a smoothstep, so the change per frame stays below 1.5x the average). A
line said after the interrupt starts from wherever that blend has got to: no pop either way.
Lines carry the interrupt epoch they were said in, so a line the generator thread picks up while an
interrupt runs is still recognised as cancelled.

A line can also arrive in pieces (:meth:`say` with ``chunked``, then :meth:`feed`): a chat model
streaming its reply. Its text goes through a :class:`~runtime.text.SentenceBuffer`; each sentence is
generated as soon as it is complete, through the same keyframe parser, so keyframe times continue
across sentences and the face holds the last key while the next sentence is still being written.
Between sentences the shared model is free for other avatars. The line ends after its last chunk's
sentences, or, when no chunk comes for ``chunk_timeout`` seconds, is abandoned: it plays what it
has, returns to rest and its ``done`` says ``"abandoned": true``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.animate import speech as speech_layer
from runtime.animate.idle import Idle
from runtime.animate.speech import SpeechPlan
from runtime.animate.timeline import Interpolator, Track
from runtime.generate import Backend, LineRequest, stream_keyframes
from runtime.keyframes.language import Keyframe, Language
from runtime.keyframes.parser import KeyframeParser
from runtime.sinks.fanout import Fanout
from runtime.text import SentenceBuffer

log = logging.getLogger(__name__)

_gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def _gate(backend: Backend) -> threading.Lock | None:
    """One lock per model backend, shared by every avatar that uses it; None for a backend that
    generates several lines at once (``concurrent``: the local model's batch, a server pool)."""
    if getattr(backend, "concurrent", False):
        return None
    with _gates_lock:
        try:
            return _gates.setdefault(backend, threading.Lock())
        except TypeError:  # not weak-referenceable: a lock of its own
            return threading.Lock()

Event = dict  # {"type": "keyframe"|"done"|..., "id": ..., ...}, for the serve API and the CLI


class TextStream:
    """The text of a line that arrives in chunks: fed on one thread, read by the generator."""

    def __init__(self, timeout: float | None, max_chars: int) -> None:
        self.buffer = SentenceBuffer()
        self.sentences: queue.Queue[str | None] = queue.Queue()  # None: the last chunk came
        self.timeout = timeout  # seconds without a chunk before the line is abandoned; None: never
        self.max_chars = max_chars
        self.chars = 0
        self.last = time.monotonic()
        self.closed = False


@dataclass
class Line:
    req: LineRequest
    submitted: float = field(default_factory=time.perf_counter)
    keys: deque = field(default_factory=deque)  # Keyframes not yet on the track
    ended: bool = False  # the generator finished (or gave up on) this line
    first_key_at: float = 0.0
    first_frame_at: float = 0.0
    keyframes: int = 0
    tokens: int = 0
    gen_seconds: float = 0.0
    error: str = ""
    epoch: int = 0  # the avatar's interrupt count when the line was said
    cancelled: bool = False  # dropped by an interrupt
    gen_done: bool = False  # the generator thread is finished with it
    reported: bool = False  # its "done" event has been sent
    speech: SpeechPlan | None = None  # the mouth speaking the words, if the line is spoken
    t: float = 0.0  # line time of the frame last played; unlike the track's, it never waits on the model
    stream: TextStream | None = None  # the line arrives in chunks
    abandoned: bool = False  # a chunked line whose last chunk never came
    first_text_at: float = 0.0  # when the line's first sentence was complete (its text was all there)


class Avatar:
    def __init__(self, name: str, backend: Backend, language: Language, fanout: Fanout, *,
                 fps: float = 60.0, attack: float = 0.2, release: float = 0.6,
                 interpolator: Interpolator | None = None, timeout: float = 10.0,
                 max_lines: int = 32, on_event: Callable[[Event], None] | None = None,
                 idle: Idle | None = None, interrupt_blend: float = 0.15, lead: float = 0.0) -> None:
        self.name = name
        self.lead = lead  # seconds from making a frame to sending it (FrameClock lead_s): live audio meets it then
        self.backend = backend
        self.language = language
        self.fanout = fanout
        self.fps = fps
        self.dt = 1.0 / fps
        self.attack = attack
        self.release = release
        self.interp = interpolator or Interpolator()
        self.timeout = timeout
        self.on_event = on_event or (lambda e: None)
        self.lines: queue.Queue[Line | None] = queue.Queue(max_lines)
        self.handoff: queue.Queue[tuple[str, Line, Keyframe | None]] = queue.Queue(1024)
        self.idle_layer = idle
        self.interrupt_blend = interrupt_blend
        self.expr = language.rest.copy()  # float32[61]: the track's pose, before the idle layer
        self.pose = language.rest.copy()  # float32[61]: the frame last sent
        self.pending: deque[Line] = deque()  # lines with keys, waiting for the face
        self.current: Line | None = None
        self.track: Track | None = None
        self.finished: deque[Line] = deque(maxlen=256)  # recent lines, for reports; bounded for long runs
        self._speech_buf = np.empty(speech_layer.K)
        self._ids = itertools.count(1)
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held for microseconds: interrupt vs generator vs done events
        self._epoch = 0  # interrupts so far (written by interrupt, read by the clock and generator)
        self._epoch_seen = 0  # the last interrupt the clock has acted on
        self._generating: Line | None = None
        self._gen = threading.Thread(target=self._generate_loop, name=f"generator:{name}", daemon=True)
        self._gen.start()

    # -- submitting -------------------------------------------------------------------------------
    def say(self, req: LineRequest, speech: SpeechPlan | None = None, *, chunked: bool = False,
            chunk_timeout: float | None = None, max_chars: int = 2000) -> Line:
        """Queue a line (with the plan of its spoken words, if any; build it off the clock
        thread); raises ``queue.Full`` when too many lines wait.

        ``chunked``: ``req.text`` is only the start; more comes through :meth:`feed`, at most
        ``max_chars`` in all, each chunk within ``chunk_timeout`` seconds of the one before.
        """
        if not req.id:
            req.id = f"{self.name}-{next(self._ids)}"
        line = Line(req, epoch=self._epoch, speech=speech)
        if self.lead and hasattr(speech, "lead"):  # live audio: sample the sound the frame will meet
            speech.lead = self.lead  # type: ignore[union-attr]
        if chunked:
            if speech is not None:
                raise ValueError("a line sent in chunks cannot be spoken")
            text, req.text = req.text, ""
            line.stream = TextStream(chunk_timeout, max_chars)
        self.lines.put_nowait(line)
        if chunked:
            self.feed(line, text)
        if speech is not None:  # the mouth follows the voice from now, not from the model's first key
            try:
                self.handoff.put_nowait(("open", line, None))
            except queue.Full:  # then it starts with its first key, as an unspoken line does
                pass
        return line

    def feed(self, line: Line, text: str, *, final: bool = False) -> list[str]:
        """More text of a chunked line (``final``: its last chunk); returns the sentences it
        completed. One thread feeds a line. Raises ValueError past the line's ``max_chars``."""
        s = line.stream
        if s is None or s.closed:
            raise ValueError(f"line {line.req.id}: not open for more text")
        if s.chars + len(text) > s.max_chars:
            raise ValueError(f"line {line.req.id}: more than {s.max_chars} characters")
        s.chars += len(text)
        s.last = time.monotonic()
        line.req.text += text
        done = s.buffer.feed(text)
        if final:
            done += s.buffer.close()
            s.closed = True
        if done and not line.first_text_at:
            line.first_text_at = time.perf_counter()
        for sentence in done:
            s.sentences.put(sentence)
        if final:
            s.sentences.put(None)
        return done

    def interrupt(self) -> list[str]:
        """Cancel generation, drop queued lines and blend to rest (or the next line) in ~150 ms.

        Safe from any thread; returns the ids of the lines it dropped that had not started. Every
        dropped line still gets its ``done`` event, with ``"interrupted": True``.
        """
        dropped: list[Line] = []
        with self._lock:
            self._epoch += 1
            while True:
                try:
                    line = self.lines.get_nowait()
                except queue.Empty:
                    break
                if line is None:  # close() asked the generator to stop: keep that request
                    self.lines.put_nowait(None)
                    break
                line.cancelled = True
                line.gen_done = True
                dropped.append(line)
            if self._generating is not None:
                self._generating.cancelled = True
                self._cancel.set()
        for line in dropped:
            self._report_done(line)
        return [line.req.id for line in dropped]

    @property
    def idle(self) -> bool:
        return (self.lines.empty() and self.handoff.empty() and not self.pending
                and self.current is None and not self._busy)

    _busy = False

    # -- generator thread -------------------------------------------------------------------------
    def _generate_loop(self) -> None:
        while not self._stop.is_set():
            line = self.lines.get()
            if line is None:
                break
            with self._lock:
                if line.epoch != self._epoch:  # said before an interrupt that raced this get()
                    line.cancelled = True
                else:
                    self._generating = line
                    self._cancel.clear()
            if line.cancelled:
                line.gen_done = True
                self._report_done(line)
                continue
            self._busy = True
            try:
                self._generate(line)
            finally:
                with self._lock:
                    self._generating = None
                self._busy = False

    def _generate(self, line: Line) -> None:
        """Every request of the line (one, or a sentence at a time), each in its turn on the model;
        one parser for them all, so keyframe times continue."""
        parser = KeyframeParser(self.language)
        gate = _gate(self.backend)
        start = time.perf_counter()
        try:
            for req in self._requests(line):
                if gate is None:  # the lines of every avatar are generated together
                    self._generate_turn(line, parser, req)
                else:
                    # Avatars share one model and take turns: the timeout counts from this
                    # avatar's turn, not from its wait (an interrupt still ends the wait at once).
                    while not gate.acquire(timeout=0.05):
                        if self._cancel.is_set() or self._stop.is_set():
                            return
                    try:
                        self._generate_turn(line, parser, req)
                    finally:
                        gate.release()
                if line.cancelled or line.error or self._stop.is_set():
                    return
        finally:
            line.gen_seconds = time.perf_counter() - start
            line.gen_done = True
            if line.cancelled:  # this thread sent its keyframe events, so it sends its done too
                self._report_done(line)
            else:
                self.handoff.put(("end", line, None))

    def _requests(self, line: Line):
        """The line's request; for a chunked line, one per sentence as each is complete."""
        s = line.stream
        if s is None:
            yield line.req
            return
        while True:
            try:
                sentence = s.sentences.get(timeout=0.05)  # returns at once when a sentence comes
            except queue.Empty:
                if self._cancel.is_set() or self._stop.is_set():
                    return
                if not s.closed and s.timeout is not None and time.monotonic() - s.last > s.timeout:
                    s.closed = True
                    line.abandoned = True
                    log.warning("line %s: no chunk for %.1f s; abandoned", line.req.id, s.timeout)
                    return
                continue
            if sentence is None:
                return
            yield dataclasses.replace(line.req, text=sentence)

    def _generate_turn(self, line: Line, parser: KeyframeParser, req: LineRequest) -> None:
        deadline = threading.Timer(self.timeout, self._cancel.set)
        deadline.daemon = True
        deadline.start()
        try:
            for kf in stream_keyframes(self.backend, parser, req, self._cancel):
                if not line.keyframes:
                    line.first_key_at = time.perf_counter()
                line.keyframes += 1
                line.tokens += kf.tokens
                if line.cancelled:
                    break
                self.handoff.put(("key", line, kf))
                self.on_event({"type": "keyframe", "id": line.req.id, "avatar": self.name,
                               **kf.to_json()})
            if self._cancel.is_set() and not self._stop.is_set() and not line.cancelled:
                line.error = f"generation timed out after {self.timeout:.1f} s"
                log.warning("line %s: %s; ending it gracefully", line.req.id, line.error)
        except Exception as e:  # a model that dies ends the line, never the face
            line.error = f"generation failed: {e}"
            log.error("line %s: %s", line.req.id, line.error)
        finally:
            deadline.cancel()

    # -- frame clock thread -----------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                kind, line, kf = self.handoff.get_nowait()
            except queue.Empty:
                return
            if line.cancelled:
                continue
            if line is not self.current and line not in self.pending:
                self.pending.append(line)
            if kind == "key":
                line.keys.append(kf)
            elif kind == "end":
                line.ended = True

    def _feed_track(self) -> None:
        line, track = self.current, self.track
        while line.keys:
            kf = line.keys.popleft()
            track.add(self.attack + kf.t, kf.values)
        if line.ended and not track.final:
            if len(track.times) > 1 or line.error:
                track.add(track.end + self.release, self.language.rest)
            track.finish()

    def tick(self, number: int, t: float, timecode: float | None = None) -> np.ndarray:
        """Make and send frame ``number``. Called by the frame clock; never blocks."""
        if self._epoch != self._epoch_seen:
            self._on_interrupt()
        self._drain()
        if self.track is not None and self.track.done and self._spoken():
            if self.current is not None:
                self._finish_line()
            else:  # an interrupt blend that reached rest
                self.track = None
        if (self.current is None and self.pending
                and (self.pending[0].keys or self.pending[0].ended or self.pending[0].speech is not None)):
            self.current = self.pending.popleft()  # from rest, or from mid-way through a blend
            self.track = Track(self.expr, self.interp)
        if self.track is not None:
            if self.current is not None:
                self._feed_track()
            self.track.advance(self.dt, self.expr)
            line = self.current
            if line is not None:
                if not line.first_frame_at:
                    line.first_frame_at = time.perf_counter()
                    if self.idle_layer is not None:  # the eyes follow the line's thoughts
                        self.idle_layer.plan_speech(t, line.speech)
                else:
                    line.t += self.dt
                if line.speech is not None:  # jaw and lips from the words, the rest from the track
                    line.speech.apply_at(line.t, self.expr, self._speech_buf)
        if self.idle_layer is not None:
            self.idle_layer.compose(self.expr, t, out=self.pose)
        else:
            self.pose[:] = self.expr
        self.fanout.send(self.pose, number, t if timecode is None else timecode)
        return self.pose

    def _spoken(self) -> bool:
        """The current line's words (if any) have all been spoken."""
        line = self.current
        return line is None or line.speech is None or line.t >= line.speech.duration

    def _on_interrupt(self) -> None:
        """Clock thread: drop the playing and waiting lines, blend the expression to rest."""
        self._epoch_seen = self._epoch
        dropped = [*([self.current] if self.current is not None else []), *self.pending]
        self.current = None
        self.pending.clear()
        for line in dropped:
            line.cancelled = True
            if line.gen_done:  # else the generator thread reports it when it stops
                self._report_done(line)
        if self.track is not None or np.any(self.expr != self.language.rest):
            self.track = Track(self.expr, self.interp)
            self.track.add(self.interrupt_blend, self.language.rest)
            self.track.finish()

    def _report_done(self, line: Line) -> None:
        with self._lock:
            if line.reported:
                return
            line.reported = True
        event = {"type": "done", "id": line.req.id, "avatar": self.name}
        if line.cancelled:
            event["interrupted"] = True
        elif line.abandoned:
            event["abandoned"] = True
        elif line.error:
            event["error"] = line.error
        self.on_event(event)

    def _finish_line(self) -> None:
        line = self.current
        self.finished.append(line)
        self.current, self.track = None, None
        self._report_done(line)

    def close(self) -> None:
        self._stop.set()
        self._cancel.set()
        try:
            self.lines.put_nowait(None)
        except queue.Full:
            pass
        self._gen.join(timeout=2)

