"""PocketSphinx in a child process, so recognition never holds the frame clock's GIL.

PocketSphinx's Python binding keeps the GIL inside every call into the recogniser: a whole clip
(forced alignment, recognition) is one call of 50-500 ms, and even 20 ms slices stall the clock
when the thread holding the GIL is descheduled mid-call on a loaded machine. Like the model
(runtime/generate/worker.py), the recogniser therefore runs in a process of its own, and a thread
that calls it only waits on a pipe, which releases the GIL.

:class:`Recognizer` is thread-safe (one request at a time over one pipe; requests are short) and
has the calls :class:`runtime.audio.track.VoiceTrack` needs: ``feed(stream, x16)`` /
``close(stream)`` for incremental phone recognition, ``align(x16, text)``, ``recognize(x16)``.
:class:`Local` is the same calls in this process (offline use: the CLI analyses a file before any
clock starts; never beside a running clock). :func:`shared` is the process-wide child, started on
first use (about 1-2 s; :func:`warm` starts it early). If the child dies, the next call starts a
new one.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import threading

import numpy as np

from runtime.audio import align
from runtime.audio.wav import AudioError

log = logging.getLogger(__name__)


class Local:
    """The recogniser in this process (no clock to protect)."""

    def __init__(self) -> None:
        self._streams: dict[int, align.PhoneStream] = {}

    def feed(self, stream: int, x16: np.ndarray) -> list[align.TimedPhone]:
        s = self._streams.get(stream)
        if s is None:
            s = self._streams[stream] = align.PhoneStream()
        return s.feed(x16)

    def close(self, stream: int) -> list[align.TimedPhone]:
        s = self._streams.pop(stream, None)
        return s.close() if s is not None else []

    def align(self, x16: np.ndarray, text: str) -> list[align.TimedPhone]:
        return align.align(x16, text)

    def recognize(self, x16: np.ndarray) -> list[align.TimedPhone]:
        return align.recognize(x16)


def _serve(conn) -> None:
    """The child: answer (op, stream, arg) requests until the pipe closes."""
    local = Local()
    align.warm()
    conn.send(("ready", None))
    while True:
        try:
            op, stream, arg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if op == "feed":
                res = local.feed(stream, arg)
            elif op == "close":
                res = local.close(stream)
            elif op == "align":
                res = local.align(*arg)
            elif op == "recognize":
                res = local.recognize(arg)
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", res))
        except AudioError as e:
            conn.send(("audio_error", str(e)))
        except Exception as e:  # report, keep serving
            conn.send(("error", f"{type(e).__name__}: {e}"))


class Recognizer:
    """The recogniser in a child process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn = None
        self._proc = None
        self._ids = itertools.count(1)

    def new_stream(self) -> int:
        return next(self._ids)

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter: no threads or locks copied from this one
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child,), name="audio-recogniser", daemon=True)
        proc.start()
        child.close()
        if not parent.poll(60):
            proc.kill()
            raise AudioError("the audio recogniser process did not start")
        parent.recv()
        self._conn, self._proc = parent, proc

    def _call(self, op: str, stream: int, arg):
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None:
                    self._start()
                try:
                    self._conn.send((op, stream, arg))
                    kind, res = self._conn.recv()
                    break
                except (EOFError, OSError, BrokenPipeError):
                    log.warning("audio recogniser process died; starting a new one")
                    self._conn = None
                    if attempt:
                        raise AudioError("the audio recogniser process died") from None
        if kind == "audio_error":
            raise align.AlignError(res)
        if kind == "error":
            raise AudioError(f"audio recogniser failed: {res}")
        return res

    def feed(self, stream: int, x16: np.ndarray) -> list[align.TimedPhone]:
        return self._call("feed", stream, np.ascontiguousarray(x16, np.float32))

    def close(self, stream: int) -> list[align.TimedPhone]:
        return self._call("close", stream, None)

    def align(self, x16: np.ndarray, text: str) -> list[align.TimedPhone]:
        return self._call("align", 0, (np.ascontiguousarray(x16, np.float32), text))

    def recognize(self, x16: np.ndarray) -> list[align.TimedPhone]:
        return self._call("recognize", 0, np.ascontiguousarray(x16, np.float32))

    def stop(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                self._proc.join(2)
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc = None


_shared: Recognizer | None = None
_shared_lock = threading.Lock()


def shared() -> Recognizer:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Recognizer()
        return _shared


def warm() -> None:
    """Start the shared child now (serve, say: before the clock), so the first stream does not wait."""
    r = shared()
    with r._lock:
        if r._conn is None:
            r._start()
