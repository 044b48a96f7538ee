"""The idle layer: blinks timed like the recordings', composition with expressions, determinism."""

import sys

import numpy as np
import pytest

from runtime import channels
from runtime.animate import idle as idle_mod
from runtime.animate.idle import Idle
from tests.conftest import ROOT, SHARED

FPS = 60.0
IX = channels.INDEX
BLINK_L, BLINK_R = IX["EyeBlinkLeft"], IX["EyeBlinkRight"]


def onsets(b, level=0.5):
    return np.flatnonzero((b[1:] > level) & (b[:-1] <= level)) + 1


def test_blinks_have_the_measured_rate_and_timing():
    t = np.arange(0, 1200, 1 / FPS)  # 20 minutes, in one vectorised call
    b = Idle(seed=3).signals(t)[:, idle_mod.BLINK]
    on = onsets(b)
    per_minute = len(on) / 20
    assert 12 <= per_minute <= 20, per_minute  # recordings: 15.9
    gaps = np.diff(on) / FPS
    assert 2.5 <= np.median(gaps) <= 4.5  # recordings: median 3.58 s
    assert gaps.min() >= idle_mod.BLINK_INTERVAL_MIN - 0.1  # onsets measured at half closure
    # duration above 10 % of closure: recordings median 207 ms
    above = b > 0.1
    starts = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    ends = np.flatnonzero(~above[1:] & above[:-1]) + 1
    ends = ends[ends > starts[0]]
    n = min(len(starts), len(ends))
    durations = (ends[:n] - starts[:n]) / FPS
    assert 0.15 <= np.median(durations) <= 0.3
    # lids close faster than they open
    peaks = [s + int(np.argmax(b[s:e])) for s, e in zip(starts[:n], ends[:n], strict=True)]
    closing = np.median([(p - s) for p, s in zip(peaks, starts[:n], strict=True)])
    opening = np.median([(e - p) for p, e in zip(peaks, ends[:n], strict=True)])
    assert closing < opening
    assert b.max() > 0.9 and b.min() == 0.0


def test_seeded_and_independent_of_stepping():
    t = np.arange(0, 90, 1 / FPS)
    whole = Idle(seed=7).signals(t)
    stepped_idle = Idle(seed=7)
    stepped = np.array([stepped_idle.signals1(x).copy() for x in t])
    np.testing.assert_allclose(stepped, whole, atol=1e-9)
    assert not np.allclose(Idle(seed=8).signals(t), whole)


# the capture-like layers off: what is left is blinks, saccades, breathing and drift alone
PLAIN = dict(asymmetry=0.0, tone=0.0, micro=0.0, coupling=0.0)


def test_blink_during_a_squint_still_closes_the_eyes():
    face = Idle(seed=1, saccades=False, drift=False, breathing=False, **PLAIN)
    expr = np.zeros(channels.COUNT, dtype=np.float32)
    expr[IX["EyeSquintLeft"]] = expr[IX["EyeSquintRight"]] = 0.8
    expr[IX["CheekSquintLeft"]] = 0.5
    expr[IX["EyeBlinkLeft"]] = expr[IX["EyeBlinkRight"]] = 0.3  # a squint half-lowers the lids
    expr[IX["EyeWideLeft"]] = 0.6
    t = np.arange(0, 30, 1 / FPS)
    out = face.compose(np.repeat(expr[None], len(t), 0), t)
    peak = int(np.argmax(out[:, BLINK_L]))
    assert out[peak, BLINK_L] > 0.9 and out[peak, BLINK_R] > 0.9
    assert out[peak, IX["EyeWideLeft"]] < 0.1  # wide eyes yield while the lid is down
    # the blink never opens an eye the expression closed, and leaves the rest of the face alone
    assert (out[:, BLINK_L] >= expr[BLINK_L] - 1e-6).all()
    others = np.setdiff1d(np.arange(channels.COUNT), [BLINK_L, BLINK_R, IX["EyeWideLeft"], IX["EyeWideRight"]])
    np.testing.assert_array_equal(out[:, others], np.repeat(expr[None], len(t), 0)[:, others])


def test_idle_motion_yields_to_a_line_that_moves_gaze_and_head():
    t = np.arange(0, 60, 1 / FPS)
    rest = np.zeros(channels.COUNT, dtype=np.float32)
    look = rest.copy()
    look[IX["EyeLookOutLeft"]] = look[IX["EyeLookInRight"]] = 0.8
    look[IX["HeadYaw"]] = 0.1
    free = Idle(seed=2, **PLAIN).compose(np.repeat(rest[None], len(t), 0), t)
    busy = Idle(seed=2, **PLAIN).compose(np.repeat(look[None], len(t), 0), t)
    yaw = IX["LeftEyeYaw"]
    assert np.abs(free[:, yaw]).max() > 2 / 180  # saccades move the eyes at rest ...
    np.testing.assert_allclose(busy[:, yaw], look[yaw], atol=1e-7)  # ... not while the line looks
    head = IX["HeadYaw"]
    drift_free = np.abs(free[:, head]).max()
    drift_busy = np.abs(busy[:, head] - look[head]).max()
    assert drift_free > 0.5 / 180 and drift_busy == pytest.approx(0.5 * drift_free, rel=0.05)


def test_stays_in_range_and_moves_smoothly():
    t = np.arange(0, 120, 1 / FPS)
    out = Idle(seed=4, **PLAIN).compose(np.zeros((len(t), channels.COUNT), np.float32), t)
    assert (out >= channels.LOW).all() and (out <= channels.HIGH).all()
    step = np.abs(np.diff(out, axis=0))
    # head and breath are slow; eye rotations jump only by small saccades
    assert step[:, 52:55].max() < 0.05 / 180 * 60
    assert step[:, 55:61].max() < 10 / 180  # saccades peak near 400 deg/s in real eyes
    assert out[:, IX["JawOpen"]].max() < 0.02  # breathing barely parts the lips


def test_switches_off():
    t = np.arange(0, 20, 1 / FPS)
    s = Idle(seed=1, blinks=False, saccades=False, breathing=False, drift=False).signals(t)
    assert not s.any()


@pytest.mark.skipif(not (SHARED / "data" / "recordings").exists(), reason="recordings not present")
def test_defaults_match_the_measurement_tool():
    sys.path.insert(0, str(ROOT))
    from tools.measure_blinks import NATURAL, measure

    paths = [p for n in NATURAL for p in (SHARED / "data" / "recordings").rglob(f"{n}.csv")]
    stats = measure(paths)
    assert stats["interval_lognormal"]["mu"] == pytest.approx(idle_mod.BLINK_INTERVAL_MU, abs=0.01)
    assert stats["interval_lognormal"]["sigma"] == pytest.approx(idle_mod.BLINK_INTERVAL_SIGMA, abs=0.01)
    assert stats["close"]["median"] == pytest.approx(idle_mod.BLINK_CLOSE, abs=0.002)
    assert stats["open"]["median"] == pytest.approx(idle_mod.BLINK_OPEN, abs=0.002)
    assert 12 <= stats["per_minute"] <= 20
