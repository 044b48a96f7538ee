"""Learn from real capture how the whole face takes part: channel coupling, resting tone,
micro-motion of holds, left/right gain differences. Writes runtime/animate/capture.npz.

    python tools/measure_coupling.py [--recordings DIR] [--out runtime/animate/capture.npz] [--min-r 0.5]

All from the natural takes (the posed range-of-motion takes are left out), resampled to 30 Hz in
continuous runs (tools/eval_realism.py); each take's resting face is its 5th percentile per
channel, so raw (alexdjulin) and calibrated (animavr) exports both count from their own rest.

* **coupling** ``W`` (52 x 52): ``W[j, k]`` is the regression slope of channel j's deviation from
  rest on channel k's, kept only where the two correlate by more than ``--min-r`` in *each* person
  in whom both move (a coupling both faces show, not one person's habit or one export's
  calibration). The runtime lets the strongest neighbour bring a channel along
  (:mod:`runtime.animate.coupling`). A cheek squint brings the nose and upper lip, a brow's inner
  raise its outer part, a jaw opening JawForward and the lower lip. A channel's own left/right
  partner and the EyeLook channels are left out (the asymmetry and gaze layers own those);
  JawOpen, MouthClose, EyeBlink and EyeLook are never targets (the speech, blink and gaze layers
  own them, and the lips must still meet at p/b/m). (A ridge regression on all channels at once
  was tried first: it learnt spurious links, EyeWide from MouthPress, that no face shows.)
* **tone** (52): the resting face, each take's 15th percentile per channel, mean of the two
  people's means (with it as many channels sit above 0.1 as in capture; the 5th percentile left
  a third too few).
* **micro** (3 x 52): standard deviation per channel of three bands of the motion in quiet
  windows (the calmer half of 2-second windows, without a blink in them): jitter (x minus its
  3-frame mean), tremor (3- vs 12-frame means), sway (12- vs 48-frame means), median over
  windows, mean of the two people.
* **gain_sigma**: spread of ln(std left / std right) over channel pairs that move in a take: how
  unequal the two sides of a real face move.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from eval_realism import GAZE, RECORDINGS, N, real_takes  # noqa: E402

from runtime import channels as C  # noqa: E402

OUT = ROOT / "runtime" / "animate" / "capture.npz"
TONE_PERCENTILE = 15  # a channel's resting value: above the tracker's dips, below any expression
NOT_TARGETS = {C.INDEX["JawOpen"], C.INDEX["MouthClose"], C.INDEX["EyeBlinkLeft"], C.INDEX["EyeBlinkRight"],
               *GAZE.tolist()}


def _movavg(x: np.ndarray, k: int) -> np.ndarray:
    pad = np.pad(x, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    c = np.cumsum(np.r_[np.zeros((1, x.shape[1])), pad], axis=0)
    return (c[k:] - c[:-k]) / k


def measure(takes, min_r: float = 0.5) -> dict:
    devs, tones, micro = {}, {}, {}
    logratio = []
    for tk in takes:
        rest = np.percentile(np.concatenate(tk.runs), 5, axis=0)
        tones.setdefault(tk.group, []).append(np.percentile(np.concatenate(tk.runs), TONE_PERCENTILE, axis=0))
        for run in tk.runs:
            devs.setdefault(tk.group, []).append(run - rest)
            bands = [run - _movavg(run, 3), _movavg(run, 3) - _movavg(run, 12), _movavg(run, 12) - _movavg(run, 48)]
            w = 60
            speeds, stds, blinked = [], [], []
            lid = 0.5 * (run[:, C.INDEX["EyeBlinkLeft"]] + run[:, C.INDEX["EyeBlinkRight"]])
            for a in range(0, len(run) - w + 1, 30):
                speeds.append(np.abs(np.diff(run[a:a + w], axis=0)).mean())
                stds.append([b[a:a + w].std(axis=0) for b in bands])
                blinked.append(np.ptp(lid[a:a + w]) > 0.2)  # a blink is not the wander of a hold
            if speeds:
                quiet = (np.asarray(speeds) <= np.median(speeds)) & ~np.asarray(blinked)
                micro.setdefault(tk.group, []).extend(np.asarray(stds)[quiet])
        x = np.concatenate(tk.runs)
        for a, b in C.PAIRS:
            if b < N and a not in GAZE:
                sa, sb = x[:, a].std(), x[:, b].std()
                if min(sa, sb) > 0.02:
                    logratio.append(np.log(sa / sb))
    R, B, S = {}, {}, {}
    for g, v in devs.items():
        X = np.concatenate(v)
        sd = X.std(axis=0)
        cov = np.cov(X.T)
        S[g], R[g], B[g] = sd, cov / np.outer(sd + 1e-12, sd + 1e-12), cov / (sd ** 2 + 1e-12)[None, :]
    W = np.zeros((N, N))
    for j in range(N):
        if j in NOT_TARGETS:
            continue
        for k in range(N):
            if k == j or k == C.MIRROR[j] or k in GAZE:
                continue
            both = [g for g in R if S[g][j] > 0.005 and S[g][k] > 0.005]
            if both and min(R[g][j, k] for g in both) > min_r:
                W[j, k] = np.mean([B[g][j, k] for g in both])
    tone = np.mean([np.mean(v, axis=0) for v in tones.values()], axis=0)
    mic = np.mean([np.median(np.asarray(v), axis=0) for v in micro.values()], axis=0)  # [3, 52]
    return {"W": W.astype(np.float32), "tone": np.clip(tone, 0, 1).astype(np.float32),
            "micro": mic.astype(np.float32), "gain_sigma": np.float32(np.std(logratio)),
            "pairs_measured": len(logratio)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, default=RECORDINGS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--min-r", type=float, default=0.5)
    a = ap.parse_args(argv)
    m = measure(real_takes(a.recordings), a.min_r)
    np.savez(a.out, W=m["W"], tone=m["tone"], micro=m["micro"], gain_sigma=m["gain_sigma"])
    names = C.NAMES[:N]
    top = sorted(((abs(m["W"][j, k]), names[j], names[k], float(m["W"][j, k])) for j in range(N) for k in range(N)),
                 reverse=True)[:15]
    print(json.dumps({"out": str(a.out), "gain_sigma": round(float(m["gain_sigma"]), 3),
                      "pairs_measured": m["pairs_measured"], "couplings": int((m["W"] != 0).sum()),
                      "tone_top": {names[i]: round(float(m["tone"][i]), 3) for i in np.argsort(-m["tone"])[:8]},
                      "jitter_median": round(float(np.median(m["micro"][0])), 5),
                      "tremor_median": round(float(np.median(m["micro"][1])), 5),
                      "sway_median": round(float(np.median(m["micro"][2])), 5),
                      "strongest": [f"{t} <- {s}: {w:+.2f}" for _, t, s, w in top]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
