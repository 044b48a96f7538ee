#!/usr/bin/env python3
"""Soak: serve two avatars with three sinks each for a long time, under load, with faults injected.

    tools/soak.py [--duration 3600] [--fault-every 20] [--json]

The server (real default model, real frame clock, real sinks) runs in this process; the UDP
receivers run alone in a second process and the WebSocket readers and control clients in a third,
so what they measure is what left the server. Datagrams the kernel drops because the receiving
process read too slowly are reported apart (``frames_dropped_by_receiver``). Each avatar
streams to Live Link (UDP), VMC (UDP) and a WebSocket sink; control clients send lines all the
time over ``/ws``. On a schedule, one fault at a time:

    receiver_restart   Bob's Live Link receiver is killed and comes back 3 s later
    stalled_client     a /ws client subscribes to frames and stops reading for 10 s
    disconnect         a client sends a line and disconnects mid-line
    model_raise        the model raises an exception mid-line
    model_hang         the model hangs mid-line (the line times out and eases to rest)
    long_line          a line 100x longer than normal
    burst              100 lines at once

Healthy receivers (all but the restarted one) must get every frame the clock produced:
``frames_lost_healthy`` counts frame numbers seen by one healthy receiver of an avatar but not by
another. Exit status 1 if a frame was lost to a healthy receiver, the clock drifted more than one
frame, or memory grew more than 10%.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAULTS = ["receiver_restart", "stalled_client", "disconnect", "model_raise", "model_hang", "long_line",
          "burst"]
LINES = ["She laughs at the joke.", "He frowns, then smiles.", "They gasp in surprise.",
         "A slow, sad sigh.", "He glares at the screen, furious.", "She smirks."]
FPS = 60.0


def rss_mb(pid: int | None = None) -> float:
    for line in open(f"/proc/{pid or os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the receiver process -------------------------------------------------------------------------
VMC_T = b"/VMC/Ext/T\x00\x00,f\x00\x00"
RCVBUF = 8 << 20


def kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to 127.0.0.1:port (Linux's
    /proc/net/udp "drops" column; 0 where that is unavailable)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 12 and fields[1] == want:
                    return int(fields[-1])
    except OSError:
        pass
    return 0


def udp_frame(kind: str, data: bytes) -> int | None:
    """The frame number a Live Link packet or a VMC frame's first bundle (/VMC/Ext/T) carries."""
    if kind == "livelink":
        n = int.from_bytes(data[1:5], "big")
        m = int.from_bytes(data[5 + n:9 + n], "big")
        return struct.unpack_from(">i", data, 9 + n + m)[0]
    at = data.find(VMC_T)
    if at < 0:
        return None  # the frame's second bundle
    (t,) = struct.unpack_from(">f", data, at + len(VMC_T))
    return round(t * FPS)


