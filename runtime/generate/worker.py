"""The model in its own process.

llama-cpp-python runs a Python loop per token that holds the GIL; in the same process as the frame
clock that loop delays ticks. In a child process it cannot, and a model that crashes takes only
the child with it: the line ends with an error, the child is started again, the face goes on.

The child builds the same backend ``assemble.backend`` would and streams ``(piece, tokens)``
messages back over a pipe; a shared event cancels a line.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator

from runtime.generate.llama import GenerationError
from runtime.generate.prompt import LineRequest

log = logging.getLogger(__name__)


def _yield_to_the_clock() -> None:
    """The model runs as a batch job a little below normal priority, so the frame clock's wake-ups
    preempt it at once (allowed for any user: it only lowers our own priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    try:
        os.nice(5)
    except OSError:
        pass


def _child(cfg, conn, cancel) -> None:
    import signal

    from runtime import assemble

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    _yield_to_the_clock()

    try:
        backend = assemble.local_backend(cfg, assemble.language(cfg))
    except Exception as e:  # reported to the parent as one line
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", getattr(backend, "load_seconds", 0.0)))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            for piece, tokens in backend.stream(req, cancel):
                conn.send(("piece", piece, tokens))
            conn.send(("end",))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class ProcessBackend:
    """Same interface as the in-process backend; the model lives in a child process."""

    def __init__(self, cfg, start_timeout: float = 300.0) -> None:
        self.cfg = cfg
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._conn, child = self._ctx.Pipe()
        self._cancel = self._ctx.Event()
        self._proc = self._ctx.Process(target=_child, args=(self.cfg, child, self._cancel),
                                       name="keyframeface-model", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(self.start_timeout):
            self._proc.kill()
            raise GenerationError(f"model process did not start within {self.start_timeout:.0f} s")
        try:
            msg = self._conn.recv()
        except EOFError:  # it died without a word: a crash in native code, or killed
            self._proc.join(5)
            raise GenerationError(f"model process died while loading the model (exit code "
                                  f"{self._proc.exitcode})") from None
        if msg[0] != "ready":
            self._proc.join(1)
            raise GenerationError(msg[1])
        self.load_seconds = time.perf_counter() - t0

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        with self._lock:
            if not self._proc.is_alive():
                self._restart("model process was not running")
            self._cancel.clear()
            self._conn.send(req)
            finished = False
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        self._cancel.set()
                    try:
                        msg = self._next()
                    except GenerationError:
                        finished = True  # a fresh child: nothing of this line left to drain
                        raise
                    if msg is None:
                        continue
                    if msg[0] == "piece":
                        if not self._cancel.is_set():
                            yield msg[1], msg[2]
                        continue
                    finished = True
                    if msg[0] == "error":
                        raise GenerationError(msg[1])
                    return
            finally:
                if not finished:  # the caller stopped early: drain this line so the next starts clean
                    self._cancel.set()
                    deadline = time.monotonic() + 5.0
                    while time.monotonic() < deadline:
                        msg = self._next()
                        if msg is not None and msg[0] != "piece":
                            break
                    else:
                        self._restart("model process did not stop a cancelled line")

    def _next(self) -> tuple | None:
        """The next message, or None after a short wait; restarts a dead child and raises."""
        try:
            if not self._conn.poll(0.02):
                if not self._proc.is_alive():
                    raise EOFError
                return None
            return self._conn.recv()
        except (EOFError, OSError):
            self._restart(f"model process died (exit code {self._proc.exitcode})")
            raise GenerationError("the model process died mid-line; it was restarted") from None

    def _restart(self, why: str) -> None:
        log.error("%s; starting it again", why)
        self.restarts += 1
        try:
            self._proc.kill()
        except Exception:
            pass
        self._start()

    def close(self) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(2)
        if self._proc.is_alive():
            self._proc.kill()
