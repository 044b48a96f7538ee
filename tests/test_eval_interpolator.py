"""The eval tool on synthetic takes whose answers are known exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import channels
from runtime.sinks.csv import write_take

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import eval_interpolator as ev  # noqa: E402

RNG = np.random.default_rng(5)
APPLE = list(channels.NAMES)  # Live Link Face writes Apple's order: JawRight before JawLeft, ...
for a, b in (("JawLeft", "JawRight"), ("MouthLeft", "MouthRight")):
    i, j = APPLE.index(a), APPLE.index(b)
    APPLE[i], APPLE[j] = APPLE[j], APPLE[i]


def corners(seconds: float, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-linear face with a random pose every 0.5 s (2 keys/s): 61 channels in range."""
    t = np.arange(int(round(seconds * fps)) + 1) / fps
    kt = np.arange(0, seconds + 1e-9, 0.5)
    kv = RNG.uniform(0.05, 0.95, (len(kt), channels.COUNT))
    kv[:, channels.SHAPES:] = RNG.uniform(-0.5, 0.5, (len(kt), channels.COUNT - channels.SHAPES))
    kv[:, 5] = 0.3  # a channel that never moves is left out of the scores
    kv[:, 10] = np.resize([0.0, 1.0, 0.5], len(kt))  # keys on the bounds: Catmull-Rom overshoots
    return t, np.stack([np.interp(t, kt, kv[:, c]) for c in range(channels.COUNT)], axis=1)


def write_llf(path: Path, parts: list[tuple[float, np.ndarray]], lost: int) -> int:
    """A raw Live Link Face export: 60 fps timecode stepping by 2, Apple's column order, and
    ``lost`` tracking-loss rows between parts. Returns the number of valid rows."""
    rows, order = [], [channels.INDEX[n] for n in APPLE]
    frame = 16 * 3600 * 60  # 16:00:00:00
    for k, (_, v) in enumerate(parts):
        if k:
            for _ in range(lost):
                rows.append(f"{tc(frame)},0")
                frame += 2
        for row in v:
            rows.append(f"{tc(frame)},61," + ",".join(f"{x:.10f}" for x in row[order]))
            frame += 2
    path.write_text("Timecode,BlendShapeCount," + ",".join(APPLE) + "\n" + "\n".join(rows) + "\n")
    return sum(len(v) for _, v in parts)


def tc(frame: int) -> str:
    s, ff = divmod(frame, 60)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}.000"


