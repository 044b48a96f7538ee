"""How far could a blend of the three candidate splines go, with the answer known? (issue 19)

    .venv/bin/python tools/spline_blend_headroom.py [--recordings DIR] [--json]

For every take and both key rules of ``tools/eval_interpolator.py`` it rebuilds the in-between
frames with the straight line, the monotone cubic and Catmull-Rom, and then with the best affine
blend ``line + a (cubic - line) + b (catmull_rom - line)`` fitted by least squares on the frames
themselves (the answer known) at three grains: one pair of weights per person and rule
(``global``), per segment shared by every channel (``segment``), per segment and channel
(``segment_channel``). Pooled per person, as RMSE and as the gain over the best spline (the
figure the learned interpolator is judged by). A model that predicts the blend from the keys can
at most reach the grain it predicts at; ``global`` is what a fixed blend would give.
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

from runtime.animate.spline import monotone_cubic  # noqa: E402

CURVES = ("linear", "monotone_cubic", "catmull_rom")
GRAINS = ("global", "segment", "segment_channel")


def take_frames(path: Path, rule: str) -> list[tuple[np.ndarray, ...]]:
    """Per run: line, cubic, Catmull-Rom and the truth on the in-between frames and live
    channels, and each frame's segment index."""
    runs = ev.runs_of(path)
    allv = np.concatenate([r.values for r in runs])
    live = (allv.max(0) - allv.min(0)) > 1e-6
    out = []
    for r in runs:
        t, v = r.times, r.values
        k = ev.keys_for(rule, r)
        free = np.ones(len(t), bool)
        free[k] = False
        curves = [ev.linear(t[k], v[k], t), monotone_cubic(t[k], v[k], t).astype(np.float64),
                  ev.catmull_rom(t[k], v[k], t)]
        seg = np.clip(np.searchsorted(k, np.arange(len(t))) - 1, 0, len(k) - 2)
        out.append(tuple(c[free][:, live] for c in curves) + (v[free][:, live], seg[free]))
    return out


def _fit(a: np.ndarray, b: np.ndarray, d: np.ndarray, axis: int | None) -> np.ndarray:
    """Residual of d ~ wa * a + wb * b, least squares over ``axis`` (None: all at once), the
    2x2 normal equations solved in closed form (one weight only where they are singular)."""
    aa, bb, ab = (a * a).sum(axis), (b * b).sum(axis), (a * b).sum(axis)
    ad, bd = (a * d).sum(axis), (b * d).sum(axis)
    det = aa * bb - ab * ab
    ok = det > 1e-12 * np.maximum(aa * bb, 1e-30)
    safe = np.where(ok, det, 1.0)
    wa = np.where(ok, (bb * ad - ab * bd) / safe, ad / np.maximum(aa, 1e-30) * (aa > 1e-30))
    wb = np.where(ok, (aa * bd - ab * ad) / safe, 0.0)
    return d - wa * a - wb * b


def headroom(paths: list[Path]) -> dict:
    """{person: {rule: {name: rmse}}}: the three curves, then the blend at each grain."""
    sums: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for rule in ev.RULES:
        glob: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for p in paths:
            who = ev.person_of(p)
            s = sums.setdefault(who, {}).setdefault(rule, dict.fromkeys(CURVES + GRAINS, 0.0))
            for line, cubic, cr, y, seg in take_frames(p, rule):
                counts.setdefault(who, {}).setdefault(rule, 0)
                counts[who][rule] += y.size
                for name, c in zip(CURVES, (line, cubic, cr)):
                    s[name] += float(((c - y) ** 2).sum())
                a, b, d = cubic - line, cr - line, y - line
                glob.setdefault(who, []).append((a.ravel(), b.ravel(), d.ravel()))
                for j in np.unique(seg):
                    i = seg == j
                    s["segment"] += float((_fit(a[i].ravel(), b[i].ravel(), d[i].ravel(), None)
                                           ** 2).sum())
                    s["segment_channel"] += float((_fit(a[i], b[i], d[i], 0) ** 2).sum())
        for who, parts in glob.items():
            a, b, d = (np.concatenate(x) for x in zip(*parts))
            sums[who][rule]["global"] = float((_fit(a, b, d, None) ** 2).sum())
    return {who: {rule: {k: float(np.sqrt(v / counts[who][rule])) for k, v in by.items()}
                  for rule, by in rules.items()} for who, rules in sums.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, default=ev.DEFAULT_RECORDINGS)
    ap.add_argument("--json", action="store_true", help="also print the result as JSON, last line")
    a = ap.parse_args(argv)
    paths = ev.find_takes(a.recordings)
    if not paths:
        print(f"no CSV takes found in {a.recordings}", file=sys.stderr)
        return 2
    res = headroom(paths)
    print("| person | rule | " + " | ".join(CURVES + GRAINS) + " |")
    print("|---" * (len(CURVES + GRAINS) + 2) + "|")
    for who, rules in res.items():
        for rule, r in rules.items():
            best = min(r[c] for c in CURVES)
            print(f"| {who} | {rule} | " + " | ".join(
                f"{r[k]:.5f} ({100 * (1 - r[k] / best):+.1f}%)" for k in CURVES + GRAINS) + " |")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
