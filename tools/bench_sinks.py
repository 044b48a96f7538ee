"""Per-sink cost of one frame: codec time (µs), bytes and datagrams/messages per frame, and the time
``send`` takes on the frame clock's thread (codec + transport hand-off).

    .venv/bin/python tools/bench_sinks.py [--frames 2000] [--repeat 7] [--markdown]

Codec times are the best (min) of ``--repeat`` runs of ``--frames`` frames each, single thread. Send
times use real loopback receivers that are never read (UDP) or a client that reads on its own
thread (WebSocket), so they include the syscalls and the cross-thread wake-up, not the network.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime import channels  # noqa: E402
from runtime.sinks import SinkOptions, open_sink  # noqa: E402
from runtime.sinks.csv import format_row  # noqa: E402
from runtime.sinks.livelink import LiveLinkEncoder  # noqa: E402
from runtime.sinks.osc import OscEncoder  # noqa: E402
from runtime.sinks.vmc import VmcEncoder  # noqa: E402
from runtime.sinks.vrchat import VrchatEncoder  # noqa: E402
from runtime.sinks.vtubestudio import build_mapping  # noqa: E402
from runtime.sinks.websocket import encode_binary, encode_json  # noqa: E402


def frames(n: int) -> np.ndarray:
    """A moving face: every channel changes every frame (the worst case for send-on-change)."""
    t = np.arange(n)[:, None] / 60.0
    phase = np.arange(channels.COUNT)[None, :] * 0.37
    f = 0.5 + 0.45 * np.sin(2 * np.pi * 0.7 * t + phase)
    f[:, channels.SHAPES:] = 0.15 * np.sin(2 * np.pi * 0.3 * t[:, :1] + phase[:, channels.SHAPES:])
    return f.astype(np.float32)


def time_codec(fn, data: np.ndarray, repeat: int) -> tuple[float, list]:
    """Best (min) µs per frame of ``fn(frame, i, t)`` over ``repeat`` runs, as timeit advises on a
    shared machine; returns the outputs of the last run too."""
    runs = []
    out: list = []
    for _ in range(repeat):
        out = []
        t0 = time.perf_counter()
        for i, f in enumerate(data):
            out.append(fn(f, i, i / 60))
        runs.append((time.perf_counter() - t0) / len(data) * 1e6)
    return min(runs), out


def size(out) -> tuple[float, float]:
    """(bytes per frame, datagrams/messages per frame) of codec outputs."""
    total = n = 0
    for o in out:
        items = o if isinstance(o, list) else [o]
        n += len(items)
        total += sum(len(x.encode() if isinstance(x, str) else x) for x in items)
    return total / len(out), n / len(out)


def codecs() -> dict:
    ll = LiveLinkEncoder("6b657966-7261-6d65-6661-636500000001", "KeyframeFace", 60.0)
    vmc = VmcEncoder()
    osc1, oscn = OscEncoder(), OscEncoder(template="/face/{name}")
    vts = build_mapping()
    vts_all = build_mapping(["all"])

    def vrchat_moving():
        enc = VrchatEncoder()
        return lambda f, i, t: enc.encode(f, t)

    def vrchat_bundled():
        enc = VrchatEncoder(bundle=True)
        return lambda f, i, t: enc.encode(f, t)

    def vrchat_still():
        enc = VrchatEncoder()
        still = frames(1)[0]
        return lambda f, i, t: enc.encode(still, t)

    return {
        "livelink": lambda f, i, t: ll.encode(f, t),
        "vmc": lambda f, i, t: vmc.encode(f, t),
        "osc (one message)": lambda f, i, t: osc1.encode(f),
        "osc (per channel, bundled)": lambda f, i, t: oscn.encode(f),
        "vrchat (all 52 moving)": vrchat_moving(),
        "vrchat (all moving, bundle = true)": vrchat_bundled(),
        "vrchat (face still)": vrchat_still(),
        "ws json": lambda f, i, t: encode_json(f, i, t),
        "ws binary": lambda f, i, t: encode_binary(f, i, t),
        "vts (17 default params)": lambda f, i, t: vts.inject(vts.values(f), "set", f"kf-{i}"),
        "vts (+50 custom params)": lambda f, i, t: vts_all.inject(vts_all.values(f), "set", f"kf-{i}"),
        "csv row": lambda f, i, t: format_row(f, t),
    }


def udp_sink_port() -> tuple[socket.socket, int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def time_sends(data: np.ndarray) -> dict[str, float]:
    """µs per ``send`` on the calling (clock) thread, one sink at a time."""
    from websockets.sync.client import connect

    from runtime.config import VrchatConfig, VtubeStudioConfig

    out: dict[str, float] = {}
    holders = []
    tmp = tempfile.mkdtemp()
    opts = SinkOptions(vtubestudio=VtubeStudioConfig(token_path=f"{tmp}/t.json"))
    urls: dict[str, tuple[str, SinkOptions]] = {}
    for name in ("livelink", "vmc", "vrchat", "vrchat (bundle = true)", "osc"):
        s, port = udp_sink_port()
        holders.append(s)
        o = SinkOptions(vrchat=VrchatConfig(bundle=True)) if "bundle" in name else opts
        urls[name] = (f"{name.split()[0]}://127.0.0.1:{port}", o)
    urls["vts (no VTube Studio running)"] = ("vts://127.0.0.1:1", opts)
    urls["ws (1 binary client)"] = ("ws://127.0.0.1:0", opts)
    urls["csv"] = (f"csv:{tmp}/take.csv", opts)
    for name, (url, o) in urls.items():
        sink = open_sink(url, o)
        reader = None
        if name.startswith("ws"):
            ws = connect(f"ws://127.0.0.1:{sink.port}/?format=binary").__enter__()
            ws.recv(timeout=5)
            reader = threading.Thread(target=lambda ws=ws: [None for _ in ws], daemon=True)
            reader.start()
            while not sink.clients:
                time.sleep(0.01)
        best = float("inf")
        for _ in range(3):  # best of 3 passes, like the codecs
            t0 = time.perf_counter()
            for i, f in enumerate(data):
                sink.send(f, i, i / 60)
                if i % 8 == 7:
                    time.sleep(0)  # let the other threads run, as the clock's sleeps do
            best = min(best, (time.perf_counter() - t0) / len(data) * 1e6)
        out[name] = best
        sink.close()
        if reader:
            ws.close()
    for s in holders:
        s.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    a = p.parse_args()
    data = frames(a.frames)
    rows = []
    for name, fn in codecs().items():
        us, out = time_codec(fn, data, a.repeat)
        b, n = size(out)
        rows.append((name, us, b, n))
    sends = time_sends(data[:min(a.frames, 600)])
    if a.markdown:
        print("| sink codec | µs / frame | bytes / frame | datagrams or messages / frame |")
        print("|---|---:|---:|---:|")
        for name, us, b, n in rows:
            print(f"| {name} | {us:.1f} | {b:.0f} | {n:.2f} |")
        print()
        print("| sink `send` on the clock thread | µs / frame |")
        print("|---|---:|")
        for name, us in sends.items():
            print(f"| {name} | {us:.1f} |")
    else:
        print(json.dumps({"codecs": [dict(zip(("sink", "us_per_frame", "bytes_per_frame", "packets_per_frame"), r))
                                     for r in rows], "send_us": sends}, indent=1))


if __name__ == "__main__":
    main()