class UdpPort:
    """One receiving socket: (arrival, frame number) of each frame, and what the kernel dropped
    because this process read too slowly (its buffer overflowed), so a slow measuring process is
    never mistaken for a server that lost frames."""

    def __init__(self, port: int, kind: str) -> None:
        self.port, self.kind = port, kind
        self.arrivals: list[float] = []
        self.frames: list[int] = []
        self.errors: Counter = Counter()
        self.overflow = 0  # datagrams dropped by the kernel, summed over the socket's lives
        self.sock: socket.socket | None = None

    def open(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < RCVBUF and hasattr(socket, "SO_RCVBUFFORCE"):
            try:  # past net.core.rmem_max: allowed as root (CAP_NET_ADMIN), as CI runs
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                pass
        s.setblocking(False)
        s.bind(("127.0.0.1", self.port))
        self.sock = s
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.overflow += kernel_drops(self.port)
            self.sock.close()
            self.sock = None

    def read(self, now: float) -> None:
        """Every datagram waiting on the socket."""
        while self.sock is not None:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.errors[type(e).__name__] += 1
                return
            try:
                frame = udp_frame(self.kind, data)
            except Exception as e:  # a datagram we cannot read is counted, never the end of the receiver
                self.errors[type(e).__name__] += 1
                continue
            if frame is not None:
                self.arrivals.append(now)
                self.frames.append(frame)


def receiver_process(ports: dict, down, stop, conn) -> None:
    """The UDP receivers, alone in a process with one thread: nothing else competes for the
    interpreter while datagrams arrive. ``down`` set: Bob's Live Link receiver is killed."""
    import selectors

    try:  # ahead of the clients, as a real receiver reads at its own rate (allowed as root)
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    except OSError:
        pass
    rx = {k: UdpPort(ports[k], k.split("_")[1]) for k in ("alice_livelink", "alice_vmc", "bob_livelink",
                                                             "bob_vmc")}
    sel = selectors.DefaultSelector()
    for r in rx.values():
        sel.register(r.open(), selectors.EVENT_READ, r)
    restart = rx["bob_livelink"]
    conn.send("ready")
    while not stop.is_set():
        if down.is_set() and restart.sock is not None:
            sel.unregister(restart.sock)
            restart.close()
        elif not down.is_set() and restart.sock is None:
            sel.register(restart.open(), selectors.EVENT_READ, restart)
        for key, _ in sel.select(0.05):
            key.data.read(time.perf_counter())
    for r in rx.values():
        r.read(time.perf_counter())
        r.close()
    conn.send({"udp": {k: (r.arrivals, r.frames) for k, r in rx.items()},
               "overflow": {k: r.overflow for k, r in rx.items()},
               "counts": {f"receiver_error:{k}:{e}": n for k, r in rx.items() for e, n in r.errors.items()}})


# -- the client process ---------------------------------------------------------------------------
class WsReader(threading.Thread):
    """A WebSocket sink's client: records seq numbers of binary frames."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.frames: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        while not self.stop.is_set():
            try:
                with connect(f"ws://127.0.0.1:{self.port}/?format=binary", open_timeout=5) as ws:
                    while not self.stop.is_set():
                        try:
                            msg = ws.recv(timeout=0.2)
                        except TimeoutError:
                            continue
                        if isinstance(msg, bytes) and len(msg) >= 12:
                            self.frames.append(struct.unpack_from("<I", msg)[0])
            except Exception:
                time.sleep(0.2)


def _control_client(url: str, stop: threading.Event, counts: Counter, name: str, avatars: list[str]) -> None:
    """Sends lines all the time, waiting for each done (or an error) before the next."""
    from websockets.sync.client import connect

    i = 0
    while not stop.is_set():
        try:
            with connect(url, open_timeout=5, max_size=None) as ws:
                while not stop.is_set():
                    av = avatars[i % len(avatars)]
                    ws.send(json.dumps({"type": "say", "text": LINES[i % len(LINES)], "avatar": av,
                                        "id": f"{name}-{i}"}))
                    i += 1
                    end = time.monotonic() + 30
                    while time.monotonic() < end and not stop.is_set():
                        try:
                            msg = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        counts[msg.get("type", "?")] += 1
                        if msg.get("type") == "error":
                            counts["error:" + msg.get("code", "?")] += 1
                            break
                        if msg.get("type") == "done" and msg.get("id") == f"{name}-{i - 1}":
                            break
        except Exception as e:
            counts["client_reconnect"] += 1
            counts["client_error:" + type(e).__name__] += 1
            time.sleep(0.5)


def _client_fault(kind: str, url: str, down, counts: Counter) -> None:
    from websockets.sync.client import connect

    if kind == "receiver_restart":
        down.set()
        time.sleep(3.0)
        down.clear()
    elif kind == "stalled_client":
        with connect(url, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "subscribe", "frames": "binary", "avatar": "*"}))
            time.sleep(10.0)  # never reads: the server must drop only this client's frames
    elif kind == "disconnect":
        ws = connect(url, open_timeout=5)
        ws.send(json.dumps({"type": "say", "text": "She starts to laugh and then", "avatar": "alice"}))
        time.sleep(0.3)
        ws.close()
    elif kind == "long_line":
        with connect(url, open_timeout=5, max_size=None) as ws:
            ws.send(json.dumps({"type": "say", "text": " ".join(LINES) * 17, "avatar": "bob"}))
            ws.recv(timeout=5)  # hello
            reply = json.loads(ws.recv(timeout=5))
            counts["long_line_reply:" + reply.get("code", reply.get("type", "?"))] += 1
    elif kind == "burst":
        with connect(url, open_timeout=5, max_size=None) as ws:
            for i in range(100):
                ws.send(json.dumps({"type": "say", "text": LINES[i % len(LINES)], "avatar": "alice"}))
            got = Counter()
            end = time.monotonic() + 5
            while time.monotonic() < end and sum(got.values()) < 100:
                try:
                    m = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    break
                if m.get("type") in ("ack", "error"):
                    got[m.get("code", m["type"])] += 1
            for k, v in got.items():
                counts["burst:" + k] += v
            ws.send(json.dumps({"type": "interrupt", "avatar": "alice"}))  # clear what was accepted


def client_process(ports: dict, schedule: list[tuple[float, str]], duration: float, down, conn) -> None:
    ws = {"alice_ws": WsReader(ports["alice_ws"]), "bob_ws": WsReader(ports["bob_ws"])}
    for r in ws.values():
        r.start()
    conn.send("ready")
    conn.recv()  # server is up
    url = f"ws://127.0.0.1:{ports['serve']}/ws"
    stop = threading.Event()
    counts: Counter = Counter()
    clients = [threading.Thread(target=_control_client, args=(url, stop, counts, f"c{i}", av), daemon=True)
               for i, av in enumerate((["alice"], ["bob"], ["alice", "bob"]))]
    for c in clients:
        c.start()
    t0 = time.monotonic()
    for at, kind in schedule:
        while time.monotonic() - t0 < at:
            time.sleep(0.05)
        if kind in ("model_raise", "model_hang"):
            continue  # the server process injects these
        try:
            _client_fault(kind, url, down, counts)
        except Exception as e:
            counts[f"fault_error:{kind}:{type(e).__name__}"] += 1
    while time.monotonic() - t0 < duration:
        time.sleep(0.05)
    stop.set()
    time.sleep(0.5)
    for r in ws.values():
        r.stop.set()
    for r in ws.values():
        r.join(2)
    conn.send({"ws": {k: r.frames for k, r in ws.items()}, "counts": dict(counts)})


# -- the server process -----------------------------------------------------------------------------
class FaultyBackend:
    """The real backend, plus faults on request: raise or hang mid-line."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.fault: str | None = None

    def stream(self, req, cancel=None):
        fault, self.fault = self.fault, None
        for i, piece in enumerate(self.inner.stream(req, cancel)):
            if fault == "model_raise" and i == 1:
                raise RuntimeError("injected model failure")
            if fault == "model_hang" and i == 1:
                while cancel is None or not cancel.is_set():
                    time.sleep(0.01)
                return
            yield piece


class LogCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"log:{record.levelname.lower()}:{record.name}"] += 1


