"""How much more could the learned in-betweens gain by adapting to each take? A bound, leave one take out.

    .venv/bin/python tools/interpolator_headroom.py DIR [DIR ...] [--recordings DIR] [--json]

Each DIR holds leave-one-take-out models (``tools/train_interpolator.py --loo DIR``); every take is
scored by the models that never saw it, averaged over the DIRs (several seeds: a larger ensemble).
Per key rule it prints, pooled over the takes, the learned gain over the best spline (as
``eval_interpolator.py`` reports it) and two blends of the learned curve toward a spline (the
straight line or the monotone cubic), one weight per take and channel:

- **oracle**: the weight fitted by least squares on that take's own in-between frames, i.e. with
  the answer known. No per-take, per-channel choice between learned and spline can do better, so
  this bounds what adapting to a new face at that grain could buy.
- **from keys**: the weight fitted on what a runtime has, the take's keys: every other key is
  dropped, each method predicts it from the rest, and the weight that best predicts the dropped
  keys is used. This is the self-supervised version of the same choice.
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

import eval_interpolator as ev  # noqa: E402

from runtime.animate.learned import LearnedInterpolator  # noqa: E402

SPLINES = ("linear", "catmull_rom", "monotone_cubic")
TARGETS = ("linear", "monotone_cubic")  # what the learned curve is blended toward


class Averaged:
    """Several interpolators played as one: each segment is the mean of theirs."""

    def __init__(self, members: list[LearnedInterpolator]) -> None:
        self.members = members

    def segment(self, *args):
        return _AveragedSegment([m.segment(*args) for m in self.members])


class _AveragedSegment:
    def __init__(self, segs: list) -> None:
        self.segs = segs
        self.buf: np.ndarray | None = None

    def at(self, t: float, out: np.ndarray) -> None:
        if self.buf is None:
            self.buf = np.empty_like(out)
        acc = np.zeros_like(out)
        for s in self.segs:
            s.at(t, self.buf)
            acc += self.buf
        out[:] = acc / len(self.segs)


def blend_weight(true: np.ndarray, learned: np.ndarray, spline: np.ndarray) -> np.ndarray:
    """Per channel, the w in [0, 1] minimising |learned + w (spline - learned) - true|^2."""
    d = spline - learned
    den = (d ** 2).sum(0)
    w = ((true - learned) * d).sum(0) / np.maximum(den, 1e-12)
    return np.clip(np.where(den > 1e-12, w, 0.0), 0.0, 1.0)


def take_errors(path: Path, interp: Averaged, rule: str) -> dict[str, float]:
    """Summed squared error over the take's in-between frames and live channels, per method and
    blend; plus the frame-channel count ``n``."""
    runs = ev.runs_of(path)
    allv = np.concatenate([r.values for r in runs])
    live = (allv.max(axis=0) - allv.min(axis=0)) > 1e-6
    fine: dict[str, list[np.ndarray]] = {}
    coarse: dict[str, list[np.ndarray]] = {}
    for r in runs:
        t, v = r.times, r.values
        k = ev.keys_for(rule, r)
        free = np.ones(len(t), dtype=bool)
        free[k] = False
        kept = np.unique(np.r_[k[::2], k[-1]])
        dropped = np.setdiff1d(k, kept)
        fine.setdefault("true", []).append(v[free][:, live])
        if len(dropped):
            coarse.setdefault("true", []).append(v[dropped][:, live])
        for m in SPLINES + ("learned",):
            fine.setdefault(m, []).append(ev.reconstruct(m, t[k], v[k], t, interp)[free][:, live])
            if len(dropped) and m in TARGETS + ("learned",):
                coarse.setdefault(m, []).append(
                    ev.reconstruct(m, t[kept], v[kept], t[dropped], interp)[:, live])
    f = {m: np.concatenate(x) for m, x in fine.items()}
    c = {m: np.concatenate(x) for m, x in coarse.items()}
    out = {m: float(((f[m] - f["true"]) ** 2).sum()) for m in SPLINES + ("learned",)}
    out["n"] = float(f["true"].size)
    for s in TARGETS:
        from_keys = (blend_weight(c["true"], c["learned"], c[s]) if c  # no key to hold out: none
                     else np.zeros(f["true"].shape[1]))
        for name, w in (("oracle", blend_weight(f["true"], f["learned"], f[s])),
                        ("from_keys", from_keys)):
            y = f["learned"] + w * (f[s] - f["learned"])
            out[f"{name}:{s}"] = float(((y - f["true"]) ** 2).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                    help="leave-one-take-out model folder (train_interpolator.py --loo DIR)")
    ap.add_argument("--recordings", type=Path, default=ev.DEFAULT_RECORDINGS)
    ap.add_argument("--json", action="store_true", help="also print the result as JSON, last line")
    a = ap.parse_args(argv)
    paths = ev.find_takes(a.recordings)
    missing = [f"{d}/{p.stem}.onnx" for d in a.dirs for p in paths
               if not (d / f"{p.stem}.onnx").is_file()]
    if not paths or missing:
        print(f"no takes in {a.recordings}" if not paths else f"missing models: {missing}",
              file=sys.stderr)
        return 2
    result: dict[str, dict[str, float]] = {}
    for rule in ev.RULES:
        total: dict[str, float] = {}
        for p in paths:
            interp = Averaged([LearnedInterpolator(d / f"{p.stem}.onnx") for d in a.dirs])
            for key, x in take_errors(p, interp, rule).items():
                total[key] = total.get(key, 0.0) + x
            print(f"  {rule} {p.stem} done", file=sys.stderr)
        rmse = {k: float(np.sqrt(x / total["n"])) for k, x in total.items() if k != "n"}
        best = min(rmse[m] for m in SPLINES)
        result[rule] = {k: round(100.0 * (1.0 - x / best), 2) for k, x in rmse.items()
                        if k not in SPLINES}
    cols = ["learned"] + [f"{n}:{s}" for n in ("oracle", "from_keys") for s in TARGETS]
    print("| keys | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for rule, row in result.items():
        print(f"| {rule} | " + " | ".join(f"{row[c]:+.2f}%" for c in cols) + " |")
    print("(RMSE below the best spline, pooled over the takes, each scored by the models that never "
          "saw it; oracle: one blend weight per take and channel fitted on the answer; from_keys: "
          "fitted on the take's own keys, every other key held out)")
    if a.json:
        print(json.dumps({"dirs": [str(d) for d in a.dirs], "gain_vs_best_spline": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
