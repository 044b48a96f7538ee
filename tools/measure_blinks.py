"""Measure blinks in real ARKit recordings: how often, how long, how deep, how fast they close and open.

    python tools/measure_blinks.py [--recordings DIR] [--take NAME ...] [--json]

The numbers feed the defaults of :mod:`runtime.animate.idle`. A blink is a peak of the mean of
EyeBlinkLeft/Right that stands at least ``--prominence`` above the lowest value in the 0.4 s on
either side and is back down within ``--max-duration``: longer closures (a laugh, a deliberate
squeeze in the range-of-motion takes) are not blinks. Times come from the timecodes, tracking-loss
rows split a take into runs, and an interval is only counted between two blinks of the same run.
By default the range-of-motion takes are left out: their eye closures are posed, not natural.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import channels  # noqa: E402
from runtime.sinks.csv import read_take  # noqa: E402

DEFAULT_RECORDINGS = ROOT.parent / "shared" / "data" / "recordings"
NATURAL = ("S07-001", "S88-001", "apfel")
WINDOW = 0.4  # seconds either side of a peak in which its base is looked for


def runs(times: np.ndarray, values: np.ndarray, max_step: float = 0.1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a take at tracking losses and at time gaps: (times, blink signal) per continuous run."""
    blink = 0.5 * (values[:, channels.INDEX["EyeBlinkLeft"]] + values[:, channels.INDEX["EyeBlinkRight"]])
    ok = ~np.isnan(blink)
    cut = np.flatnonzero(~ok | np.r_[False, np.diff(times) > max_step])
    out = []
    for a, b in zip(np.r_[0, cut + 1], np.r_[cut, len(blink)], strict=True):
        seg = np.arange(a, b)
        seg = seg[ok[seg]]
        if len(seg) > 10:
            out.append((times[seg], blink[seg]))
    return out


def _cross(t: np.ndarray, y: np.ndarray, i: int, level: float, step: int) -> float:
    """Time where y crosses ``level`` walking from peak i in direction step (linear between samples)."""
    j = i
    while 0 <= j + step < len(y) and y[j + step] > level:
        j += step
    k = j + step
    if not 0 <= k < len(y):
        return float(t[j])
    f = (y[j] - level) / max(y[j] - y[k], 1e-9)
    return float(t[j] + f * (t[k] - t[j]))


def blinks(t: np.ndarray, y: np.ndarray, prominence: float, max_duration: float) -> list[dict]:
    """Blinks of one run: peak time, depth, closing/opening time (10%->peak->10%), width at half depth."""
    dt = float(np.median(np.diff(t)))
    w = max(1, int(round(WINDOW / dt)))
    peaks = np.flatnonzero((y[1:-1] >= y[:-2]) & (y[1:-1] > y[2:])) + 1
    found: list[dict] = []
    for i in peaks:
        left = y[max(0, i - w):i + 1].min()
        right = y[i:i + w + 1].min()
        base = max(left, right)
        prom = y[i] - base
        if prom < prominence:
            continue
        lo, half = base + 0.1 * prom, base + 0.5 * prom
        start, end = _cross(t, y, i, lo, -1), _cross(t, y, i, lo, 1)
        if end - start > max_duration:
            continue
        b = {"t": float(t[i]), "depth": float(prom), "peak": float(y[i]), "close": float(t[i] - start),
             "open": float(end - t[i]), "duration": float(end - start),
             "fwhm": _cross(t, y, i, half, 1) - _cross(t, y, i, half, -1)}
        if found and b["t"] - found[-1]["t"] < 0.15:  # one blink seen as two peaks: keep the deeper
            if b["depth"] > found[-1]["depth"]:
                found[-1] = b
            continue
        found.append(b)
    return found


def measure(paths: list[Path], prominence: float = 0.25, max_duration: float = 0.6) -> dict:
    all_blinks: list[dict] = []
    intervals: list[float] = []
    seconds = 0.0
    per_take = {}
    for p in paths:
        take = read_take(p)
        n = 0
        for t, y in runs(take.times, take.values):
            seconds += float(t[-1] - t[0])
            bl = blinks(t, y, prominence, max_duration)
            n += len(bl)
            all_blinks += bl
            intervals += np.diff([b["t"] for b in bl]).tolist()
        per_take[p.stem] = n
    iv = np.asarray(intervals)
    stats = {"takes": per_take, "seconds": round(seconds, 1), "blinks": len(all_blinks),
             "per_minute": round(60 * len(all_blinks) / max(seconds, 1e-9), 1)}

    def summary(x: np.ndarray) -> dict:
        if not len(x):
            return {}
        return {"median": round(float(np.median(x)), 3), "mean": round(float(x.mean()), 3),
                "p10": round(float(np.percentile(x, 10)), 3), "p90": round(float(np.percentile(x, 90)), 3),
                "min": round(float(x.min()), 3), "max": round(float(x.max()), 3)}

    stats["interval_s"] = summary(iv)
    if len(iv) > 1:  # log-normal fit: what idle.py samples intervals from
        stats["interval_lognormal"] = {"mu": round(float(np.log(iv).mean()), 3),
                                       "sigma": round(float(np.log(iv).std(ddof=1)), 3)}
    for key in ("duration", "close", "open", "fwhm", "depth", "peak"):
        stats[f"{key}"] = summary(np.array([b[key] for b in all_blinks]))
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, default=DEFAULT_RECORDINGS)
    ap.add_argument("--take", action="append", help=f"take name (default: {', '.join(NATURAL)})")
    ap.add_argument("--prominence", type=float, default=0.25)
    ap.add_argument("--max-duration", type=float, default=0.6)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = a.take or list(NATURAL)
    paths = [p for n in names for p in sorted(a.recordings.rglob(f"{n}.csv"))]
    if not paths:
        print(f"no takes named {names} under {a.recordings}", file=sys.stderr)
        return 2
    stats = measure(paths, a.prominence, a.max_duration)
    if a.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:18} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
