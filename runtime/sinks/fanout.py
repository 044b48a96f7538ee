"""Hands each frame to every sink without waiting on any of them.

Sinks never raise by contract; the guard here catches a sink that breaks it anyway, logs it once
and keeps the other sinks fed.

With ``hold=True`` a frame is only prepared (encoded) when it is made, and put on the wire by
:meth:`Fanout.flush` at its deadline: the frame clock makes frames a little ahead so that the time
they take to make (and other threads taking the GIL meanwhile) never shifts the send.
"""

from __future__ import annotations

import logging

import numpy as np

from runtime.sinks.base import Sink

log = logging.getLogger(__name__)


class Fanout:
    def __init__(self, sinks: list[Sink], *, hold: bool = False) -> None:
        self.sinks = list(sinks)
        self.hold = hold
        self._held: list[tuple[int, object]] = []
        self._broken: set[int] = set()

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        if self.hold:
            if self._held:  # the last frame was never flushed: it goes out now, late, not lost
                self.flush()
            for i, sink in enumerate(self.sinks):
                try:
                    self._held.append((i, sink.prepare(frame, number, t)))
                except Exception as e:
                    self._failed(i, e)
            return
        for i, sink in enumerate(self.sinks):
            try:
                sink.send(frame, number, t)
            except Exception as e:  # contract broken by a sink: keep the others going
                self._failed(i, e)

    def flush(self) -> None:
        """Put the held frame on the wire (``hold`` mode; nothing to do otherwise)."""
        for i, prepared in self._held:
            try:
                self.sinks[i].deliver(prepared)
            except Exception as e:
                self._failed(i, e)
        self._held.clear()

    def _failed(self, i: int, e: Exception) -> None:
        if i not in self._broken:
            self._broken.add(i)
            log.error("%s: send failed: %s (further failures not logged)", self.sinks[i].label, e)

    def close(self) -> None:
        self.flush()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("%s: close failed: %s", sink.label, e)
