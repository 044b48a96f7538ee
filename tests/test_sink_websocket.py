"""WebSocket sink against the ``websockets`` library's own client, over loopback."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from runtime import channels
from runtime.sinks import SinkError, open_sink
from runtime.sinks.websocket import BINARY_SIZE, WebSocketSink, decode_binary, encode_binary
from tests.sink_peers import wait_until


def frame(i: int) -> np.ndarray:
    f = np.full(channels.COUNT, (i % 100) / 100, dtype=np.float32)
    f[channels.SHAPES:] = -0.25
    return f


@pytest.fixture
def sink():
    s = WebSocketSink("127.0.0.1", 0, fps=60.0, queue_size=8)
    yield s
    s.close()


def hello(ws) -> dict:
    msg = json.loads(ws.recv(timeout=5))
    assert msg["type"] == "hello" and msg["channels"] == list(channels.NAMES)
    return msg


def test_binary_layout():
    data = encode_binary(frame(3), 70000, 12.5)
    assert len(data) == BINARY_SIZE == 256
    seq, t, values = decode_binary(data)
    assert (seq, t) == (70000, 12.5)
    np.testing.assert_array_equal(values, frame(3))
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", offset=12), frame(3))  # what a browser reads


def test_json_and_binary_clients_get_every_frame(sink):
    with connect(f"ws://127.0.0.1:{sink.port}") as j, connect(f"ws://127.0.0.1:{sink.port}/?format=binary") as b:
        assert hello(j)["format"] == "json" and hello(b)["format"] == "binary"
        assert wait_until(lambda: len(sink.clients) == 2)
        for i in range(50):
            sink.send(frame(i), i, i / 60)
            time.sleep(0.002)
        got_j = [json.loads(j.recv(timeout=5)) for _ in range(50)]
        got_b = [decode_binary(b.recv(timeout=5)) for _ in range(50)]
    assert [m["seq"] for m in got_j] == list(range(50)) == [s for s, _, _ in got_b]
    assert got_j[7]["type"] == "frame" and got_j[7]["t"] == pytest.approx(7 / 60, abs=1e-6)
    np.testing.assert_allclose(got_j[7]["values"], frame(7), atol=1e-5)
    np.testing.assert_array_equal(got_b[7][2], frame(7))


def test_subscribe_switches_format(sink):
    with connect(f"ws://127.0.0.1:{sink.port}") as ws:
        hello(ws)
        ws.send(json.dumps({"type": "subscribe", "format": "xml"}))
        assert json.loads(ws.recv(timeout=5))["type"] == "error"
        ws.send(json.dumps({"type": "subscribe", "format": "binary"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "subscribed", "format": "binary"}
        sink.send(frame(1), 1, 1 / 60)
        seq, _, values = decode_binary(ws.recv(timeout=5))
        assert seq == 1


def test_slow_client_drops_its_own_oldest_frames():
    """A client that stops reading loses its own frames; the clock and a fast client do not notice."""
    # frames arrive here at ~2000 fps rather than 60, so give each client 64 frames of slack for
    # scheduling bursts on a loaded machine (8 frames = 133 ms at 60 fps)
    sink = WebSocketSink("127.0.0.1", 0, queue_size=64)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    slow.connect(("127.0.0.1", sink.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    slow.sendall((f"GET /?format=json HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    with connect(f"ws://127.0.0.1:{sink.port}/?format=binary") as fast:
        hello(fast)
        assert wait_until(lambda: len(sink.clients) == 2)
        n = 3000  # ~3 MB of JSON for the slow client, far beyond socket buffers
        worst = 0.0
        got = []
        for i in range(n):
            t0 = time.perf_counter()
            sink.send(frame(i), i, i / 60)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.0003)  # ~ 2000 fps: far faster than a real clock, slow enough to be fair
            if i % 20 == 19:  # the fast client keeps up
                while len(got) < i - 10:
                    got.append(decode_binary(fast.recv(timeout=5))[0])
        while len(got) < n:
            got.append(decode_binary(fast.recv(timeout=5))[0])
        (slow_client,) = [c for c in sink.clients if c.format == "json"]
        dropped, delivered = slow_client.dropped, slow_client.sent
    slow.close()
    sink.close()
    assert got == list(range(n))  # the fast client missed nothing
    assert worst < 0.1  # send never waited on the slow client (loose: a loaded 2-core box preempts)
    assert dropped > n / 2 and delivered < n / 2  # the slow client lost its own frames


def test_port_in_use_and_bad_format_are_one_line_errors(sink):
    with pytest.raises(SinkError) as e:
        open_sink(f"ws://127.0.0.1:{sink.port}")
    assert "in use" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SinkError):
        open_sink("ws://127.0.0.1:0?format=xml")


def test_no_clients_costs_nothing_and_close_is_clean():
    s = open_sink("ws://127.0.0.1:0")
    for i in range(10):
        s.send(frame(i), i, i / 60)
    s.close()
    assert not s.thread.is_alive()
