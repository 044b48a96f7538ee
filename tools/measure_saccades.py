"""Measure gaze in real ARKit recordings: how often the eyes jump, how far, how fast, how much the
two eyes disagree.

    python tools/measure_saccades.py [--recordings DIR] [--threshold 0.035] [--json]

The recordings' eye rotation columns are zero, but the EyeLook channels carry the gaze: per eye,
yaw = EyeLookOut - EyeLookIn for the left eye and EyeLookIn - EyeLookOut for the right (both > 0
looking to the face's left), pitch = EyeLookUp - EyeLookDown; the gaze is the mean of the two
eyes, in EyeLook units (the lookleft preset's 0.8 is about 27 degrees). Vergence: how far both
eyes turn in (half the median of left minus right yaw): the eyes converge on a face at talking
distance. Every take is resampled to 30 Hz in continuous runs (tools/eval_realism.py); a saccade
is a run of frames whose gaze speed exceeds ``--threshold`` units per frame, its amplitude the
gaze displacement across it; jumps while the lids are closing are left out (a closing lid reads
as a downward look). The numbers feed the defaults of :mod:`runtime.animate.gaze`. The posed
range-of-motion takes are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from eval_realism import BLINK_L, BLINK_R, PITCH_L, PITCH_R, RATE, RECORDINGS, YAW_L, YAW_R, real_takes  # noqa: E402


def gaze(run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(both eyes' mean gaze [n, 2] yaw/pitch, left minus right eye [n, 2])."""
    yl = run[:, YAW_L[0]] - run[:, YAW_L[1]]
    yr = run[:, YAW_R[0]] - run[:, YAW_R[1]]
    pl = run[:, PITCH_L[0]] - run[:, PITCH_L[1]]
    pr = run[:, PITCH_R[0]] - run[:, PITCH_R[1]]
    return np.c_[(yl + yr) / 2, (pl + pr) / 2], np.c_[yl - yr, pl - pr]


def saccades(g: np.ndarray, threshold: float, lids: np.ndarray | None = None) -> list[dict]:
    """Saccades of one run; with ``lids`` (mean EyeBlink per frame), jumps while the lids are more
    than 0.3 closed are left out: a closing lid reads as a downward look."""
    v = np.hypot(*np.diff(g, axis=0).T)
    fast = v > threshold
    if lids is not None:
        shut = np.convolve(lids > 0.3, np.ones(5), mode="same") > 0  # 2 frames either side
        fast &= ~(shut[1:] | shut[:-1])
    out = []
    i = 0
    while i < len(fast):
        if not fast[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(fast) and fast[j + 1]:
            j += 1
        d = g[j + 1] - g[i]
        out.append({"t": i / RATE, "frames": j - i + 1, "yaw": float(d[0]), "pitch": float(d[1]),
                    "amplitude": float(np.hypot(*d)), "peak_speed": float(v[i:j + 1].max())})
        i = j + 1
    return out


def _summary(x: np.ndarray) -> dict:
    if not len(x):
        return {}
    return {"median": round(float(np.median(x)), 4), "mean": round(float(x.mean()), 4),
            "p10": round(float(np.percentile(x, 10)), 4), "p90": round(float(np.percentile(x, 90)), 4)}


def measure(takes, threshold: float = 0.035) -> dict:
    events, intervals, per_person = [], [], {}
    seconds = 0.0
    pos, lr, fix_speed = [], [], []
    verge: dict[str, list[float]] = {}
    for tk in takes:
        n = 0
        for run in tk.runs:
            g, diff = gaze(run)
            seconds += len(run) / RATE
            ev = saccades(g, threshold, 0.5 * (run[:, BLINK_L] + run[:, BLINK_R]))
            n += len(ev)
            events += ev
            intervals += np.diff([e["t"] for e in ev]).tolist()
            pos.append(g - np.median(g, axis=0))
            lr.append(diff - np.median(diff, axis=0))
            verge.setdefault(tk.group, []).append(float(-0.5 * np.median(diff[:, 0])))
            v = np.hypot(*np.diff(g, axis=0).T)
            fix_speed.append(v[v <= threshold])
        per_person[tk.group] = per_person.get(tk.group, 0) + n
    iv = np.array(intervals)
    iv = iv[iv > 0]
    P = np.concatenate(pos)
    D = np.concatenate(lr)
    amp = np.array([e["amplitude"] for e in events])
    return {
        "seconds": round(seconds, 1), "saccades": len(events), "per_person": per_person,
        "per_minute": round(60 * len(events) / seconds, 1),
        "interval_s": _summary(iv),
        "interval_lognormal": {"mu": round(float(np.log(iv).mean()), 3),
                               "sigma": round(float(np.log(iv).std(ddof=1)), 3)},
        "amplitude": _summary(amp),
        "amplitude_yaw_pitch_ratio": round(float(np.median(np.abs([e["yaw"] for e in events]))
                                                 / max(np.median(np.abs([e["pitch"] for e in events])), 1e-9)), 2),
        "frames": _summary(np.array([e["frames"] for e in events], dtype=float)),
        "peak_speed": _summary(np.array([e["peak_speed"] for e in events])),
        "position_sd": {"yaw": round(float(P[:, 0].std()), 4), "pitch": round(float(P[:, 1].std()), 4)},
        "left_minus_right_sd": {"yaw": round(float(D[:, 0].std()), 4), "pitch": round(float(D[:, 1].std()), 4)},
        "fixation_speed_median": round(float(np.median(np.concatenate(fix_speed))), 5),
        # both eyes turned in (EyeLookIn each, units), mean of the people's mean of runs' medians
        "vergence": round(float(np.mean([np.mean(v) for v in verge.values()])), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, default=RECORDINGS)
    ap.add_argument("--threshold", type=float, default=0.035, help="gaze units per 30 Hz frame")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    stats = measure(real_takes(a.recordings), a.threshold)
    if a.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            print(f"{k:26} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
