"""Hands each frame to every sink without waiting on any of them.

Sinks never raise by contract; the guard here catches a sink that breaks it anyway, logs it once
and keeps the other sinks fed.
"""

from __future__ import annotations

import logging

import numpy as np

from runtime.sinks.base import Sink

log = logging.getLogger(__name__)


class Fanout:
    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)
        self._broken: set[int] = set()

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        for i, sink in enumerate(self.sinks):
            try:
                sink.send(frame, number, t)
            except Exception as e:  # contract broken by a sink: keep the others going
                if i not in self._broken:
                    self._broken.add(i)
                    log.error("%s: send failed: %s (further failures not logged)", sink.label, e)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("%s: close failed: %s", sink.label, e)
