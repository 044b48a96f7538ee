"""One face: its line queue, the generator thread, the timeline, and the fan-out to its sinks.

Two threads meet here and only through bounded queues:

* the **generator thread** takes lines from ``lines``, streams keyframes from the model and puts
  ``(kind, line, payload)`` events on ``handoff``; it may block (the model, a full queue);
* the **frame clock** calls :meth:`tick` 60 times a second; it drains ``handoff`` without waiting,
  advances the current line's :class:`Track`, and hands the frame to the sinks. It never blocks:
  when the model is late the track eases into its last key and holds.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.animate.timeline import Interpolator, Track
from runtime.generate import Backend, LineRequest, stream_keyframes
from runtime.keyframes.language import Keyframe, Language
from runtime.keyframes.parser import KeyframeParser
from runtime.sinks.fanout import Fanout

log = logging.getLogger(__name__)

Event = dict  # {"type": "keyframe"|"done"|..., "id": ..., ...}, for the serve API and the CLI


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


class Avatar:
    def __init__(self, name: str, backend: Backend, language: Language, fanout: Fanout, *,
                 fps: float = 60.0, attack: float = 0.2, release: float = 0.6,
                 interpolator: Interpolator | None = None, timeout: float = 10.0,
                 max_lines: int = 32, on_event: Callable[[Event], None] | None = None) -> None:
        self.name = name
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
        self.pose = language.rest.copy()  # float32[61]: the frame last sent
        self.pending: deque[Line] = deque()  # lines with keys, waiting for the face
        self.current: Line | None = None
        self.track: Track | None = None
        self.finished: list[Line] = []
        self._ids = itertools.count(1)
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._gen = threading.Thread(target=self._generate_loop, name=f"generator:{name}", daemon=True)
        self._gen.start()

    # -- submitting -------------------------------------------------------------------------------
    def say(self, req: LineRequest) -> Line:
        """Queue a line; raises ``queue.Full`` when too many lines wait."""
        if not req.id:
            req.id = f"{self.name}-{next(self._ids)}"
        line = Line(req)
        self.lines.put_nowait(line)
        return line

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
            self._busy = True
            try:
                self._generate(line)
            finally:
                self._busy = False

    def _generate(self, line: Line) -> None:
        parser = KeyframeParser(self.language)
        start = time.perf_counter()
        self._cancel.clear()
        deadline = threading.Timer(self.timeout, self._cancel.set)
        deadline.daemon = True
        deadline.start()
        try:
            for kf in stream_keyframes(self.backend, parser, line.req, self._cancel):
                if not line.keyframes:
                    line.first_key_at = time.perf_counter()
                line.keyframes += 1
                line.tokens += kf.tokens
                self.handoff.put(("key", line, kf))
                self.on_event({"type": "keyframe", "id": line.req.id, "avatar": self.name,
                               **kf.to_json()})
            if self._cancel.is_set() and not self._stop.is_set():
                line.error = f"generation timed out after {self.timeout:.1f} s"
                log.warning("line %s: %s; ending it gracefully", line.req.id, line.error)
        except Exception as e:  # a model that dies ends the line, never the face
            line.error = f"generation failed: {e}"
            log.error("line %s: %s", line.req.id, line.error)
        finally:
            deadline.cancel()
            line.gen_seconds = time.perf_counter() - start
            self.handoff.put(("end", line, None))

    # -- frame clock thread -----------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                kind, line, kf = self.handoff.get_nowait()
            except queue.Empty:
                return
            if line is not self.current and line not in self.pending:
                self.pending.append(line)
            if kind == "key":
                line.keys.append(kf)
            else:
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
        self._drain()
        if self.track is not None and self.track.done:
            self._finish_line()
        if self.track is None and self.pending and (self.pending[0].keys or self.pending[0].ended):
            self.current = self.pending.popleft()
            self.track = Track(self.pose, self.interp)
        if self.track is not None:
            self._feed_track()
            self.track.advance(self.dt, self.pose)
            if not self.current.first_frame_at:
                self.current.first_frame_at = time.perf_counter()
        self.fanout.send(self.pose, number, t if timecode is None else timecode)
        return self.pose

    def _finish_line(self) -> None:
        line = self.current
        self.finished.append(line)
        self.current, self.track = None, None
        event = {"type": "done", "id": line.req.id, "avatar": self.name}
        if line.error:
            event["error"] = line.error
        self.on_event(event)

    def close(self) -> None:
        self._stop.set()
        self._cancel.set()
        try:
            self.lines.put_nowait(None)
        except queue.Full:
            pass
        self._gen.join(timeout=2)

