"""Fanout in ``hold`` mode: a frame is encoded when it is made and leaves only on ``flush``."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest

from runtime import channels
from runtime.sinks.base import Sink
from runtime.sinks.fanout import Fanout
from runtime.sinks.livelink import LiveLinkSink, decode_packet


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def _frames(sock) -> list:
    out = []
    while True:
        try:
            out.append(decode_packet(sock.recv(2048)))
        except TimeoutError:
            return out


class Broken(Sink):
    scheme = "broken"

    def prepare(self, frame, number, t):
        raise RuntimeError("a sink's bug")


def test_held_frames_leave_on_flush_and_none_is_lost(receiver, caplog):
    ll = LiveLinkSink("127.0.0.1", receiver.getsockname()[1], device_id="dev", subject="s", fps=60)
    fan = Fanout([Broken(), ll], hold=True)
    frame = channels.zeros()
    frame[channels.INDEX["JawOpen"]] = 0.25
    with caplog.at_level(logging.ERROR):
        fan.send(frame, 1, 1 / 60)
    frame[channels.INDEX["JawOpen"]] = 0.75  # the caller reuses its buffer: the held frame is a copy
    assert _frames(receiver) == []  # made, not sent
    fan.flush()
    got = _frames(receiver)
    assert [p.frame_number for p in got] == [1]
    assert got[0].values[channels.INDEX["JawOpen"]] == pytest.approx(0.25)
    # a frame made before the last was flushed pushes that one out first: late, but not lost
    fan.send(frame, 2, 2 / 60)
    fan.send(frame, 3, 3 / 60)
    fan.close()  # ...and close sends what is held
    assert [p.frame_number for p in _frames(receiver)] == [2, 3]
    assert "broken: send failed: a sink's bug" in caplog.text and ll.sent == 3


def test_without_hold_send_puts_the_frame_on_the_wire_at_once(receiver):
    ll = LiveLinkSink("127.0.0.1", receiver.getsockname()[1], device_id="dev", subject="s", fps=60)
    fan = Fanout([ll])
    fan.send(np.zeros(61, np.float32), 5, 5 / 60)
    assert [p.frame_number for p in _frames(receiver)] == [5]
    fan.flush()  # nothing held: nothing more
    fan.close()
    assert _frames(receiver) == []