def run_json(capsys, *args: str) -> dict:
    assert ev.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_recovers_a_piecewise_linear_take(tmp_path, capsys):
    t, v = corners(10.0, fps=60.0)  # a 60 Hz device this time
    write_take(tmp_path / "a.csv", v.astype(np.float32), fps=60.0)
    out = run_json(capsys, "--recordings", str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert set(out) == {"rmse", "rmse_uniform", "velocity_error", "overshoot", "takes", "frames"}
    for k in ("rmse", "rmse_uniform", "velocity_error", "overshoot"):
        assert set(out[k]) == set(ev.METHODS)
    assert out["takes"] == 1 and out["frames"] == len(t)
    # salient keys land exactly on the 21 corners, and so do the uniform ones: linear is exact
    assert out["rmse"]["linear"] < 1e-6 and out["rmse_uniform"]["linear"] < 1e-6
    assert out["overshoot"]["linear"] == 0.0
    # the curves are not exact, Catmull-Rom overshoots, the fallback plays the spline
    assert out["rmse"]["monotone_cubic"] > 1e-3 and out["rmse"]["catmull_rom"] > 1e-3
    assert out["overshoot"]["catmull_rom"] > 0.0
    assert out["rmse"]["learned"] == pytest.approx(out["rmse"]["monotone_cubic"], rel=1e-6)


def test_raw_live_link_face_export_with_tracking_loss(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    a, b = corners(5.0), corners(4.0)
    valid = write_llf(tmp_path / "sub" / "take.csv", [a, b], lost=12)
    runs = ev.runs_of(tmp_path / "sub" / "take.csv")
    assert [len(r.times) for r in runs] == [len(a[0]), len(b[0])]
    assert runs[1].times[0] == pytest.approx(runs[0].times[-1] + 13 / 30)
    np.testing.assert_allclose(runs[0].values, a[1], atol=1e-6)  # columns mapped by name
    out = run_json(capsys, "--recordings", str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert out["frames"] == valid
    assert out["rmse"]["linear"] < 1e-6 and out["rmse_uniform"]["linear"] < 1e-6


def test_salient_keys_are_two_per_second_on_the_corners():
    t = np.arange(0, 301) / 30.0
    v = np.cumsum(RNG.normal(0, 0.02, (len(t), 61)), axis=0)
    assert len(ev.salient_keys(t, v)) == 21
    t, v = corners(10.0)
    np.testing.assert_array_equal(ev.salient_keys(t, v), np.arange(0, 301, 15))
    np.testing.assert_array_equal(ev.uniform_keys(t), np.arange(0, 301, 15))


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, v = corners(12.0, fps=60.0)
    write_take(tmp_path / "a.csv", v.astype(np.float32), fps=60.0)
    png = tmp_path / "p.png"
    assert ev.main(["--recordings", str(tmp_path), "--plot", str(png), "--channel", "JawOpen"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_takes_is_a_clear_error(tmp_path, capsys):
    assert ev.main(["--recordings", str(tmp_path)]) == 2
    assert "no CSV takes" in capsys.readouterr().err


def test_speed_plays_the_take_faster_or_slower(tmp_path, capsys):
    t, v = corners(10.0, fps=60.0)
    write_take(tmp_path / "a.csv", v.astype(np.float32), fps=60.0)
    common = ["--recordings", str(tmp_path), "--model", str(tmp_path / "none.onnx")]
    slow = run_json(capsys, *common, "--speed", "0.5")  # a corner every 1 s: every key rule hits them
    assert slow["frames"] == len(t)
    assert slow["rmse"]["linear"] < 1e-6 and slow["rmse_uniform"]["linear"] < 1e-6
    fast = run_json(capsys, *common, "--speed", "2")  # a corner every 0.25 s: keys every 0.5 s miss half
    assert fast["rmse_uniform"]["linear"] > 1e-2
    with pytest.raises(SystemExit):
        ev.main([*common, "--speed", "0"])


def test_loo_models_score_each_take_with_its_own(tmp_path, capsys):
    for name in ("a", "b"):
        write_take(tmp_path / f"{name}.csv", corners(4.0, fps=60.0)[1].astype(np.float32), fps=60.0)
    models = tmp_path / "loo"
    models.mkdir()
    (models / "a.onnx").write_bytes(b"broken")  # falls back to the spline, loudly
    common = ["--recordings", str(tmp_path), "--loo-models", str(models)]
    assert ev.main(common) == 2
    assert "no model for ['b']" in capsys.readouterr().err
    (models / "b.onnx").write_bytes(b"broken")
    out = run_json(capsys, *common)
    assert out["takes"] == 2
    assert out["rmse"]["learned"] == pytest.approx(out["rmse"]["monotone_cubic"], rel=1e-6)


def test_error_by_segment_length(tmp_path, capsys):
    t = np.arange(0, 601) / 60.0
    v = np.clip(0.5 + np.cumsum(RNG.normal(0, 0.01, (len(t), 61)), axis=0), 0, 1)
    write_take(tmp_path / "a.csv", v.astype(np.float32), fps=60.0)
    spline = ev.LearnedInterpolator(tmp_path / "none.onnx")  # falls back to the spline
    scores = ev.evaluate(ev.find_takes(tmp_path), spline, progress=False)
    tot = ev.pooled(scores)
    for (rule, method), binned in scores[0].by_length.items():  # the bins add up to the total
        assert binned.sum() == pytest.approx(tot[(rule, method)].sq, rel=1e-9)
    assert scores[0].by_length[("uniform", "linear")][2] > 0  # 0.5 s segments: the 0.5-1 s bin
    assert scores[0].by_length[("uniform", "linear")][[0, 1, 3, 4]].sum() == 0
    assert ev.main(["--recordings", str(tmp_path), "--by-length", "--model", str(tmp_path / "x")]) == 0
    assert "squared error by segment length" in capsys.readouterr().out


def write_calibrated(path: Path, t: np.ndarray, v: np.ndarray, fps_tc: int = 60) -> None:
    """A Live Link Face "calibrated" export as the second person's takes are: header spelled
    ``BlendshapeCount``, a timecode counting ``fps_tc`` frames a second with a sub-frame fraction,
    Apple's column order."""
    order = [channels.INDEX[n] for n in APPLE]
    start = 18 * 3600 + 43 * 60 + 58.0
    rows = []
    for x, row in zip(t, v):
        whole, frac = divmod(start + x, 1.0)
        s, (ff, milli) = int(whole), divmod(int(round(frac * fps_tc * 1000)), 1000)
        rows.append(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}.{milli:03d},61,"
                    + ",".join(f"{y:.10f}" for y in row[order]))
    path.write_text("Timecode,BlendshapeCount," + ",".join(APPLE) + "\n" + "\n".join(rows) + "\n")


def calibrated_face(seconds: float = 6.0, fps: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    t, v = corners(seconds, fps)
    v[:, [channels.INDEX[n] for n in ("MouthLeft", "TongueOut", "BrowDownLeft")]] = 0.0
    head = channels.HEAD
    v[:, head] = 0.2 * np.sin(2 * np.pi * 0.7 * t[:, None] + np.arange(3))  # a head that moves
    return t + 0.0123, v  # the capture starts mid-frame: sub-frame timecodes


def test_calibrated_60hz_export_of_a_second_person(tmp_path, capsys):
    (tmp_path / "animavr").mkdir()
    t, v = calibrated_face()
    path = tmp_path / "animavr" / "MySlate_1_iPhone_cal.csv"
    write_calibrated(path, t, v)
    assert ev.timecode_rate(path) == 60.0
    (run,) = ev.runs_of(path)  # the lower-case s does not matter: the column is read by position
    assert len(run.times) == len(t)
    np.testing.assert_allclose(np.diff(run.times), 1 / 60, atol=2e-5)  # time from the timecode
    np.testing.assert_allclose(run.values, v, atol=1e-6)
    spline = ev.LearnedInterpolator(tmp_path / "none.onnx")
    (s,) = ev.evaluate([path], spline, progress=False)
    assert s.person == "animavr"
    # three constant-zero shapes (and corners()' constant one) are not scored; the moving head
    # is, and on its own too
    assert s.sums[("salient", "linear")].n == (len(t) - s.keys["salient"]) * (channels.COUNT - 4)
    assert s.groups[("salient", "linear", "head")].n == (len(t) - s.keys["salient"]) * 3
    assert s.groups[("uniform", "monotone_cubic", "head")].rmse > 1e-3
    assert ev.group_gain(s, "salient", "head", "monotone_cubic") == pytest.approx(0.0, abs=1e-4)
    out = run_json(capsys, "--recordings", str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert out["frames"] == len(t) and "per_person" not in out  # one person


def test_the_shipped_model_keeps_head_rotation_on_the_spline(tmp_path):
    t, v = calibrated_face(8.0)
    v[:, :channels.SHAPES] = np.clip(v[:, :channels.SHAPES] ** 2, 0, 1)  # curves, not corners
    write_calibrated(tmp_path / "a.csv", t, v)
    (s,) = ev.evaluate([tmp_path / "a.csv"], ev.LearnedInterpolator(), progress=False)
    for rule in ev.RULES:  # the real model: not a hair different on the head, reshaped elsewhere
        assert ev.group_gain(s, rule, "head", "monotone_cubic") == pytest.approx(0.0, abs=1e-6)
        assert s.groups[(rule, "learned", "shapes")].rmse != pytest.approx(
            s.groups[(rule, "monotone_cubic", "shapes")].rmse, rel=1e-4)


def test_a_timecode_counting_30_frames_a_second_is_read_at_30(tmp_path):
    t, v = calibrated_face(4.0, fps=30.0)
    write_calibrated(tmp_path / "a.csv", t, v, fps_tc=30)
    assert ev.timecode_rate(tmp_path / "a.csv") == 30.0
    (run,) = ev.runs_of(tmp_path / "a.csv")
    assert run.times[-1] - run.times[0] == pytest.approx(t[-1] - t[0], abs=1e-3)  # not half speed


def test_rows_whose_time_does_not_advance_are_dropped(tmp_path, caplog):
    t, v = calibrated_face(3.0)
    t2 = t.copy()
    t2[50] = t2[49]  # a repeated timecode
    write_calibrated(tmp_path / "a.csv", t2, v)
    (run,) = ev.runs_of(tmp_path / "a.csv")  # one run still: a dropped row is not a tracking loss
    assert len(run.times) == len(t) - 1 and (np.diff(run.times) > 0).all()
    assert "do not advance" in caplog.text or "does not advance" in caplog.text


def test_two_people_pooled_apart_and_per_person_models(tmp_path, capsys):
    for who in ("p1", "p2"):
        (tmp_path / who).mkdir()
        t, v = calibrated_face(4.0)
        write_calibrated(tmp_path / who / f"{who}_take.csv", t, v)
    models = tmp_path / "lopo"
    models.mkdir()
    (models / "p1.onnx").write_bytes(b"broken")
    common = ["--recordings", str(tmp_path), "--person-models", str(models)]
    assert ev.main(common) == 2
    assert "no model for ['p2']" in capsys.readouterr().err
    (models / "p2.onnx").write_bytes(b"broken")
    assert ev.main([*common, "--json"]) == 0
    text = capsys.readouterr().out
    assert "*p1 pooled*" in text and "*p2 pooled*" in text
    assert set(json.loads(text.strip().splitlines()[-1])["per_person"]) == {"p1", "p2"}
