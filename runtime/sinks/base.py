"""What every sink shares: the interface the frame clock calls, and a non-blocking UDP transport.

``send`` is called on the frame clock's thread, so it must never block and never raise: a sink that
can block (a file, a WebSocket) hands frames to its own thread through a bounded queue. A receiver
that goes away is logged once per change of state, not once per frame.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

import numpy as np

log = logging.getLogger("runtime.sinks")


class SinkError(Exception):
    """A sink that cannot start: bad URL, unresolvable host, port in use. One line for the user."""


class Sink:
    scheme = ""

    def __init__(self) -> None:
        self.sent = 0  # frames handed to the transport
        self.dropped = 0  # frames lost on the way (receiver gone, queue full)
        self.healthy = True

    @property
    def label(self) -> str:
        return self.scheme

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        """Deliver one frame (float32[61], canonical order). Never blocks, never raises."""
        raise NotImplementedError

    def prepare(self, frame: np.ndarray, number: int, t: float) -> object:
        """Do the work of :meth:`send` that can be done ahead of the frame's deadline; the result
        goes to :meth:`deliver` at the deadline. Here: only a copy (sinks that queue are cheap)."""
        return frame.copy(), number, t

    def deliver(self, prepared: object) -> None:
        """Put a :meth:`prepare` result on the wire. Never blocks, never raises."""
        self.send(*prepared)  # type: ignore[misc]

    def close(self) -> None:
        pass

    def _state(self, healthy: bool, why: str = "") -> None:
        """Log a change of receiver state once."""
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                log.info("%s: receiver reachable again", self.label)
            else:
                log.warning("%s: receiver unreachable (%s); still sending, will recover", self.label, why)


def resolve(host: str, port: int) -> tuple:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise SinkError(f"cannot resolve host {host!r}: {e.strerror}") from None
    return infos[0]


class UdpSink(Sink):
    """Datagrams to one receiver. Subclasses implement ``encode`` (pure) and get the transport."""

    default_port = 0

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        family, _, _, _, addr = resolve(host, port)
        self.host, self.port, self.addr = host, port, addr
        self._last_error = 0.0
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            # connected UDP: the kernel reports "port unreachable" back to us as ECONNREFUSED
            self.sock.connect(addr)
        except OSError as e:
            self.sock.close()
            raise SinkError(f"{self.scheme}://{host}:{port}: {e.strerror}") from None

    @property
    def label(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def encode(self, frame: np.ndarray, number: int, t: float) -> list[bytes]:
        raise NotImplementedError

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        self.deliver(self.prepare(frame, number, t))

    def prepare(self, frame: np.ndarray, number: int, t: float) -> list[bytes] | None:
        try:
            return self.encode(frame, number, t)
        except Exception as e:  # a codec bug must not stop the clock
            self.dropped += 1
            log.error("%s: cannot encode frame %d: %s", self.label, number, e)
            return None

    def deliver(self, prepared: object) -> None:
        datagrams: list[bytes] | None = prepared  # type: ignore[assignment]
        if datagrams is None:  # counted as dropped by prepare
            return
        ok = True
        now = time.monotonic()
        for data in datagrams:
            try:
                self.sock.send(data)
            except OSError as e:
                ok = False
                if e.errno not in (errno.ECONNREFUSED, errno.EAGAIN, errno.ENOBUFS,
                                   errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("%s: %s", self.label, e)
                self._last_error = now
                self._state(False, e.strerror or str(e))
        if ok:
            self.sent += 1
            # Linux reports a refused datagram on the *next* send only, so errors alternate with
            # successes while a receiver is gone: call it back only after a quiet second.
            if not self.healthy and now - self._last_error > 1.0:
                self._state(True)
        else:
            self.dropped += 1

    def close(self) -> None:
        self.sock.close()
