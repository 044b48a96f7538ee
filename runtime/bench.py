"""``keyframeface bench``: the real-time budget, measured on this machine, against baselines.

Every figure comes from one run, on the embedded default model, with its baseline beside it:

* latency: text in -> first keyframe parsed (warm model) and -> first frame of the line on the wire;
* cost: tokens per keyframe (and the KeyframeFace paper's format on the same tokenizer), seconds of
  animation per second of generation;
* pacing: 60 fps to a Live Link receiver in another process, timestamped there, while the model
  generates continuously in this process;
* throughput: spline frames per second on one core (scipy's PCHIP beside it), learned in-betweens,
  and how many avatars one process drives at 60 fps;
* lines at once: 1, 2, 4 and 8 lines started together on the one model (several avatars at the
  same moment): first keyframe (median, max) and tokens per second over all lines.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import resource
import socket
import statistics
import sys
import threading
import time

import numpy as np

from runtime import channels

LINES = [
    "She laughs at the joke, then suddenly looks worried.",
    "He slams his fist on the table, furious.",
    "Tears roll down her cheeks as she reads the letter.",
    "The child gasps when the magician pulls out a rabbit.",
    "He smirks, unimpressed by the offer.",
    "She wrinkles her nose at the smell of the spoiled milk.",
    "A cold shiver runs through him as the lights go out.",
    "They grin at each other across the room.",
    "At first he is calm, but then he gets angry.",
    "She rolls her eyes and sighs.",
    "The old man smiles softly at the memory.",
    "He stares in disbelief at the lottery ticket.",
]


def _progress(i: int, n: int, what: str) -> None:
    sys.stderr.write(f"\r  {what}: {i}/{n}   ")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- generation ---------------------------------------------------------------------------------
def generation(backend, lang, lines: list[str], release: float, onset: bool = True) -> dict:
    """Latency, cost and speed per line. With ``onset`` the first keyframe is the runtime's onset of
    the feeling the model chose; ``ttfk_model_ms_median`` is the first one the model wrote itself."""
    from runtime.generate import LineRequest, stream_keyframes
    from runtime.keyframes.parser import KeyframeParser

    ttfk, ttfk_model, tpk, rtf, kcount = [], [], [], [], []
    for i, text in enumerate(lines):
        t0 = time.perf_counter()
        first = None
        keys = []
        tokens = 0
        for kf in stream_keyframes(backend, KeyframeParser(lang), LineRequest(text)):
            if first is None:
                first = time.perf_counter() - t0
            if len(keys) == int(onset):
                ttfk_model.append((time.perf_counter() - t0) * 1000)
            keys.append(kf)
            tokens += kf.tokens
        gen = time.perf_counter() - t0
        if keys:
            ttfk.append(first * 1000)
            tpk.append(tokens / len(keys))
            rtf.append((keys[-1].t + release) / gen)
            kcount.append(len(keys))
        _progress(i + 1, len(lines), "generation")
    # each line's, sorted: a line whose feeling is plain (keyframes.decide_early) starts before the
    # model has read it, the others after, so the median alone hides two groups
    return {"ttfk_ms_median": statistics.median(ttfk), "ttfk_ms_max": max(ttfk),
            "ttfk_ms_each": sorted(round(v, 1) for v in ttfk),
            "ttfk_model_ms_median": statistics.median(ttfk_model),
            "tokens_per_keyframe_median": statistics.median(tpk),
            "realtime_factor": statistics.median(rtf), "keyframes_per_line_median": statistics.median(kcount)}


def concurrency(backend, lang, counts=(1, 2, 4, 8), rounds: int = 3) -> dict:
    """Lines started together (as from that many avatars at the same moment), ``rounds`` times each:
    median and max text -> first keyframe over every line, and tokens per second over all of them
    (every line's tokens / the time until the last one ended). The 1-line figure is the baseline
    of the same run: compare against it, not against another day's."""
    from runtime.generate import LineRequest, stream_keyframes
    from runtime.keyframes.parser import KeyframeParser

    out = {}
    for n in counts:
        firsts: list[float] = []
        tokens = 0
        seconds = 0.0
        for r in range(rounds):
            texts = [LINES[(r * n + i) % len(LINES)] for i in range(n)]
            start = threading.Barrier(n + 1)
            got: list[tuple[float | None, int]] = [(None, 0)] * n

            def line(i: int, text: str, start=start, got=got) -> None:
                start.wait()
                t0 = time.perf_counter()
                first, count = None, 0
                for kf in stream_keyframes(backend, KeyframeParser(lang), LineRequest(text)):
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
                    count += kf.tokens
                got[i] = (first, count)

            threads = [threading.Thread(target=line, args=(i, t), daemon=True) for i, t in enumerate(texts)]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            seconds += time.perf_counter() - t0
            firsts += [f for f, _ in got if f is not None]
            tokens += sum(c for _, c in got)
        out[f"concurrent_{n}"] = {"first_keyframe_ms_median": round(statistics.median(firsts), 1) if firsts else None,
                                  "first_keyframe_ms_max": round(max(firsts), 1) if firsts else None,
                                  "tokens_per_s": round(tokens / seconds, 1), "lines": n * rounds,
                                  "lines_with_keyframes": len(firsts)}
        _progress(len(out), len(counts), "lines at once")
    return out


def paper_format_tokens(backend, lang, lines: list[str], model: str) -> float:
    """Tokens the KeyframeFace paper's format needs for the same keyframes on the same tokenizer:
    one JSON object with all 61 named values per keyframe."""
    from llama_cpp import Llama

    from runtime.generate import LineRequest, stream_keyframes
    from runtime.generate.models import resolve
    from runtime.keyframes.parser import KeyframeParser

    vocab = Llama(model_path=str(resolve(model)), vocab_only=True, verbose=False)
    counts = []
    for text in lines[:3]:
        for kf in stream_keyframes(backend, KeyframeParser(lang), LineRequest(text)):
            obj = {"time": round(kf.t, 2), **{n: round(float(v), 2) for n, v in zip(channels.NAMES, kf.values)}}
            counts.append(len(vocab.tokenize(json.dumps(obj).encode(), add_bos=False)))
    return float(statistics.median(counts))


# -- pacing at a receiver in another process ----------------------------------------------------
# Linux's SO_TIMESTAMPNS (Python does not name it): the kernel stamps each datagram as it reaches
# the socket. On loopback that is inside the sender's sendto, so these intervals are the runtime's
# own pacing; the receiver's wake-up (a busy 2-core box delays it) adds to the user-space ones only.
SO_TIMESTAMPNS = 35


def _receiver(port: int, seconds: float, conn) -> None:
    from runtime.sinks.livelink import decode_packet

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.5)
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # no stamps: the kernel figures are left out
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    conn.send("ready")
    arrivals, kernel, frames = [], [], []
    end = time.perf_counter() + seconds + 5
    while time.perf_counter() < end:
        try:
            data, anc, _, _ = sock.recvmsg(2048, 64)
        except TimeoutError:
            if arrivals:
                break
            continue
        arrivals.append(time.perf_counter())
        for level, kind, raw in anc:  # struct timespec: seconds, nanoseconds
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, ns = (int.from_bytes(raw[i:i + 8], sys.byteorder) for i in (0, 8))
                kernel.append(sec + ns * 1e-9)
        frames.append(decode_packet(data).frame_number)
    conn.send((arrivals, kernel if len(kernel) == len(arrivals) else [], frames))


