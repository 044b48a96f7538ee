"""tools/spline_blend_headroom.py: the best blend of the candidate splines, with the answer known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from runtime import channels
from runtime.sinks.csv import write_take

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import spline_blend_headroom as H  # noqa: E402


def _takes(rec: Path) -> None:
    """Two people: one a random walk, one whose every channel is a sum of slow sines."""
    t = np.arange(0, 301) / 30.0
    walk = np.cumsum(np.random.default_rng(1).normal(0, 0.03, (len(t), channels.COUNT)), axis=0)
    (rec / "p1").mkdir(parents=True)
    (rec / "p2").mkdir()
    v = np.clip(0.5 + walk, 0.0, 1.0)
    v[:, channels.SHAPES:] = 0.0
    write_take(rec / "p1" / "a.csv", v.astype(np.float32), fps=30.0)
    phase = np.random.default_rng(2).uniform(0, 6, channels.COUNT)
    v = 0.5 + 0.3 * np.sin(1.3 * t[:, None] + phase) * np.cos(0.4 * t[:, None] + 2 * phase)
    v[:, channels.SHAPES:] = 0.0
    write_take(rec / "p2" / "b.csv", v.astype(np.float32), fps=30.0)


def test_finer_grains_never_do_worse_and_the_table_prints(tmp_path, capsys):
    rec = tmp_path / "rec"
    _takes(rec)
    res = H.headroom(sorted(rec.rglob("*.csv")))
    assert sorted(res) == ["p1", "p2"]
    for who in res:
        for rule in ("salient", "uniform"):
            r = res[who][rule]
            best = min(r[c] for c in H.CURVES)
            # each grain's least squares can pick any one curve, so it is never worse than the
            # best of them, and a finer grain never worse than a coarser one
            assert r["global"] <= best + 1e-9
            assert r["segment"] <= r["global"] + 1e-9
            assert r["segment_channel"] <= r["segment"] + 1e-9
    # smooth motion: the blend finds real room between the curves
    assert res["p2"]["uniform"]["segment"] < 0.95 * min(res["p2"]["uniform"][c] for c in H.CURVES)
    assert H.main(["--recordings", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "| p1 | salient |" in out and "segment_channel" in out
    assert H.main(["--recordings", str(tmp_path / "none")]) == 2
