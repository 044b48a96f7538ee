"""Live Link Face CSV takes: the format Blender, MotionBuilder and Unreal import.

Pure row formatting and parsing, a reader that handles real exports (columns by name, times from
the timecode, tracking-loss rows as gaps, values clamped), and a sink that writes on its own thread
so a slow disk never reaches the frame clock. Every row is flushed as written, so a take stopped
by Ctrl-C or SIGTERM is complete and readable up to its last frame.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import channels
from runtime.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

HEADER = "Timecode,BlendShapeCount," + ",".join(channels.NAMES)


def timecode(t: float, fps: float = 60.0) -> str:
    """Seconds (of the day) -> ``HH:MM:SS:FF.fff`` with FF counting frames at ``fps``."""
    whole = int(t)
    frames = (t - whole) * fps
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    ff = int(frames + 1e-6)
    frac = max(frames - ff, 0.0)
    return f"{h % 24:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(frac * 1000 + 1e-6):03d}"


def parse_timecode(tc: str, fps: float = 60.0) -> float:
    h, m, s, f = tc.strip().split(":")
    return int(h) * 3600 + int(m) * 60 + int(s) + float(f) / fps


def format_row(values: np.ndarray, t: float, fps: float = 60.0) -> str:
    return f"{timecode(t, fps)},{channels.COUNT}," + ",".join(f"{v:.10f}" for v in values.tolist())


@dataclass
class Take:
    times: np.ndarray  # float64[n] seconds from the first row
    values: np.ndarray  # float32[n, 61] canonical order, clamped; NaN rows are tracking losses
    start: float  # timecode of the first row, seconds of the day

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.values).any(axis=1)


class TakeError(ValueError):
    pass


def read_take(path: str | Path, fps: float = 60.0) -> Take:
    """Read a Live Link Face CSV export (or our own)."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or not lines[0].startswith("Timecode"):
        raise TakeError(f"{path}: not a Live Link Face CSV (no 'Timecode' header)")
    header = [h.strip() for h in lines[0].split(",")]
    cols: list[tuple[int, int]] = []  # (csv column, channel index)
    for c, name in enumerate(header[2:], start=2):
        try:
            cols.append((c, channels.lookup(name)))
        except KeyError:
            log.warning("%s: ignoring unknown column %r", path, name)
    src = np.array([c for c, _ in cols], dtype=np.intp)
    dst = np.array([i for _, i in cols], dtype=np.intp)
    times: list[float] = []
    rows: list[np.ndarray] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            t = parse_timecode(fields[0], fps)
        except ValueError:
            raise TakeError(f"{path}:{n}: bad timecode {fields[0]!r}") from None
        row = np.full(channels.COUNT, np.nan, dtype=np.float32)
        count = fields[1].strip() if len(fields) > 1 else "0"
        if count not in ("", "0") and len(fields) >= len(header):
            try:
                raw = np.array([float(fields[c]) if fields[c].strip() else np.nan for c in src],
                               dtype=np.float32)
            except ValueError:
                raise TakeError(f"{path}:{n}: a value is not a number") from None
            row[:] = 0.0
            row[dst] = raw
            if np.isnan(row).any():
                row[:] = np.nan
        times.append(t)
        rows.append(row)
    if not rows:
        raise TakeError(f"{path}: no rows")
    t = np.array(times)
    if (np.diff(t) < 0).any():  # a take that crosses midnight
        t = np.where(t < t[0], t + 86400.0, t)
    values = np.stack(rows)
    ok = ~np.isnan(values).any(axis=1)
    values[ok] = channels.clamp(values[ok])
    return Take(times=t - t[0], values=values, start=float(t[0]))


class CsvSink(Sink):
    """Writes a take on its own thread; a full queue drops (and counts) frames, never waits."""

    scheme = "csv"

    def __init__(self, path: str, fps: float, queue_size: int = 600) -> None:
        super().__init__()
        self.path = Path(path)
        self.fps = fps
        try:
            self.file = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise SinkError(f"csv:{path}: {e.strerror}") from None
        self.file.write(HEADER + "\n")
        self.file.flush()
        self.q: queue.Queue = queue.Queue(queue_size)
        self.thread = threading.Thread(target=self._run, name=f"csv:{path}", daemon=True)
        self.thread.start()

    @property
    def label(self) -> str:
        return f"csv:{self.path}"

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        try:
            self.q.put_nowait((frame.copy(), t))
            self.sent += 1
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                break
            frame, t = item
            self.file.write(format_row(frame, t, self.fps) + "\n")
            if self.q.empty():
                self.file.flush()
        self.file.flush()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=5)
        self.file.close()


def write_take(path: str | Path, frames: np.ndarray, fps: float = 60.0, start: float = 0.0) -> None:
    """Offline: a whole take at once (``keyframeface render``)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(HEADER + "\n")
        for i, frame in enumerate(frames):
            f.write(format_row(frame, start + i / fps, fps) + "\n")