def pacing(backend, lang, cfg, seconds: float) -> dict:
    from runtime import assemble
    from runtime.avatar import Avatar
    from runtime.generate import LineRequest
    from runtime.sinks.livelink import LiveLinkSink

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(port, seconds, child), daemon=True)
    proc.start()
    parent.recv()
    fps = cfg.animation.fps
    sink = LiveLinkSink("127.0.0.1", port, device_id=cfg.livelink.device_id, subject="bench", fps=fps)
    fanout = assemble.fanout(cfg, [sink])  # and the clock below: paced as say and serve are
    avatar = Avatar("bench", backend, lang, fanout, fps=fps, attack=cfg.animation.attack,
                    release=cfg.animation.release, max_lines=4, lead=cfg.animation.lead_ms / 1000)
    stop = threading.Event()

    def feed() -> None:  # keep the model generating the whole time
        i = 0
        while not stop.is_set():
            try:
                avatar.say(LineRequest(LINES[i % len(LINES)]))
                i += 1
            except Exception:
                time.sleep(0.05)

    total = int(seconds * fps)
    clock = assemble.frame_clock(cfg, lambda n, t: avatar.tick(n, t) is not None and n + 1 < total, [fanout])
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    clock.start()
    clock.join()
    stop.set()
    sink.close()
    arrivals, kernel, frames = parent.recv()
    proc.join(2)
    avatar.close()
    period = 1000.0 / fps
    intervals = np.diff(np.array(arrivals)) * 1000.0
    dev = np.abs(intervals - period)
    # a missing or late frame shows as a gap in frame numbers or an interval of 2+ periods
    missed = int(total - len(arrivals)) + int((intervals > 1.5 * period).sum())
    lines_done = len(avatar.finished)
    # where the jitter comes from: the clock waking late (sender), the datagram leaving late
    # (kernel stamp), or the receiver waking late (the user-space figure above minus the kernel one)
    split = {"clock_late_ms_p99": clock.stats.summary()["late_ms_p99"]}
    if kernel:
        kdev = np.abs(np.diff(np.array(kernel)) * 1000.0 - period)
        split["frame_interval_p99_dev_ms_kernel"] = float(np.percentile(kdev, 99))
        split["frame_interval_max_dev_ms_kernel"] = float(kdev.max())
    return {"frame_interval_p99_dev_ms": float(np.percentile(dev, 99)),
            "frame_interval_p50_dev_ms": float(np.percentile(dev, 50)),
            "frame_interval_max_dev_ms": float(dev.max()), "missed_frames": max(missed, 0),
            "frames_received": len(arrivals), "pacing_seconds": seconds,
            "lines_generated_during_pacing": lines_done,
            "clock_missed_deadlines": clock.stats.missed,
            "frame_numbers_rising": bool((np.diff(frames) > 0).all())} | split


