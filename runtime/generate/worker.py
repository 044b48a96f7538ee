"""The model in its own process.

llama-cpp-python runs a Python loop per token that holds the GIL; in the same process as the frame
clock that loop delays ticks. In a child process it cannot, and a model that crashes takes only
the child with it: the line ends with an error, the child is started again, the face goes on.

The child builds the same backend ``assemble.backend`` would; each line sent to it (tagged with an
id) joins the backend's batch, and its ``(piece, tokens)`` messages go back over the pipe with that
id, sent from the batch loop's own thread. A reader thread here routes them
to the lines waiting; a ``cancel`` message ends one line only. If the child dies, every line in
flight ends with an error and the child is started again.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import queue
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


def _child(cfg, conn) -> None:
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
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    def sink(lid: int):
        # called on the backend's batch loop thread: each piece goes out from there, no thread hop
        def put(item) -> None:
            try:
                if item is None:
                    cancels.pop(lid, None)
                    send(("end", lid))
                elif isinstance(item, BaseException):
                    cancels.pop(lid, None)
                    send(("error", lid, f"{type(item).__name__}: {item}"))
                else:
                    send(("piece", lid, item[0], item[1]))
            except (OSError, ValueError):
                pass  # the parent is gone; the main loop sees it and returns
        return put

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if msg[0] == "line":
            _, lid, req = msg
            ev = cancels[lid] = threading.Event()
            try:
                backend.start(req, ev, sink(lid))
            except Exception as e:
                cancels.pop(lid, None)
                send(("error", lid, f"{type(e).__name__}: {e}"))
        elif msg[0] == "cancel":
            ev = cancels.get(msg[1])
            if ev is not None:
                ev.set()


class _Generation:
    """One child process and the reader thread that routes its messages to the lines waiting."""

    def __init__(self, ctx, cfg, start_timeout: float) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(cfg, child), name="keyframeface-model", daemon=True)
        self.proc.start()
        child.close()
        self.lines: dict[int, queue.SimpleQueue] = {}
        self.lock = threading.Lock()  # sends, and the lines table
        self.dead = False
        if not self.conn.poll(start_timeout):
            self.proc.kill()
            raise GenerationError(f"model process did not start within {start_timeout:.0f} s")
        try:
            msg = self.conn.recv()
        except EOFError:  # it died without a word: a crash in native code, or killed
            self.proc.join(5)
            raise GenerationError(f"model process died while loading the model (exit code "
                                  f"{self.proc.exitcode})") from None
        if msg[0] != "ready":
            self.proc.join(1)
            raise GenerationError(msg[1])
        self.reader = threading.Thread(target=self._read, name="model-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            q = self.lines.get(msg[1])
            if q is not None:
                q.put(msg)
        self.dead = True
        with self.lock:
            waiting = list(self.lines.values())
        for q in waiting:
            q.put(("died",))

    def send(self, msg: tuple) -> bool:
        with self.lock:
            try:
                self.conn.send(msg)
                return True
            except (OSError, ValueError):
                return False

    def open(self, lid: int) -> queue.SimpleQueue:
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            self.lines[lid] = q
        if self.dead:
            q.put(("died",))
        return q

    def close_line(self, lid: int) -> None:
        with self.lock:
            self.lines.pop(lid, None)

    def stop(self) -> None:
        self.send(None)
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


class ProcessBackend:
    """Same interface as the in-process backend; the model lives in a child process. Lines from
    many threads at once are all sent to the child, which generates them in one batch."""

    concurrent = True

    def __init__(self, cfg, start_timeout: float = 300.0) -> None:
        self.cfg = cfg
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()  # starting and restarting the child
        self._ids = itertools.count(1)
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._gen = _Generation(self._ctx, self.cfg, self.start_timeout)
        self.load_seconds = time.perf_counter() - t0

    @property
    def pid(self) -> int | None:
        return self._gen.proc.pid

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        with self._lock:
            if not self._gen.proc.is_alive() or self._gen.dead:
                self._restart(self._gen, "model process was not running")
            gen = self._gen
        lid = next(self._ids)
        q = gen.open(lid)
        gen.send(("line", lid, req))
        finished = cancelled = False
        try:
            while True:
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = gen.send(("cancel", lid)) or True
                try:
                    msg = q.get(timeout=0.02)
                except queue.Empty:
                    if not gen.proc.is_alive() and not gen.dead:
                        msg = ("died",)
                    else:
                        continue
                kind = msg[0]
                if kind == "piece":
                    if not cancelled:
                        yield msg[2], msg[3]
                    continue
                finished = True
                if kind == "died":
                    self._restart(gen, f"model process died (exit code {gen.proc.exitcode})")
                    raise GenerationError("the model process died mid-line; it was restarted")
                if kind == "error":
                    raise GenerationError(msg[2])
                return
        finally:
            if not finished:  # the caller stopped early: end this line in the child, drain it
                gen.send(("cancel", lid))
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    try:
                        msg = q.get(timeout=0.05)
                    except queue.Empty:
                        if gen.dead or not gen.proc.is_alive():
                            break
                        continue
                    if msg[0] != "piece":
                        break
                else:
                    self._restart(gen, "model process did not stop a cancelled line")
            gen.close_line(lid)

    def _restart(self, gen: _Generation, why: str) -> None:
        """Start a new child in place of ``gen`` (once: lines that saw the same death share it)."""
        with self._lock:
            if gen is not self._gen:
                return
            log.error("%s; starting it again", why)
            self.restarts += 1
            try:
                gen.proc.kill()
            except Exception:
                pass
            self._start()

    def close(self) -> None:
        self._gen.stop()
