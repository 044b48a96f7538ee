"""Frame clock on absolute deadlines.

Deadline n is ``start + n / fps``, never "last tick + interval", so the clock cannot drift. It sleeps
until shortly before a deadline and spins the rest, because a plain sleep on a loaded 2-core
machine wakes up to a few milliseconds late. If a tick overruns, the missed deadlines are counted
and skipped (the frame number still follows wall time, as Unreal's Timecode mode expects).

With ``emit``, frame n is made ``lead_s`` before its deadline and ``emit()`` puts it on the wire at
the deadline (sinks in a holding :class:`~runtime.sinks.fanout.Fanout`): how long the frames take
to make, and other threads taking the GIL meanwhile, then no longer shift the send. A frame's
content is for its own time ``t``; only what arrived in the last ``lead_s`` waits a frame.

The callback must never block: everything that can (model, sockets, files) runs elsewhere and is
reached through bounded queues.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# Python hands the GIL to a waiting thread only every switch interval (5 ms by default): a clock
# thread waiting behind the generator's Python loop would be late by up to that. 0.5 ms bounds it.
SWITCH_INTERVAL = 0.0005


def freeze_collector() -> None:
    """Freeze what exists. Python's cyclic collector stops every thread while it walks the objects
    it tracks: with the model client, numba and onnxruntime loaded a process holds 117k-167k, and a
    full collection took 12-59 ms (a young one up to 7 ms): a stalled frame each time. What exists when a
    clock starts (modules, models, avatars) lives about as long as the process; frozen, the collector
    never walks it again, and collections see only what was made since. (No collection first: it
    would cost the caller ~30 ms, and the cyclic garbage frozen with the rest is a few objects.)"""
    gc.freeze()


@dataclass
class ClockStats:
    frames: int = 0
    missed: int = 0  # deadlines skipped because a tick overran
    late_ms: list[float] = field(default_factory=list)  # lateness of each tick vs its deadline
    errors: int = 0  # ticks that raised: logged, and the clock went on

    def summary(self) -> dict:
        late = np.asarray(self.late_ms or [0.0])
        return {"frames": self.frames, "missed": self.missed,
                "late_ms_p50": float(np.percentile(late, 50)),
                "late_ms_p99": float(np.percentile(late, 99)),
                "late_ms_max": float(late.max())}


class FrameClock:
    """Calls ``tick(frame_number, t_seconds)`` at ``fps`` on absolute deadlines in its own thread."""

    def __init__(self, fps: float, tick: Callable[[int, float], bool | None], *,
                 spin_s: float = 0.0015, emit: Callable[[], None] | None = None, lead_s: float = 0.004,
                 name: str = "frame-clock", keep_stats: int = 100_000, realtime: int = 0):
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self.tick = tick
        self.spin_s = spin_s
        self.emit = emit
        self.lead_s = min(max(lead_s, 0.0), self.period) if emit is not None else 0.0
        self.realtime = realtime  # SCHED_FIFO priority asked for the clock thread (0: normal scheduling)
        self.scheduling = "normal"  # what the thread got: "fifo N", "nice -10" or "normal"
        self.stats = ClockStats()
        self._keep = keep_stats
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.start_time = 0.0

    def start(self) -> FrameClock:
        freeze_collector()
        # made ahead, frame 0 is due one period from now and made at once (see _run), so it leaves
        # on time too: made at its deadline, its first-call costs put it 6-14 ms late at the wire
        self.start_time = time.perf_counter() + (self.period if self.emit is not None else 0.0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _boost(self) -> None:
        """Ask the OS to run this thread the moment it wakes. Real-time scheduling (SCHED_FIFO at
        ``realtime``) preempts every normal thread and process, the model's and other programs'
        included: on a busy 2-core box a nice value alone left the clock waking up to 5-8 ms late
        (p99 5.2 ms at the wire against 0.06 with FIFO, docs/BENCHMARKS.md, issue 18). The thread
        sleeps most of each period and spins at most ``spin_s``, and the kernel keeps 5% of each
        second for normal threads whatever a real-time one does. Needs root, CAP_SYS_NICE or an
        rtprio limit; else a lower nice value (root or CAP_SYS_NICE); else normal, said once."""
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        tid = threading.get_native_id()
        if self.realtime > 0:
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(self.realtime))
                self.scheduling = f"fifo {self.realtime}"
                return
            except (OSError, AttributeError) as e:
                log.info("frame clock: no real-time scheduling (%s); pacing may suffer on a busy machine", e)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, -10)
            self.scheduling = "nice -10"
        except (OSError, AttributeError) as e:
            log.debug("frame clock keeps normal priority: %s", e)

    def _run(self) -> None:
        self._boost()
        n = 0
        stats = self.stats
        while not self._stop.is_set():
            deadline = self.start_time + n * self.period
            if self.emit is not None:  # make the frame ahead; it leaves at the deadline below
                # frame 0 is made as soon as the clock starts, a period ahead: its first-call
                # costs (8 avatars: 9 ms) exceed any lead
                wait = deadline - (self.period if n == 0 else self.lead_s) - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                go_on = self._tick(n)
            wait = deadline - time.perf_counter()
            if wait > self.spin_s:
                time.sleep(wait - self.spin_s)
            while time.perf_counter() < deadline:
                pass
            now = time.perf_counter()
            late = now - deadline
            if len(stats.late_ms) < self._keep:
                stats.late_ms.append(late * 1000.0)
            if self.emit is not None:
                try:
                    self.emit()
                except Exception:
                    self._failed(n, "emit")
            else:
                go_on = self._tick(n)
            if not go_on:  # (the frame that asked to stop was sent, as without emit; not counted)
                break
            stats.frames += 1
            # next deadline: skip any that already passed while this tick ran
            after = time.perf_counter()
            nxt = n + 1
            if after > self.start_time + nxt * self.period + self.period:
                skip = int((after - self.start_time) / self.period) - nxt
                stats.missed += skip
                nxt += skip
            n = nxt

    def _tick(self, n: int) -> bool:
        """The callback for frame ``n``; False when it asks to stop. Errors are logged, not raised."""
        try:
            return self.tick(n, n * self.period) is not False
        except Exception:  # a bug in one layer must not stop the stream: say so, keep the beat
            self._failed(n, "tick")
            return True

    def _failed(self, n: int, what: str) -> None:
        stats = self.stats
        stats.errors += 1
        if stats.errors == 1 or stats.errors % 600 == 0:
            log.exception("frame %d: the %s raised (%d so far); the clock goes on", n, what, stats.errors)