# -- throughput ---------------------------------------------------------------------------------
def spline_throughput(frames: int = 200_000) -> dict:
    from runtime.animate.spline import monotone_cubic, warm_up

    warm_up()
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.2, 0.8, 400))
    values = rng.uniform(0, 1, (400, channels.COUNT))
    q = np.linspace(times[0], times[-1], frames)
    t0 = time.perf_counter()
    monotone_cubic(times, values, q)
    ours = frames / (time.perf_counter() - t0)
    out = {"spline_frames_per_s": ours}
    try:
        from scipy.interpolate import PchipInterpolator

        t0 = time.perf_counter()
        PchipInterpolator(times, values, axis=0)(q)
        out["scipy_pchip_frames_per_s"] = frames / (time.perf_counter() - t0)
        out["spline_vs_scipy"] = ours / out["scipy_pchip_frames_per_s"]
    except ImportError:
        out["scipy_pchip_frames_per_s"] = None
    # the streaming path: one Track, frame by frame, as the clock plays it
    from runtime.animate.timeline import Track

    track = Track(values[0])
    for t, v in zip(times[1:] - times[0], values[1:]):
        track.add(t, v)
    track.finish()
    buf = np.zeros(channels.COUNT, dtype=np.float32)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        track.advance(1 / 60, buf)
    out["streaming_track_frames_per_s"] = n / (time.perf_counter() - t0)
    return out


def interp_throughput(cfg) -> dict:
    """Learned in-betweens through the streaming Track, frame by frame (the runtime's real path)."""
    from runtime import assemble
    from runtime.animate.timeline import Track

    cfg.animation.interpolator = "learned"
    interp = assemble.interpolator(cfg)
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.3, 0.8, 300))
    values = rng.uniform(0, 1, (300, channels.COUNT)).astype(np.float32)
    values[:, channels.SHAPES:] = 0
    track = Track(values[0], interp)
    for t, v in zip(times[1:] - times[0], values[1:]):
        track.add(t, v)
    track.finish()
    buf = np.zeros(channels.COUNT, dtype=np.float32)
    n = int((times[-1] - times[0]) * 60) - 1
    t0 = time.perf_counter()
    for _ in range(n):
        track.advance(1 / 60, buf)
    fps = n / (time.perf_counter() - t0)
    return {"interp_frames_per_s": fps, "interpolator": getattr(interp, "name", type(interp).__name__)}


