"""Streaming audio -> mouth: latency, sync, analysis cost, and the frame clock's pacing.

    .venv/bin/python tools/bench_audio.py [--lines 6] [--chunk-ms 100] [--json out.json]

A real Avatar (no model: the mouth over the rest pose) on a real 60 fps FrameClock sends frames
through a real Live Link sink to a UDP receiver on loopback. espeak-ng lines are streamed to a
LiveSpeech in chunks at real time, with and without the text; ``--lookahead 0`` (the default) is
the hardest case, each chunk played the moment it arrives. Measured:

* chunk in -> first frame on the wire that reflects it: the chunk's arrival to the first datagram
  received after the plan that includes it was published (the next frame uses it);
* sync: after each line, its streamed mouth (JawOpen as received, on the audio's clock) against
  the line's final plan (all the audio known: the mouth the sound calls for): the shift that lines
  them up best (ms; positive = the streamed mouth lags the sound);
  * analysis cost: worker seconds per second of audio (decode, resample, recognise, plan, and at
  close the forced alignment);
* pacing: the clock's lateness (p50/p99/max) and missed deadlines over the streaming run against
  a run of the same length with no audio, measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import channels as C  # noqa: E402
from runtime.generate import Silent  # noqa: E402

FPS = 60.0
LINES = ["Maybe the big bad pop band plays at my party.",
         "Please bring me both boxes before Monday morning.",
         "Bob bought a map, but Mary paid for the boat.",
         "Peter Piper picked a peck of pickled peppers.",
         "Welcome back, traveller. The mountain pass is blocked by snow.",
         "Mom baked apple pie, but Paul ate the whole thing in minutes."]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=len(LINES))
    ap.add_argument("--chunk-ms", type=float, default=100.0)
    ap.add_argument("--lookahead", type=float, default=0.0,
                    help="seconds from a chunk's arrival to when it plays (LiveSpeech lookahead)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from runtime import voice
    from runtime.animate.spline import warm_up
    from runtime.audio import LiveSpeech, align
    from runtime.avatar import Avatar
    from runtime.clock import FrameClock
    from runtime.generate.prompt import LineRequest
    from runtime.keyframes.language import Language
    from runtime.sinks.base import Sink
    from runtime.sinks.fanout import Fanout

    if not voice.available():
        print("espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    warm_up()
    align.warm()
    from runtime.audio import worker

    worker.warm()
    from runtime.animate import speech

    speech.warm()

    # a sink that puts each frame on a loopback UDP socket (JawOpen and the send time), and a
    # receiver thread that timestamps what arrives: "on the wire"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    port = rx.getsockname()[1]
    received: list[tuple[float, float]] = []  # (arrival perf_counter, JawOpen)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data = rx.recv(65536)
            except TimeoutError:
                continue
            received.append((time.perf_counter(), float(np.frombuffer(data, np.float32)[C.INDEX["JawOpen"]])))

    class Udp(Sink):
        scheme = "udp"

        def __init__(self) -> None:
            super().__init__()
            self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def send(self, frame, number, t):
            self.s.sendto(frame.astype(np.float32).tobytes(), ("127.0.0.1", port))

    threading.Thread(target=receive, daemon=True).start()
    avatar = Avatar("bench", Silent(), Language(), Fanout([Udp()]), fps=FPS)
    clock = FrameClock(FPS, lambda n, t: avatar.tick(n, t) is None or True)
    clock.start()

    def pacing_window(seconds: float) -> dict:
        a = len(clock.stats.late_ms)
        m0 = clock.stats.missed
        time.sleep(seconds)
        late = np.array(clock.stats.late_ms[a:]) if len(clock.stats.late_ms) > a else np.zeros(1)
        return {"frames": len(late), "missed": clock.stats.missed - m0, "late_ms_p50": float(np.percentile(late, 50)),
                "late_ms_p99": float(np.percentile(late, 99)), "late_ms_max": float(late.max())}

    baseline = pacing_window(4.0)
    lat, sync, cost, audio_s, done = [], [], [], 0.0, []
    stream_start = len(clock.stats.late_ms)
    m_start = clock.stats.missed
    for mode in ("text", "audio"):
        for text in LINES[: args.lines]:
            sp = voice.speak(text)
            step = int(sp.sample_rate * args.chunk_ms / 1000) * 2
            live = LiveSpeech(sp.sample_rate, text if mode == "text" else None, lookahead=args.lookahead)
            published: list[tuple[float, int]] = []  # (time, chunk index now in the plan)

            line = avatar.say(LineRequest(text=text), speech=live)
            arrivals = []
            t0 = time.perf_counter()
            r0 = len(received)
            for k, i in enumerate(range(0, len(sp.pcm), step)):
                due = t0 + k * args.chunk_ms / 1000
                while time.perf_counter() < due:
                    time.sleep(0.001)
                arrivals.append(time.perf_counter())
                live.feed(sp.pcm[i: i + step])
                n_before = len(live.latency)
                # poll for its publication without touching the clock (a bench-side thread would
                # do the same): the worker appends to live.latency when the plan is swapped in
                while len(live.latency) == n_before and time.perf_counter() < due + args.chunk_ms / 1000:
                    time.sleep(0.0005)
                if len(live.latency) > n_before:
                    published.append((time.perf_counter(), k))
            live.close()
            live.wait(10)
            while line.t < live.duration and time.perf_counter() - t0 < sp.duration + 5:
                time.sleep(0.01)
            time.sleep(0.3)
            audio_s += sp.duration
            cost.append(live.analysis_s / sp.duration)
            # chunk -> first frame on the wire after its plan
            rec = received[r0:]
            times = np.array([r[0] for r in rec])
            for (tp, k) in published:
                j = np.searchsorted(times, tp)
                if j < len(times):
                    lat.append((times[j] - arrivals[k]) * 1000)
            done.append((sp, mode, live.plan, times - live._t0, np.array([r[1] for r in rec])))
    late = np.array(clock.stats.late_ms[stream_start:])
    streaming = {"frames": len(late), "missed": clock.stats.missed - m_start,
                 "late_ms_p50": float(np.percentile(late, 50)), "late_ms_p99": float(np.percentile(late, 99)),
                 "late_ms_max": float(late.max())}
    clock.stop()
    stop.set()
    avatar.close()
    # sync, after the clock has stopped: streamed JawOpen (as received) vs the whole clip's mouth
    sync_by = {"text": [], "audio": []}
    for sp, mode, ref, ta, got in done:
        grid = np.arange(0, sp.duration, 0.002)
        g = np.interp(grid, ta, got)
        want = np.array([ref.apply_at(float(tt), np.zeros(C.COUNT, np.float32))[C.INDEX["JawOpen"]] for tt in grid])
        shifts = np.arange(-100, 101, 2)
        errs = [np.mean((np.interp(grid, grid + s / 1000, g) - want) ** 2) for s in shifts]
        sync.append(-float(shifts[int(np.argmin(errs))]))  # g needs shifting back by its lag
        sync_by[mode].append(sync[-1])
    result = {
        "lines": 2 * min(args.lines, len(LINES)), "chunk_ms": args.chunk_ms, "lookahead_s": args.lookahead,
        "audio_s": audio_s,
        "chunk_to_first_frame_ms": {"n": len(lat), "median": float(np.median(lat)),
                                    "p95": float(np.percentile(lat, 95)), "max": float(np.max(lat))},
        "sync_lag_ms": {"median": float(np.median(sync)), "min": float(np.min(sync)), "max": float(np.max(sync)),
                        "by_mode": sync_by},
        "analysis_s_per_audio_s": {"median": float(np.median(cost)), "max": float(np.max(cost))},
        "pacing_idle": baseline, "pacing_streaming": streaming,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
