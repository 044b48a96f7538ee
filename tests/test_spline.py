import numpy as np
import pytest

from runtime.animate.spline import monotone_cubic
from runtime.animate.timeline import Track

RNG = np.random.default_rng(7)


def random_keys(n=7, ch=61):
    times = np.cumsum(RNG.uniform(0.2, 0.8, n))
    times -= times[0]
    values = RNG.uniform(0, 1, (n, ch))
    return times, values


def test_interior_segments_equal_scipy_pchip():
    from scipy.interpolate import PchipInterpolator

    times, values = random_keys()
    q = np.linspace(times[1], times[-2], 400)  # scipy differs only in its end tangents
    ours = monotone_cubic(times, values, q)
    ref = PchipInterpolator(times, values, axis=0)(q)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_never_overshoots_its_keys():
    times, values = random_keys(12)
    q = np.linspace(0, times[-1], 2000)
    out = monotone_cubic(times, values, q)
    seg = np.clip(np.searchsorted(times, q, side="right") - 1, 0, len(times) - 2)
    lo = np.minimum(values[seg], values[seg + 1]) - 1e-6
    hi = np.maximum(values[seg], values[seg + 1]) + 1e-6
    assert ((out >= lo) & (out <= hi)).all()


def test_passes_through_keys():
    times, values = random_keys()
    np.testing.assert_allclose(monotone_cubic(times, values, times), values, atol=1e-6)


def play(track: Track, frames: int, fps=60.0, arrivals=None) -> np.ndarray:
    """Advance frame by frame; ``arrivals`` maps a frame number to keys added just before it."""
    out = np.zeros((frames, 61), dtype=np.float32)
    for i in range(frames):
        for t, v in (arrivals or {}).get(i, []):
            track.add(t, v)
        track.advance(0.0 if i == 0 else 1 / fps, out[i])
    return out


def test_streaming_equals_offline_when_keys_arrive_in_time():
    times, values = random_keys(6)
    values[0] = 0.0
    fps = 60.0
    n = int(times[-1] * fps) + 1
    track = Track(values[0])
    # each key arrives while the playhead is still two segments before it
    arrivals: dict[int, list] = {0: [(times[1], values[1]), (times[2], values[2])]}
    for k in range(3, len(times)):
        arrivals.setdefault(int(times[k - 2] * fps), []).append((times[k], values[k]))
    streamed = play(track, n, fps, arrivals)
    track.finish()
    offline = monotone_cubic(times, values, np.arange(n) / fps)
    np.testing.assert_allclose(streamed, np.clip(offline, 0, 1), atol=1e-5)


def test_late_key_eases_in_holds_and_continues_without_a_jump():
    fps = 60.0
    track = Track(np.zeros(61))
    a = np.full(61, 0.8)
    b = np.full(61, 0.1)
    late_frame = 60  # key b arrives 1 s after playback reached key a at 0.3 s
    frames = play(track, 120, fps, {0: [(0.3, a)], late_frame: [(0.5, b)]})
    steps = np.abs(np.diff(frames[:, 0]))
    assert frames[30:late_frame, 0] == pytest.approx(0.8)  # held at the last key
    assert steps.max() < 0.1  # no pop anywhere
    assert steps[18:20].max() < 0.01  # eased into a (tangent 0 there)
    assert frames[-1, 0] == pytest.approx(0.1)  # then continued to b
    assert track.held == pytest.approx(119 / fps - 0.5)  # waited at a, then waits at b


def test_a_later_key_never_changes_frames_already_sent():
    fps = 60.0
    times, values = random_keys(5)
    runs = []
    for last in (0.0, 1.0):
        track = Track(values[0])
        for t, v in zip(times[1:4], values[1:4]):
            track.add(t, v)
        before = play(track, int(times[2] * fps))  # playhead now inside segment 1 -> 2
        track.add(times[4], np.full(61, last))
        runs.append(before)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_render_of_finished_track():
    track = Track(np.zeros(61))
    track.add(0.5, np.full(61, 0.5))
    track.finish()
    frames = track.render(60.0)
    assert frames.shape == (31, 61) and frames.dtype == np.float32
    assert frames[0, 0] == 0 and frames[-1, 0] == pytest.approx(0.5)
    assert track.done



def test_warm_up_leaves_nothing_to_load_on_the_clock_thread():
    """The Track calls fc_tangent and hermite from Python: after warm_up() their first call there
    loads nothing from numba's cache (it did: one frame 3-10 ms late early in every line). Run in
    fresh processes, the second with the cache warm, as every ``say`` after the first runs."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import numpy as np\nfrom runtime.animate import spline\nspline.warm_up()\n"
            "fs = (spline.fc_tangent, spline.hermite)\n"
            "n = lambda: [sum(f.stats.cache_hits.values()) + sum(f.stats.cache_misses.values()) for f in fs]\n"
            "before = n()\na, b, o = np.zeros(61), np.ones(61), np.zeros(61)\n"
            "spline.fc_tangent(0.0, 0.4, 0.9, a, b, a, o)\nspline.hermite(a, b, o, o, 0.4, 0.5, o)\n"
            "print(before == n())")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        assert out.stdout.strip() == "True"