def max_avatars(cfg, candidates=(50, 100, 200, 400, 800, 1000, 1500)) -> dict:
    """Most avatars one process drives at 60 fps: each frame every avatar is interpolated (one array
    op for all of them), encoded as Live Link and sent to its own UDP port."""
    from runtime.animate.crowd import Crowd

    best, table = 0, {}
    for n in candidates:
        crowd = Crowd(n, fps=cfg.animation.fps)
        p99 = crowd.run(seconds=3.0)
        crowd.close()
        table[n] = round(p99, 3)
        _progress(len(table), len(candidates), "avatars")
        if p99 <= 2.0:
            best = n
        else:
            break
    return {"max_avatars_60fps": best, "avatars_p99_dev_ms": table}


def run(cfg, *, pacing_seconds: float = 20.0, lines: int = 12, concurrent=(1, 2, 4, 8),
        only_concurrency: bool = False) -> dict:
    from runtime import assemble

    t0 = time.perf_counter()
    lang = assemble.language(cfg)
    backend = assemble.backend(cfg, lang)
    cold = time.perf_counter() - t0
    result: dict = {"machine": {"nproc": os.cpu_count(), "cpu": _cpu_model()},
                    "model": cfg.model.name, "cold_start_s": cold}
    texts = (LINES * ((lines // len(LINES)) + 1))[:lines]
    # one warm-up line, not counted
    from runtime.generate import LineRequest

    list(backend.stream(LineRequest("Hello.")))
    if concurrent:
        result.update(concurrency(backend, lang, concurrent))
    if only_concurrency:
        if hasattr(backend, "close"):
            backend.close()
        return result
    result["onset"] = cfg.keyframes.onset
    result.update(generation(backend, lang, texts, cfg.animation.release, cfg.keyframes.onset))
    result["paper_format_tokens_per_keyframe"] = paper_format_tokens(backend, lang, texts, cfg.model.name)
    result["ttff_ms_median"] = ttff(backend, lang, cfg, texts[:10])
    result.update(pacing(backend, lang, cfg, pacing_seconds))
    result.update(spline_throughput())
    try:
        result.update(interp_throughput(cfg))
    except Exception as e:  # the learned model is optional
        result["interp_frames_per_s"] = None
        result["interp_error"] = str(e)
    try:
        result.update(max_avatars(cfg))
    except ImportError:
        result["max_avatars_60fps"] = None
    result["rss_mb"] = rss_mb()
    return result


def ttff(backend, lang, cfg, texts: list[str]) -> float:
    """Text in -> first frame of that line handed to the socket, with a running clock."""
    from runtime.avatar import Avatar
    from runtime.clock import FrameClock
    from runtime.generate import LineRequest
    from runtime.sinks.fanout import Fanout
    from runtime.sinks.livelink import LiveLinkSink

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        sink = LiveLinkSink("127.0.0.1", port, device_id=cfg.livelink.device_id, subject="bench",
                            fps=cfg.animation.fps)
        avatar = Avatar("ttff", backend, lang, Fanout([sink]), fps=cfg.animation.fps)
        clock = FrameClock(cfg.animation.fps, avatar.tick).start()
        out = []
        for i, text in enumerate(texts):
            line = avatar.say(LineRequest(text))
            while not avatar.idle:
                time.sleep(0.01)
            if line.first_frame_at:
                out.append((line.first_frame_at - line.submitted) * 1000)
            _progress(i + 1, len(texts), "first frame")
        clock.stop()
        avatar.close()
        sink.close()
    return statistics.median(out)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


TARGETS = {  # (target, goal, higher is better)
    "ttfk_ms_median": (300, 150, False), "ttff_ms_median": (350, None, False),
    "tokens_per_keyframe_median": (8, 5, False), "realtime_factor": (2, 4, True),
    "frame_interval_p99_dev_ms": (1.0, 0.5, False), "missed_frames": (0, 0, False),
    "max_avatars_60fps": (100, 1000, True),
}


def table(result: dict) -> str:
    rows = ["| figure | value | target | goal |", "|---|---|---|---|"]
    for k, v in result.items():
        if isinstance(v, dict):
            v = json.dumps(v)
        elif isinstance(v, float):
            v = f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        tgt = TARGETS.get(k)
        rows.append(f"| {k} | {v} | {tgt[0] if tgt else ''} | {tgt[1] if tgt and tgt[1] is not None else ''} |")
    return "\n".join(rows)