def analyse(udp: dict, ws: dict, duration: float, overflow: dict | None = None) -> dict:
    """Frames lost to healthy receivers, clock skips and drift, from what the receivers got.

    Live Link and VMC carry timecode frame numbers, the WebSocket sink the clock's own sequence:
    each receiver is judged in its own numbering. The clock produces consecutive numbers except
    where it skipped a deadline, and a skip shows in every receiver of the avatar; so the gaps all
    its receivers share are the clock's, the rest are the receiver's losses, and a receiver whose
    range is shorter than its avatar's longest (beyond a second at each end for connecting and
    closing) lost those frames too. Frames the receiving process itself let the kernel drop (its
    socket's buffer overflowed: ``overflow`` datagrams per receiver) are the measurement's loss,
    not the server's: counted as ``frames_dropped_by_receiver``, never hidden.
    """
    healthy = {"alice": ["alice_livelink", "alice_vmc", "alice_ws"], "bob": ["bob_vmc", "bob_ws"]}
    sets = {k: set(v[1]) for k, v in udp.items()} | {k: set(v) for k, v in ws.items()}
    overflow = overflow or {}
    lost, dropped, missed, per_sink = 0, 0, 0, {}
    for names in healthy.values():
        span = {n: (max(sets[n]) - min(sets[n]) + 1) if sets[n] else 0 for n in names}
        gaps = {n: span[n] - len(sets[n]) for n in names}
        clock_gaps = min(gaps.values())
        longest = max(span.values())
        missed = max(missed, clock_gaps)
        for n in names:
            short = max(0, longest - span[n] - int(2 * FPS))
            miss = gaps[n] - clock_gaps + short
            own = min(miss, overflow.get(n, 0))  # at most one frame per datagram the receiver dropped
            per_sink[n] = {"frames": len(sets[n]), "gaps": gaps[n], "short_by": max(0, longest - span[n]),
                           "lost": miss - own, "receiver_overflow": overflow.get(n, 0)}
            lost += miss - own
            dropped += own
    arr, frames = (np.array(x) for x in udp["alice_livelink"])
    dev = np.abs(np.diff(arr) * 1000 - 1000 / FPS)
    # drift: how far the frame clock moved against wall time, from the arrival residuals of the
    # first and the last minute (medians), so one late packet at either end does not count as drift
    resid = arr - frames / FPS
    edge = min(int(60 * FPS), len(resid) // 4)
    drift = (np.median(resid[-edge:]) - np.median(resid[:edge])) * FPS
    return {"frames_expected": int(duration * FPS), "frames_lost_healthy": int(lost),
            "frames_dropped_by_receiver": int(dropped),
            "missed_deadlines": int(missed), "p99_dev_ms": float(np.percentile(dev, 99)),
            "p50_dev_ms": float(np.percentile(dev, 50)), "drift_frames": float(drift),
            "per_sink": per_sink, "restarted_receiver_frames": len(sets["bob_livelink"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds (default: one hour)")
    ap.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)

    from runtime import assemble
    from runtime.config import AvatarConfig, load
    from runtime.serve import Server

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    ports = {k: free_port() for k in ("alice_livelink", "alice_vmc", "bob_livelink", "bob_vmc")}
    ports |= {k: free_port(socket.SOCK_STREAM) for k in ("alice_ws", "bob_ws", "serve")}
    cfg = load(Path(__file__).resolve().parent.parent / "config.toml")
    cfg.model.timeout = 4.0
    cfg.avatars = [AvatarConfig("alice", [f"livelink://127.0.0.1:{ports['alice_livelink']}",
                                          f"vmc://127.0.0.1:{ports['alice_vmc']}",
                                          f"ws://127.0.0.1:{ports['alice_ws']}"]),
                   AvatarConfig("bob", [f"livelink://127.0.0.1:{ports['bob_livelink']}",
                                        f"vmc://127.0.0.1:{ports['bob_vmc']}",
                                        f"ws://127.0.0.1:{ports['bob_ws']}"])]
    schedule = [(at, FAULTS[i % len(FAULTS)])
                for i, at in enumerate(np.arange(args.fault_every / 2, args.duration - 12, args.fault_every))]

    # receivers and clients in two processes of their own, started before the server
    ctx = mp.get_context("spawn")
    down, stop_rx = ctx.Event(), ctx.Event()
    rx_parent, rx_child = ctx.Pipe()
    rx_proc = ctx.Process(target=receiver_process, args=(ports, down, stop_rx, rx_child), daemon=True)
    rx_proc.start()
    rx_parent.recv()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=client_process, args=(ports, schedule, args.duration, down, child), daemon=True)
    proc.start()
    parent.recv()
    lang = assemble.language(cfg)
    backend = FaultyBackend(assemble.backend(cfg, lang))
    server = Server(cfg, backend, lang, host="127.0.0.1", port=ports["serve"]).start()
    parent.send("go")
    t0 = time.monotonic()
    # memory and deadlines count from the end of warm-up (kernels compiled, clients connected)
    warm = min(max(10.0, 0.05 * args.duration), 300.0)
    rss_start, missed_start = None, 0

    def baseline() -> None:
        nonlocal rss_start, missed_start
        if rss_start is None and time.monotonic() - t0 >= warm:
            rss_start, missed_start = rss_mb(), server.clock.stats.missed

    injected = Counter()
    for at, kind in schedule:
        while time.monotonic() - t0 < at:
            baseline()
            time.sleep(0.05)
        injected[kind] += 1
        if kind in ("model_raise", "model_hang"):
            backend.fault = kind
        sys.stderr.write(f"\r  soak: {time.monotonic() - t0:7.0f}/{args.duration:.0f} s, fault {kind:<16}")
    while time.monotonic() - t0 < args.duration + 1.0:
        baseline()
        time.sleep(0.1)
    rss_end = rss_mb()  # before the receivers' report arrives: its arrays are not the server's memory
    report = parent.recv()
    time.sleep(0.2)  # the last datagrams land
    stop_rx.set()
    udp = rx_parent.recv()
    sys.stderr.write("\n")
    clock_stats = server.clock.stats.summary() if server.clock else {}
    server.close()
    if hasattr(backend.inner, "close"):
        backend.inner.close()
    proc.join(5)
    rx_proc.join(5)

    result = analyse(udp["udp"], report["ws"], args.duration, udp["overflow"])
    result["missed_deadlines"] = max(result["missed_deadlines"], clock_stats.get("missed", 0) - missed_start)
    result |= {"rss_start_mb": rss_start, "rss_end_mb": rss_end, "faults_injected": dict(injected),
               "errors": dict(Counter(report["counts"]) + Counter(udp["counts"]) + counter.counts),
               "clock": clock_stats, "duration_s": args.duration}
    ok = (result["frames_lost_healthy"] == 0 and abs(result["drift_frames"]) <= 1.0
          and rss_end <= 1.10 * rss_start)
    result["ok"] = ok
    for k in ("frames_expected", "frames_lost_healthy", "frames_dropped_by_receiver", "missed_deadlines",
              "p99_dev_ms", "drift_frames",
              "rss_start_mb", "rss_end_mb"):
        print(f"{k:>22}: {result[k]:.3f}" if isinstance(result[k], float) else f"{k:>22}: {result[k]}")
    print(f"{'faults_injected':>22}: {dict(injected)}")
    print(f"{'ok':>22}: {ok}")
    if args.json:
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
