"""Audio through ``keyframeface serve``: WebSocket chunk in -> mouth frame on the WebSocket out.

    .venv/bin/python tools/bench_serve_audio.py [--lines 6] [--chunk-ms 40] [--no-model] [--json out.json]

A real Server on loopback (two avatars; the default model unless ``--no-model``) and two real
WebSocket clients: one streams espeak-ng lines to avatar ``a`` as binary PCM chunks at real time
(``start`` sent with the first chunk: playback begins as it arrives, the hardest case), the other
reads the binary frames of both avatars on its own thread. Measured, per line and over all lines:

* onset latency: the arrival of the chunk holding a line's first speech (after 0.5 s of silence)
  -> the first frame to arrive with ``JawOpen`` over 0.1: chunk in -> its first frame on the wire,
  including the recogniser deciding that it is speech;
* sync: the shift that best lines up the received ``JawOpen`` (on the audio clock) with the same
  line's final mouth rendered offline (``LiveSpeech.plan``: all the audio known) (ms; positive =
  the streamed mouth lags the sound);
* pacing: gaps between frames of the *other* avatar ``b`` (p50 / p99 / max, ms) while ``a`` streams,
  and frames it lost (sequence gaps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_audio import LINES  # noqa: E402  (the same lines; tools/ is this script's folder)

from runtime import channels as C  # noqa: E402
from runtime import protocol as proto  # noqa: E402
from runtime.generate import Silent  # noqa: E402

JAW = C.INDEX["JawOpen"]
LEAD = 0.5  # seconds of silence before each line's speech


def espeak(text: str) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
    i = wav.index(b"data")
    rate = int.from_bytes(wav[24:28], "little")
    return np.frombuffer(wav[i + 8:], "<i2").astype(np.float32) / 32768.0, rate


class Reader:
    """Reads binary frames of every avatar on its own thread: (avatar, seq, arrival, JawOpen)."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, open_timeout=10, close_timeout=1)
        self.ws.recv(timeout=10)  # hello
        self.ws.send(json.dumps({"type": "subscribe", "frames": "binary", "avatar": "*"}))
        self.rows: list[tuple[str, int, float, float]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                data = self.ws.recv()
                if isinstance(data, bytes):
                    name, seq, _, v = proto.decode_frame_binary(data)
                    self.rows.append((name, seq, time.perf_counter(), float(v[JAW])))
        except Exception:
            return

    def close(self) -> None:
        self.ws.close()
        self.thread.join(2)


def best_shift(live: np.ndarray, ref: np.ndarray, max_frames: int = 12) -> int:
    """Frames to shift ``live`` so it matches ``ref`` best (positive: live lags)."""
    best, arg = -np.inf, 0
    for k in range(-max_frames, max_frames + 1):
        a = live[max(k, 0): len(live) + min(k, 0)]
        b = ref[max(-k, 0): len(ref) + min(-k, 0)]
        n = min(len(a), len(b))
        if n < 30 or a[:n].std() == 0 or b[:n].std() == 0:
            continue
        r = np.corrcoef(a[:n], b[:n])[0, 1]
        if r > best:
            best, arg = r, k
    return arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=6)
    ap.add_argument("--chunk-ms", type=float, default=40.0)
    ap.add_argument("--no-model", action="store_true", help="no keyframe model (the mouth over rest)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from websockets.sync.client import connect

    from runtime import assemble
    from runtime.config import AvatarConfig, IdleConfig, load
    from runtime.serve import Server

    root = Path(__file__).resolve().parents[1]
    cfg = load(root / "config.toml")
    cfg = dataclasses.replace(cfg, sinks=[], avatars=[AvatarConfig("a"), AvatarConfig("b")],
                              idle=IdleConfig(seed=1), serve=dataclasses.replace(cfg.serve, port=0, say_burst=50))
    lang = assemble.language(cfg)
    backend = Silent() if args.no_model else assemble.backend(cfg, lang)
    srv = Server(cfg, backend, lang).start()
    url = f"ws://127.0.0.1:{srv.port}/ws"
    reader = Reader(url)
    ctl = connect(url, open_timeout=10, close_timeout=1)
    ctl.recv(timeout=10)
    out: dict = {"lines": [], "chunk_ms": args.chunk_ms, "model": not args.no_model}
    b_rows_from = len(reader.rows)
    t_all = time.perf_counter()
    try:
        for k, text in enumerate((LINES * 4)[: args.lines]):
            x, rate = espeak(text)
            onset = LEAD + np.argmax(np.abs(x) > 0.02) / rate  # audio time of the first speech
            x = np.concatenate([np.zeros(int(LEAD * rate), np.float32), x, np.zeros(int(0.3 * rate), np.float32)])
            pcm = (x * 32767).astype("<i2").tobytes()
            line = f"bench-{k}"
            ctl.send(json.dumps({"type": "say", "id": line, "avatar": "a", "text": text,
                                 "audio": {"format": "pcm", "rate": rate}}))
            step = int(args.chunk_ms / 1000 * rate) * 2
            voice = None
            t0 = time.perf_counter()
            ctl.send(json.dumps({"type": "start", "id": line}))
            sent: list[tuple[float, float]] = []  # (arrival-ish send time, audio time at the chunk's end)
            for j, a in enumerate(range(0, len(pcm), step)):
                ctl.send(proto.audio_chunk(line, pcm[a:a + step]))
                sent.append((time.perf_counter(), (a + step) / 2 / rate))
                if voice is None:
                    voice = srv._voices.get(("a", line))
                left = t0 + (j + 1) * args.chunk_ms / 1000 - time.perf_counter()
                if left > 0:
                    time.sleep(left)
            ctl.send(json.dumps({"type": "audio_end", "id": line}))
            while True:  # until this line's done
                msg = json.loads(ctl.recv(timeout=120))
                if msg.get("type") == "done" and msg.get("id") == line:
                    break
            chunk_in = next(t for t, end in sent if end >= onset)
            rows = [(t, j) for name, _, t, j in list(reader.rows) if name == "a" and t >= t0]
            opened = next((t for t, j in rows if t >= chunk_in and j > 0.1), None)
            rec = {"text": text, "seconds": len(x) / rate,
                   "onset_latency_ms": None if opened is None else 1000 * (opened - chunk_in)}
            if voice is not None and voice.live.done:
                fin = voice.live.plan
                ts = np.array([t - t0 for t, _ in rows])
                live_jaw = np.array([j for _, j in rows])
                grid = np.arange(0, len(x) / rate, 1 / 60)
                live_g = np.interp(grid, ts, live_jaw)
                ref = np.nan_to_num(fin.render(60, len(grid))[:, JAW])
                rec["sync_ms"] = 1000 * best_shift(live_g, ref) / 60
                rec["method"] = voice.live.track.method
            out["lines"].append(rec)
            print(f"{k}: onset latency {rec['onset_latency_ms']:.0f} ms, sync {rec.get('sync_ms', float('nan')):+.0f} "
                  f"ms, {rec['seconds']:.1f} s  {text!r}", flush=True)
            time.sleep(0.3)
    finally:
        seconds = time.perf_counter() - t_all
        b = [(seq, t) for name, seq, t, _ in reader.rows[b_rows_from:] if name == "b"]
        ctl.close()
        reader.close()
        srv.close()
    seqs, ts = np.array([s for s, _ in b]), np.array([t for _, t in b])
    gaps = np.diff(ts) * 1000
    lat = [r["onset_latency_ms"] for r in out["lines"] if r["onset_latency_ms"] is not None]
    sync = [r["sync_ms"] for r in out["lines"] if "sync_ms" in r]
    out["summary"] = {
        "onset_latency_ms_median": float(np.median(lat)) if lat else None,
        "onset_latency_ms_max": float(np.max(lat)) if lat else None,
        "sync_ms_median": float(np.median(sync)) if sync else None,
        "other_avatar_gap_ms_p50_p99_max": [float(np.percentile(gaps, 50)), float(np.percentile(gaps, 99)),
                                            float(gaps.max())],
        "other_avatar_frames_lost": int(np.sum(np.diff(seqs) - 1)),
        "other_avatar_frames": int(len(seqs)), "seconds": seconds}
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
