"""The capture-like layers of the idle face: gaze intent, asymmetry, coupling, micro-motion, and the
realism measure that judges them against the recordings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import channels
from runtime.animate import gaze, speech
from runtime.animate.asymmetry import Asymmetry
from runtime.animate.coupling import Coupling
from runtime.animate.idle import Idle
from runtime.animate.micro import Micro

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import eval_realism as er  # noqa: E402

IX = channels.INDEX
FPS = 60.0
NOT_GAZE = [i for i in range(channels.SHAPES) if not channels.NAMES[i].startswith("EyeLook")]


def _smile(n: int) -> np.ndarray:
    e = np.zeros((n, channels.COUNT), np.float32)
    ramp = np.clip(np.arange(n) / 60.0, 0, 1)  # a smile that grows over a second, then holds
    e[:, IX["MouthSmileLeft"]] = e[:, IX["MouthSmileRight"]] = 0.7 * ramp
    e[:, IX["CheekSquintLeft"]] = e[:, IX["CheekSquintRight"]] = 0.5 * ramp
    return e


def test_seeded_and_the_stream_matches_the_offline_take():
    t = Idle.times(600, FPS)
    e = _smile(len(t))
    a = Idle(seed=3).compose(e, t)
    np.testing.assert_array_equal(a, Idle(seed=3).compose(e, t))
    assert not np.allclose(a, Idle(seed=4).compose(e, t))
    face = Idle(seed=3)
    stream = np.stack([face.compose(e[i], float(t[i])).copy() for i in range(len(t))])
    np.testing.assert_allclose(stream, a, atol=1e-5)


def test_asymmetry_zero_is_a_symmetric_rig():
    t = Idle.times(900, FPS)
    out = Idle(seed=5, asymmetry=0.0).compose(_smile(len(t)), t)
    mirrored = out[:, channels.MIRROR]
    np.testing.assert_allclose(out[:, NOT_GAZE], mirrored[:, NOT_GAZE], atol=1e-6)
    x = _smile(100)
    np.testing.assert_array_equal(Asymmetry(0.0, seed=1).apply(x), x)


def test_asymmetry_makes_the_sides_differ_within_measured_limits():
    x = _smile(300)
    y = Asymmetry(1.0, seed=2).apply(x)
    L, R = y[:, IX["MouthSmileLeft"]], y[:, IX["MouthSmileRight"]]
    assert np.abs(L - R).max() > 0.002  # not a mirror image ...
    assert np.abs(L - R).max() < 0.3  # ... but the same smile
    held = y[-1]  # a hold: the lagging side has caught up, only the gain differs
    assert held[IX["MouthSmileLeft"]] == pytest.approx(0.7 * Asymmetry(1.0, seed=2).gain[IX["MouthSmileLeft"]],
                                                       rel=1e-3)


def test_coupling_brings_neighbours_and_never_takes_away():
    c = Coupling(0.5)
    pose = np.zeros(channels.COUNT, np.float32)
    pose[IX["CheekSquintLeft"]] = pose[IX["CheekSquintRight"]] = 0.6
    pose[IX["JawOpen"]] = 0.5
    out = c.apply(pose)
    assert out[IX["NoseSneerLeft"]] > 0.05  # a cheek squint brings the nose, as in capture
    assert out[IX["JawForward"]] > 0.0  # ... and an open jaw JawForward, which never moved in ours
    assert (out >= pose - 1e-7).all()
    assert (out - pose).max() <= 0.25 + 1e-6  # capped
    for name in ("JawOpen", "MouthClose", "EyeBlinkLeft", "EyeLookInLeft"):
        assert out[IX[name]] == pose[IX[name]]  # owned by speech, blinks and gaze
    np.testing.assert_array_equal(Coupling(0.0).apply(pose), pose)


def test_micro_motion_is_small_never_still_and_steppable():
    m = Micro(1.0, seed=1)
    t = np.arange(0, 20, 1 / FPS)
    x = m.sample(t)
    np.testing.assert_allclose(np.stack([m.sample1(float(v)) for v in t[:200]]), x[:200], atol=1e-6)
    step = np.abs(np.diff(x, axis=0)).max(axis=1)
    assert (step > 1e-4).all()  # no frame-perfect stillness
    assert np.abs(x).max() < 0.25  # a hold, not an expression (the eyes' region moves most, as in capture)
    assert x[:, IX["JawOpen"]].std() < 0.01
    assert not Micro(0.0, seed=1).sample(t).any()


def test_gaze_leaves_the_listener_as_a_thought_starts_and_returns_at_its_end():
    plan = speech.SpeechPlan.from_text("I was thinking. Maybe we could go tomorrow, after lunch.")
    assert len(gaze.intents(plan.words, np.random.default_rng(0))) >= 2
    face = Idle(seed=0, blinks=False, drift=False, breathing=False)
    face.plan_speech(0.0, plan)
    ev = face._intents  # the events this face drew for the line
    ends = ev[ev[:, 4] == gaze.FOCUS]
    assert len(ends) == len(gaze.thoughts(plan.words))
    t = np.arange(0, plan.duration + 1.5, 1 / FPS)
    sig = face.signals(t)
    yaw = sig[:, 1] - sig[:, 2]
    settle = (t > ends[-1, 0] + 0.2) & (t < ends[-1, 1] - 0.1)
    away = ev[ev[:, 4] != gaze.FOCUS]
    if len(away):
        during = (t > away[0, 0] + 0.1) & (t < away[0, 1] - 0.05)
        assert np.abs(yaw[during]).mean() > np.abs(yaw[settle]).mean()
    assert np.abs(yaw[settle]).max() < 0.5 * gaze.GAZE_SD_YAW * 2.5  # back on the listener


def test_saccade_rate_matches_the_measurement():
    t = np.arange(0, 300, 1 / FPS)
    sig = Idle(seed=9, blinks=False, drift=False, breathing=False).signals(t)
    yaw = sig[:, 1] - sig[:, 2]
    pitch = sig[:, 3] - sig[:, 4]
    moving = np.hypot(np.diff(yaw), np.diff(pitch)) > 0.05
    onsets = np.flatnonzero(moving[1:] & ~moving[:-1])
    per_minute = len(onsets) / 5.0
    assert 35 <= per_minute <= 90, per_minute  # capture: 60 a minute (tools/measure_saccades.py)


# -- the realism measure --------------------------------------------------------------------------
def test_window_statistics_see_stillness_lockstep_and_blinks():
    n = 60
    still = np.zeros((n, channels.SHAPES))
    f = er.window_features(still, 0)
    assert f["still"] == 1.0 and f["speed"] == 0.0 and f["asym_velocity"] == 0.0
    x = np.zeros((n, channels.SHAPES))
    x[:, IX["MouthSmileLeft"]] = x[:, IX["MouthSmileRight"]] = np.linspace(0, 0.5, n)
    f = er.window_features(x, 1)
    assert f["asym_velocity"] == 0.0 and f["still"] == 0.0 and f["blinks"] == 30.0
    x[:, IX["MouthSmileRight"]] *= 0.5
    assert er.window_features(x, 0)["asym_velocity"] > 0.2


def test_classifier_tells_different_things_apart_and_not_the_same():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 10)
    y = (groups >= 10).astype(int)
    X = np.abs(rng.normal(1.0, 0.2, (200, 3)))
    same, _ = er.cv_auc(X, y, groups)
    X[y == 1, 0] *= 3.0
    apart, _ = er.cv_auc(X, y, groups)
    assert apart > 0.95 and 0.3 < same < 0.7
    assert er.auc(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 1, 1])) == 1.0


def test_the_talking_mouth_is_judged_against_the_talking_windows_of_real_speech():
    """Real speech with pauses (the jaw at rest half the time) against a take that talks all the
    way through at the same pace: the same speed when talking windows meet, not twice as fast."""
    fps, n = er.RATE, int(er.RATE * 12)  # long stretches: few windows straddle talk and pause
    t = np.arange(n) / fps
    talk = np.zeros((n, channels.SHAPES))
    talk[:, IX["JawOpen"]] = 0.15 + 0.15 * np.sin(2 * np.pi * 4 * t)  # syllables at 4 Hz
    pause = np.zeros((n, channels.SHAPES))
    pause[:, IX["JawOpen"]] = 0.05
    real = er.Take(er.SPEECH_TAKE, "alexdjulin", [np.r_[talk, pause, talk, pause]])
    other = er.Take("other", "animavr", [pause.copy()])
    ours = er.Take("ours0", "ours", [np.r_[talk, talk]])
    takes = [real, other, ours]
    X, take_ix, groups, talks = er.table(takes)
    st = er.summarise(X, take_ix, groups, takes, talks)
    assert st["ours"]["jaw_speed"] == pytest.approx(st["real"]["jaw_speed"], rel=0.1)
    assert st["ours_all"]["jaw_speed"] > 1.5 * st["speech_all"]["jaw_speed"]  # the pauses halve it
    assert 0 < st["speech"]["windows"] < st["speech_all"]["windows"]


# -- life in every command ------------------------------------------------------------------------
def test_render_is_alive_by_default_repeatable_with_a_seed_and_still_with_no_idle(tmp_path):
    from runtime import cli
    from runtime.sinks.csv import read_take

    line = "She smiles and waves at her friend across the street."
    paths = {k: tmp_path / f"{k}.csv" for k in ("a", "b", "c", "plain")}
    for k, extra in (("a", ["--seed", "1"]), ("b", ["--seed", "1"]), ("c", ["--seed", "2"]),
                     ("plain", ["--no-idle"])):
        assert cli.main(["render", line, "--talk", "-o", str(paths[k]), *extra]) == 0
    take = {k: read_take(p).values for k, p in paths.items()}
    np.testing.assert_array_equal(take["a"], take["b"])  # a seed repeats the take
    assert not np.array_equal(take["a"], take["c"])
    gaze = [IX[n] for n in ("EyeLookOutLeft", "EyeLookInLeft", "EyeLookUpLeft", "EyeLookDownLeft")]
    assert np.ptp(take["a"][:, gaze], axis=0).max() > 0.02  # the eyes look around ...
    assert np.ptp(take["plain"][:, gaze], axis=0).max() == 0.0  # ... not without the idle layer
    steps = np.abs(np.diff(take["a"][:, :channels.SHAPES], axis=0)).max(axis=1)
    assert (steps > 1e-4).all()  # never frame-perfectly still
