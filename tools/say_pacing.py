"""Pacing of ``keyframeface say`` (or several avatars of one ``serve``-like process) at the wire.

A receiver in another process stamps every Live Link datagram with the kernel's arrival time
(SO_TIMESTAMPNS, the same receiver ``keyframeface bench`` uses); the intervals between stamps are
what left the sender. Per run: p99 and max |interval - 1/fps|, missed frames, and the frames whose
interval deviated most (numbered from the first datagram), so a stall at a fixed moment of every
line shows up as the same frame numbers run after run.

    .venv/bin/python tools/say_pacing.py --runs 3                 # the CLI's say, as a user runs it
    .venv/bin/python tools/say_pacing.py --runs 3 --avatars 8     # 8 avatars, one clock, one model,
                                                                   # each saying a line at once

    .venv/bin/python tools/say_pacing.py --avatars 8 --runs 2 --compare 3
        # interleaved: the same streams with no line said (the box's own baseline), frames made at
        # the deadline (lead 0), frames made ahead (config.toml's animation.lead_ms)

Run it with ``PYTHONPATH`` at this checkout. ``--avatars`` builds the faces the way ``serve`` does
(one backend shared, one clock ticking them all, each face with its idle layer, one Live Link port
per avatar). Besides the wire figures each run reports what separates the box from the runtime:
the share of CPU time the VM's host took away meanwhile (``steal_pct``, /proc/stat), our own part
of each send (``own_send_ms``: from the clock's wake-up to the datagram leaving, which host stalls
before the wake-up do not reach), and how often the clock itself woke over 1 ms late
(``clock_stalls``). The model runs in its own process (``model.process``), as in serve.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import bench  # noqa: E402

LINE = "She laughs at the joke, then suddenly looks worried."


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _receiver(seconds: float):
    port = _port()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=bench._receiver, args=(port, seconds, child), daemon=True)
    proc.start()
    assert parent.recv() == "ready"
    return port, parent, proc


def figures(kernel: list[float], frames: list[int], fps: float, top: int = 3) -> dict:
    period = 1000.0 / fps
    k = np.array(kernel)
    iv = np.diff(k) * 1000.0
    dev = np.abs(iv - period)
    worst = np.argsort(-dev)[:top]
    gaps = int((np.diff(np.array(frames)) > 1).sum()) if len(frames) > 1 else 0
    return {"frames": len(kernel), "p99_dev_ms": round(float(np.percentile(dev, 99)), 3),
            "max_dev_ms": round(float(dev.max()), 3),
            "first_second_p99_dev_ms": round(float(np.percentile(dev[:int(fps)], 99)), 3),
            "missed": gaps + int((iv > 1.5 * period).sum()),
            "worst": [(int(i + 1), round(float(iv[i]), 2)) for i in worst]}


def run_say(text: str, fps: float, extra: list[str]) -> dict:
    port, conn, proc = _receiver(30.0)
    cmd = [sys.executable, "-m", "runtime.cli", "say", text, "--sink", f"livelink://127.0.0.1:{port}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    _, kernel, frames = conn.recv()
    proc.join(2)
    res = figures(kernel, frames, fps)
    try:
        res["say"] = json.loads(out.stderr.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res["say"] = out.stderr[-300:]
    return res


def _steal() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine so far: time the hypervisor ran someone else."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return ticks[7], sum(ticks)
    except (OSError, IndexError, ValueError):
        return 0, 0


def run_avatars(n: int, fps: float, rounds: int, lead_ms: float | None = None,
                bare: bool = False, config_path: Path | None = None) -> list[dict]:
    """``n`` avatars on one backend and one clock, as serve runs them; each says a line at once,
    ``rounds`` times; every avatar's stream received and measured on its own. ``lead_ms``: frames
    made that long before their deadline and sent on it (None: config.toml's; 0: made at it).
    ``bare``: the same process, clock and streams, but no line is said: the baseline of this box
    in this sitting (a VM's host taking the CPU away shows here as much as under load)."""
    from runtime import assemble, config
    from runtime.animate.idle import Idle
    from runtime.animate.spline import warm_up
    from runtime.avatar import Avatar
    from runtime.clock import FrameClock
    from runtime.generate import LineRequest
    from runtime.sinks.fanout import Fanout
    from runtime.sinks.livelink import LiveLinkSink

    cfg = config.load(config_path or ROOT / "config.toml")
    lead = cfg.animation.lead_ms if lead_ms is None else lead_ms
    lang = assemble.language(cfg)
    backend = assemble.backend(cfg, lang)
    warm_up()
    if cfg.idle.enabled:  # its kernels compiled now, not on the clock's first frames
        spare, buf = Idle.from_config(cfg.idle, seed=99, fps=fps), np.zeros(61, np.float32)
        for k in range(120):
            spare.compose(lang.rest.astype(np.float32), k / fps, out=buf)
    list(backend.stream(LineRequest("Hello.")))
    seconds = 4.0 * rounds + 2
    recv = [_receiver(seconds) for _ in range(n)]
    sinks = [LiveLinkSink("127.0.0.1", port, device_id=cfg.livelink.device_id, subject=f"a{i}", fps=fps)
             for i, (port, _, _) in enumerate(recv)]
    # our own part of each send: from the clock's wake-up (its tick, or its emit when frames are
    # made ahead) to the datagram leaving; the host taking the CPU away before the wake-up is not in it
    woke = [0.0]
    own: list[float] = []

    def timed(deliver):
        def deliver_and_time(prepared) -> None:
            deliver(prepared)
            own.append(time.perf_counter() - woke[0])
        return deliver_and_time

    for s in sinks:
        s.deliver = timed(s.deliver)
    fanouts = [Fanout([s], hold=lead > 0) for s in sinks]
    c = cfg.idle  # each face alive, as serve makes them (blinks, gaze, breath: work on every tick)
    avatars = [Avatar(f"a{i}", backend, lang, f, fps=fps, attack=cfg.animation.attack,
                      release=cfg.animation.release, timeout=cfg.model.timeout,
                      interpolator=assemble.interpolator(cfg), lead=lead / 1000,
                      idle=Idle.from_config(c, seed=i, fps=fps) if c.enabled else None)
               for i, f in enumerate(fanouts)]
    total = int(seconds * fps)

    def tick(k: int, t: float) -> bool:
        if lead <= 0:
            woke[0] = time.perf_counter()
        for a in avatars:
            a.tick(k, t)
        return k + 1 < total

    def emit() -> None:
        woke[0] = time.perf_counter()
        for f in fanouts:
            f.flush()

    steal0 = _steal()
    clock = FrameClock(fps, tick, spin_s=cfg.animation.spin_ms / 1000, emit=emit if lead > 0 else None,
                       lead_s=lead / 1000, realtime=cfg.animation.realtime).start()
    collections = _CollectorPauses()  # every collection while the clock runs stops it too
    firsts = []
    for r in range(rounds):
        time.sleep(0.5)
        if bare:
            time.sleep(3.5)
            continue
        lines = [a.say(LineRequest(bench.LINES[(i + r) % len(bench.LINES)])) for i, a in enumerate(avatars)]
        while not all(line.gen_done for line in lines):
            time.sleep(0.02)
        firsts += [(line.first_key_at - line.submitted) * 1000 for line in lines if line.first_key_at]
        time.sleep(3.0)
    clock.join()
    collections.close()
    steal1 = _steal()
    out = []
    for s in sinks:
        s.close()
    for (_, conn, proc) in recv:
        _, kernel, frames = conn.recv()
        proc.join(2)
        out.append(figures(kernel, frames, fps))
    for a in avatars:
        a.close()
    if hasattr(backend, "close"):
        backend.close()
    jiffies = max(steal1[1] - steal0[1], 1)
    out.append({"lead_ms": lead, "bare": bare, "steal_pct": round(100 * (steal1[0] - steal0[0]) / jiffies, 2),
                "clock": clock.stats.summary(),
                "clock_stalls": sum(ms > 1.0 for ms in clock.stats.late_ms),  # woke > 1 ms late
                "own_send_ms_p50": round(float(np.percentile(own, 50)) * 1000, 3),
                "own_send_ms_p99": round(float(np.percentile(own, 99)) * 1000, 3),
                "first_keyframe_ms_median": round(statistics.median(firsts), 1) if firsts else None,
                "first_keyframe_ms_max": round(max(firsts), 1) if firsts else None,
                "gc_ms_max": round(max(collections.ms, default=0.0), 2),
                "gc_over_1ms": sum(ms > 1.0 for ms in collections.ms)})
    return out


class _CollectorPauses:
    """How long each of Python's garbage collections took (``gc.callbacks``) until closed."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self._t0 = 0.0
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms.append((time.perf_counter() - self._t0) * 1000)

    def close(self) -> None:
        gc.callbacks.remove(self._on)


def run_ticks(text: str, fps: float, runs: int) -> list[dict]:
    """The say path in this process, each tick timed on the clock thread (wake to send): a stall
    inside the tick shows with its frame number of the line, whatever the box's load does to the
    wire figures. The slowest ticks of each run."""
    from runtime import assemble, config
    from runtime.animate.spline import warm_up

    cfg = config.load(ROOT / "config.toml")
    lang = assemble.language(cfg)
    backend = assemble.backend(cfg, lang)
    warm_up()
    out = [_timed_line(cfg, backend, lang, text, fps) for _ in range(runs)]
    if hasattr(backend, "close"):
        backend.close()
    return out


def _timed_line(cfg, backend, lang, text: str, fps: float) -> dict:
    from runtime import assemble
    from runtime.avatar import Avatar
    from runtime.clock import FrameClock
    from runtime.generate import LineRequest
    from runtime.sinks.fanout import Fanout
    from runtime.sinks.livelink import LiveLinkSink

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a receiver that is there (not read)
    rx.bind(("127.0.0.1", 0))
    sink = LiveLinkSink("127.0.0.1", rx.getsockname()[1], device_id=cfg.livelink.device_id,
                        subject="t", fps=fps)
    avatar = Avatar("t", backend, lang, Fanout([sink]), fps=fps, attack=cfg.animation.attack,
                    release=cfg.animation.release, interpolator=assemble.interpolator(cfg))
    took: list[tuple[int, float]] = []
    line = avatar.say(LineRequest(text))
    first = [None]

    def tick(n: int, t: float) -> bool:
        t0 = time.perf_counter()
        avatar.tick(n, t)
        if line.first_frame_at and first[0] is None:
            first[0] = n
        took.append((n, (time.perf_counter() - t0) * 1000))
        return not (line.gen_done and avatar.idle) or n < 30

    clock = FrameClock(fps, tick, spin_s=cfg.animation.spin_ms / 1000).start()
    clock.join()
    avatar.close()
    sink.close()
    rx.close()
    f0 = first[0] or 0
    slow = sorted(took, key=lambda x: -x[1])[:4]
    return {"ticks": len(took), "tick_ms_p50": round(statistics.median(x for _, x in took), 3),
            "slowest": [(n - f0, round(ms, 2)) for n, ms in slow]}


def segment_entries(old_warm_up: bool) -> dict:
    """What the clock pays when playback enters a segment whose tangent needs the next key (in a
    fresh process, after the warm-up ``say`` does): the first entry vs the ones after it.
    ``old_warm_up`` warms only what the warm-up did before this fix (the jitted kernels called
    from jitted code), not ``fc_tangent`` called from Python."""
    from runtime.animate import spline
    from runtime.animate.timeline import Track

    if old_warm_up:
        t = np.array([0.0, 0.5, 1.0])
        v = np.zeros((3, 61))
        spline.monotone_cubic(t, v, np.array([0.25]))
        out = np.zeros(61)
        spline.hermite(v[0], v[1], out, out, 0.5, 0.5, out)
    else:
        spline.warm_up()
    rng = np.random.default_rng(0)
    took = []
    for _ in range(5):
        track = Track(np.zeros(61))
        for k in range(1, 5):
            track.add(0.2 * k, rng.uniform(0, 1, 61))
        buf = np.zeros(61, dtype=np.float32)
        seg = -1
        while track.pos < track.end - 1e-9:
            t0 = time.perf_counter()
            track.advance(1 / 60, buf)
            if track._seg_index != seg:
                seg = track._seg_index
                took.append((time.perf_counter() - t0) * 1000)
    return {"old_warm_up": old_warm_up, "first_entry_ms": round(took[0], 3),
            "later_entries_ms_median": round(statistics.median(took[1:]), 4)}


def _summary(res: list[dict], args) -> dict:
    streams, run = res[:-1], res[-1]
    return {"avatars": args.avatars, "rounds": args.runs, "lead_ms": run["lead_ms"], "bare": run["bare"],
            "p99_dev_ms_median": statistics.median(r["p99_dev_ms"] for r in streams),
            "p99_dev_ms_worst": max(r["p99_dev_ms"] for r in streams),
            "missed": sum(r["missed"] for r in streams), "steal_pct": run["steal_pct"],
            "clock_late_ms_p99": round(run["clock"]["late_ms_p99"], 3),
            "own_send_ms_p50": run["own_send_ms_p50"], "own_send_ms_p99": run["own_send_ms_p99"],
            "clock_stalls": run["clock_stalls"],
            "first_second_p99_dev_ms_worst": max(r["first_second_p99_dev_ms"] for r in streams),
            "first_keyframe_ms_max": run["first_keyframe_ms_max"],
            "gc_ms_max": run["gc_ms_max"], "gc_over_1ms": run["gc_over_1ms"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--text", default=LINE)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--avatars", type=int, default=0, help="N avatars in one process instead of the CLI's say")
    p.add_argument("--lead-ms", type=float, default=None,
                   help="with --avatars: make frames this long before their deadline (default: config.toml's)")
    p.add_argument("--config", type=Path, default=None,
                   help="with --avatars: this config.toml (default: the checkout's)")
    p.add_argument("--bare", action="store_true", help="with --avatars: the same streams, no line said")
    p.add_argument("--compare", type=int, default=0, metavar="N",
                   help="with --avatars: N x (bare, frames made at the deadline, made ahead), interleaved")
    p.add_argument("--say-args", default="", help="more arguments for say (e.g. '--config my.toml')")
    p.add_argument("--ticks", action="store_true", help="time each tick in this process (frame of the line)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--entry", action="store_true", help="cost of the first segment entry, before/after the fix")
    p.add_argument("--old-warm-up", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.entry and args.child:
        print(json.dumps(segment_entries(args.old_warm_up)))
        return 0
    if args.entry:  # each measurement in a fresh process, as every say is
        for old in (True, False):
            for _ in range(args.runs):
                cmd = [sys.executable, __file__, "--entry", "--child", *(["--old-warm-up"] if old else [])]
                print(subprocess.run(cmd, capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip())
        return 0
    if args.ticks:
        for r in run_ticks(args.text, args.fps, args.runs):
            print(json.dumps(r))
        return 0
    if args.avatars and args.compare:  # interleaved, so that the box's moods fall on all three alike
        kinds = [("bare", 0.0, True), ("made at the deadline", 0.0, False), ("made ahead", None, False)]
        table: dict[str, list[dict]] = {k: [] for k, _, _ in kinds}
        for _ in range(args.compare):
            for name, lead, bare in kinds:
                s = _summary(run_avatars(args.avatars, args.fps, args.runs, lead, bare, args.config), args)
                s["kind"] = name
                table[name].append(s)
                print(json.dumps(s), flush=True)
        for name, rows in table.items():
            print(json.dumps({"kind": name, "runs": len(rows),
                              "p99_dev_ms_median": statistics.median(r["p99_dev_ms_median"] for r in rows),
                              "p99_dev_ms_worst": max(r["p99_dev_ms_worst"] for r in rows),
                              "missed": sum(r["missed"] for r in rows),
                              "steal_pct_median": statistics.median(r["steal_pct"] for r in rows),
                              "own_send_ms_p99_median": statistics.median(r["own_send_ms_p99"] for r in rows)}))
        return 0
    if args.avatars:
        res = run_avatars(args.avatars, args.fps, args.runs, args.lead_ms, args.bare, args.config)
        for r in res:
            print(json.dumps(r))
        print(json.dumps(_summary(res, args)))
        return 0
    runs = []
    for _ in range(args.runs):
        r = run_say(args.text, args.fps, args.say_args.split())
        print(json.dumps(r))
        runs.append(r)
    print(json.dumps({"runs": len(runs), "p99_dev_ms_median": statistics.median(r["p99_dev_ms"] for r in runs),
                      "p99_dev_ms_worst": max(r["p99_dev_ms"] for r in runs),
                      "max_dev_ms_worst": max(r["max_dev_ms"] for r in runs),
                      "missed": sum(r["missed"] for r in runs)}))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "say-pacing"
    raise SystemExit(main())
