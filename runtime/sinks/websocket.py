"""WebSocket server sink (``ws://HOST:PORT``): frames to browsers, OBS overlays, scripts.

Every client gets, on connect, ``{"type":"hello","channels":[61 names],"fps":..,"format":..}``,
then one message per frame in its format:

- ``json``: ``{"type":"frame","seq":n,"t":seconds,"values":[61 floats]}`` (5 decimals);
- ``binary``: 256 bytes, little-endian: uint32 seq, float64 t, 61 x float32 values (canonical
  order), so a browser reads ``new Float32Array(buf, 12, 61)``.

The format is chosen by the query (``ws://host:port/?format=binary``) or changed at any time by the
client sending ``{"type":"subscribe","format":"binary"}`` (answered with ``{"type":"subscribed"}``).

Threads: the server runs its own asyncio loop in its own thread. ``send`` (frame clock) only
appends to a small inbox and wakes the loop. Each client has a bounded queue that drops its own
oldest frames, and its own writer task, so a slow client falls behind alone and never slows the
clock or the other clients. Each frame is encoded once per format, however many clients.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import struct
from urllib.parse import parse_qs, urlsplit

import numpy as np

from runtime import channels
from runtime.loop_thread import LoopThread
from runtime.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

FORMATS = ("json", "binary")
BINARY_SIZE = 12 + 4 * channels.COUNT  # 256
SEND_BUFFER = 32 * 1024  # bytes a client may have in flight (kernel) and queued (websockets), each
_HEAD = struct.Struct("<Id")
_LE_F32 = np.dtype("<f4")


def encode_json(frame: np.ndarray, seq: int, t: float) -> str:
    return json.dumps({"type": "frame", "seq": seq, "t": round(t, 6),
                       "values": np.round(frame.astype(np.float64), 5).tolist()}, separators=(",", ":"))


def encode_binary(frame: np.ndarray, seq: int, t: float) -> bytes:
    return _HEAD.pack(seq & 0xFFFFFFFF, t) + frame.astype(_LE_F32).tobytes()


def decode_binary(data: bytes) -> tuple[int, float, np.ndarray]:
    """Inverse of :func:`encode_binary` (for tests and Python clients)."""
    if len(data) != BINARY_SIZE:
        raise ValueError(f"binary frame is {len(data)} bytes, expected {BINARY_SIZE}")
    seq, t = _HEAD.unpack_from(data)
    return seq, t, np.frombuffer(data, dtype=_LE_F32, offset=12).astype(np.float32)


class _Item:
    """One frame, encoded lazily once per format and shared by all clients."""

    __slots__ = ("frame", "seq", "t", "_enc")

    def __init__(self, frame: np.ndarray, seq: int, t: float) -> None:
        self.frame, self.seq, self.t = frame, seq, t
        self._enc: dict[str, str | bytes] = {}

    def encoded(self, fmt: str) -> str | bytes:
        data = self._enc.get(fmt)
        if data is None:
            enc = encode_binary if fmt == "binary" else encode_json
            data = self._enc[fmt] = enc(self.frame, self.seq, self.t)
        return data


class Client:
    def __init__(self, ws, fmt: str, queue_size: int) -> None:
        self.ws = ws
        self.format = fmt
        self.queue: collections.deque[_Item] = collections.deque(maxlen=queue_size)
        self.ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    @property
    def peer(self) -> str:
        addr = getattr(self.ws, "remote_address", None)
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    def push(self, item: _Item) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self.queue.append(item)
        self.ready.set()


class WebSocketSink(Sink):
    scheme = "ws"

    def __init__(self, host: str, port: int, *, fps: float = 60.0, queue_size: int = 8,
                 default_format: str = "json") -> None:
        super().__init__()
        if default_format not in FORMATS:
            raise SinkError(f"ws://{host}:{port}: format {default_format!r} is not one of {FORMATS}")
        self.host, self.port, self.fps = host, port, fps
        self.queue_size = max(1, queue_size)
        self.default_format = default_format
        self.clients: set[Client] = set()
        # frames on their way to the server thread; only fills if that thread is starved for ~2 s
        self._inbox: collections.deque[_Item] = collections.deque(maxlen=120)
        self._wake_pending = False
        self._lt = LoopThread(f"ws-sink:{port}")
        self.loop = self._lt.loop
        from websockets.asyncio.server import serve

        try:
            self._lt.start(lambda: serve(self._handler, host, port, compression=None, max_size=2**16,
                                         write_limit=SEND_BUFFER, close_timeout=1.0))
        except OSError as e:
            raise SinkError(f"ws://{host}:{port}: {e}") from None
        self.thread = self._lt.thread
        if port == 0:  # an ephemeral port (tests): report the real one
            self.port = self._lt.port
        log.info("%s: serving frames", self.label)

    @property
    def label(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # --- clock thread -------------------------------------------------------------------------

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        if not self.clients:
            return  # nobody listening: nothing to do, nothing lost
        if len(self._inbox) == self._inbox.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self._inbox.append(_Item(frame.copy(), number, t))
        self.sent += 1
        if not self._wake_pending:
            self._wake_pending = True
            self._lt.call_soon(self._drain)

    # --- server thread ------------------------------------------------------------------------

    def _drain(self) -> None:
        self._wake_pending = False
        while self._inbox:
            item = self._inbox.popleft()
            for c in self.clients:
                c.push(item)

    async def _handler(self, ws) -> None:
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
        fmt = query.get("format", [self.default_format])[0]
        if fmt not in FORMATS:
            await ws.close(1008, f"format must be one of {FORMATS}")
            return
        client = Client(ws, fmt, self.queue_size)
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sock is not None:
            # a small kernel buffer: a slow client gets fresh frames late rather than stale ones
            # megabytes behind (loopback autotuning would otherwise queue seconds of frames)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        await ws.send(json.dumps({"type": "hello", "channels": list(channels.NAMES), "fps": self.fps,
                                  "format": fmt, "binary_layout": "<u32 seq, <f64 t, 61 x <f32"}))
        self.clients.add(client)
        log.info("%s: client %s connected (%s)", self.label, client.peer, fmt)
        writer = asyncio.create_task(self._writer(client))
        try:
            async for msg in ws:
                await self._on_message(client, msg)
        except Exception as e:  # connection errors end this client only
            log.debug("%s: client %s: %s", self.label, client.peer, e)
        finally:
            self.clients.discard(client)
            writer.cancel()
            log.info("%s: client %s left (sent %d, dropped %d)", self.label, client.peer,
                     client.sent, client.dropped)

    async def _on_message(self, client: Client, msg: str | bytes) -> None:
        try:
            req = json.loads(msg)
            if not isinstance(req, dict) or req.get("type") != "subscribe":
                raise ValueError('expected {"type":"subscribe","format":"json"|"binary"}')
            fmt = req.get("format", "json")
            if fmt not in FORMATS:
                raise ValueError(f"format must be one of {FORMATS}")
        except ValueError as e:
            await client.ws.send(json.dumps({"type": "error", "message": str(e)}))
            return
        client.format = fmt
        await client.ws.send(json.dumps({"type": "subscribed", "format": fmt}))

    async def _writer(self, client: Client) -> None:
        try:
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.queue:
                    item = client.queue.popleft()
                    await client.ws.send(item.encoded(client.format))  # waits on a slow client only
                    client.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("%s: writer for %s ended: %s", self.label, client.peer, e)

    @property
    def dropped_total(self) -> int:
        return sum(c.dropped for c in list(self.clients))

    def close(self) -> None:
        self._lt.stop()
