"""Many avatars as one array: every face's in-between in a few numpy operations per frame.

For crowds of NPCs (and the ``max_avatars_60fps`` benchmark): N faces each play their own keys,
the spline is evaluated for all N at once on an (N, 61) array, and each face's Live Link packet is
its prebuilt header, the frame's shared 17-byte timing block, and its row of big-endian values.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
from numba import njit

from runtime import channels
from runtime.animate.spline import hermite, tangents
from runtime.sinks.livelink import VERSION


@njit(cache=True)
def _evaluate(times, values, tang, loop, t, seg, out):
    n, k = times.shape
    tmp = np.empty(out.shape[1])
    for i in range(n):
        local = t % loop[i]
        j = seg[i]
        if times[i, j] > local:  # wrapped around the loop
            j = 0
        while j < k - 2 and times[i, j + 1] <= local:
            j += 1
        seg[i] = j
        h = times[i, j + 1] - times[i, j]
        s = min(max((local - times[i, j]) / h, 0.0), 1.0)
        hermite(values[i, j], values[i, j + 1], tang[i, j], tang[i, j + 1], h, s, tmp)
        for ch in range(out.shape[1]):
            out[i, ch] = min(max(tmp[ch], -1.0 if ch >= 52 else 0.0), 1.0)


class Crowd:
    """N avatars with looping random key sequences, each sending to its own Live Link subject."""

    def __init__(self, n: int, fps: float = 60.0, keys: int = 16, seed: int = 0,
                 port: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.fps = n, fps
        gaps = rng.uniform(0.3, 0.9, (n, keys))
        self.times = np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)  # (n, k+1)
        vals = rng.uniform(0, 0.8, (n, keys + 1, channels.COUNT))
        vals[:, :, channels.SHAPES:] = rng.uniform(-0.1, 0.1, (n, keys + 1, channels.COUNT - channels.SHAPES))
        vals[:, -1] = vals[:, 0]  # loop
        self.values = vals
        self.tangents = np.stack([tangents(self.times[i], vals[i]) for i in range(n)])
        self.seg = np.zeros(n, dtype=np.intp)
        self.loop = self.times[:, -1]
        self.frame = np.zeros((n, channels.COUNT), dtype=np.float32)
        # transport: one socket; one receiver port that never reads (the kernel drops overflow)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", port or 0))
        self.addr = self.rx.getsockname()
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.setblocking(False)
        dev = b"6b657966-7261-6d65-6661-636500000001"
        headers = [struct.pack(">Bi", VERSION, len(dev)) + dev + struct.pack(">i", len(s)) + s
                   for s in (f"npc{i:05d}".encode() for i in range(n))]
        # every packet has the same length, so all of them live in one (N, L) byte array: per frame
        # the timing block is broadcast into it and the values land in place with one array copy
        h = len(headers[0])
        self.packets = np.zeros((n, h + 17 + 4 * channels.COUNT), dtype=np.uint8)
        self.packets[:, :h] = np.frombuffer(b"".join(headers), np.uint8).reshape(n, h)
        self._timing = slice(h, h + 17)
        self._values = self.packets[:, h + 17:].view(">f4")
        self._rows = [memoryview(row) for row in self.packets]
        self.sent = 0

    def evaluate(self, t: float) -> np.ndarray:
        """Every avatar's pose at time t, as one (N, 61) array."""
        _evaluate(self.times, self.values, self.tangents, self.loop, t, self.seg, self.frame)
        return self.frame

    def send(self, number: int, t: float) -> None:
        x = t * self.fps
        self.packets[:, self._timing] = np.frombuffer(
            struct.pack(">ifiiB", int(x), x - int(x), int(round(self.fps)), 1, channels.COUNT), np.uint8)
        self._values[:] = self.frame  # big-endian float32 view into every packet
        sendto, addr, rows = self.tx.sendto, self.addr, self._rows
        for i in range(self.n):
            try:
                sendto(rows[i], addr)
            except BlockingIOError:
                pass
        self.sent += 1

    def run(self, seconds: float) -> float:
        """Drive every avatar at fps on absolute deadlines; return p99 |interval - period| in ms,
        measured when each frame's last packet has left."""
        period = 1.0 / self.fps
        total = int(seconds * self.fps)
        done = np.empty(total)
        start = time.perf_counter() + 0.05
        for n in range(total):
            deadline = start + n * period
            wait = deadline - time.perf_counter()
            if wait > 0.0015:
                time.sleep(wait - 0.0015)
            while time.perf_counter() < deadline:
                pass
            self.evaluate(n * period)
            self.send(n, n * period)
            done[n] = time.perf_counter()
        dev = np.abs(np.diff(done) - period) * 1000.0
        return float(np.percentile(dev, 99))

    def close(self) -> None:
        self.tx.close()
        self.rx.close()
