"""Gaze with intent: where the eyes go, measured from capture, and why they go there while talking.

Saccade numbers were measured from the recordings' EyeLook channels with
``python tools/measure_saccades.py`` (natural takes of two people, 514 s, 30 Hz; jumps while the
lids close left out): 512 saccades, 60 a minute; interval median 0.37 s (p10 0.13, p90 2.0),
log-normal mu -0.816, sigma 1.116 (ln s); amplitude median 0.11 EyeLook units (~4 degrees), p90
0.41; two 30 Hz frames long; gaze position spread (sd) 0.20 units in yaw, 0.17 in pitch
(~7 and ~4.5 degrees by the look presets' 0.8 = 27 / 21.6 degrees); the two eyes disagree in
yaw (left minus right sd 0.025) far more than in pitch (0.003), and converge: each turned in by
0.034 units at rest.

Intent, while a line is spoken (after studies of gaze in conversation: speakers look away as a
thought begins, and back to the listener as it ends): the words are grouped into thoughts at
pauses; as a thought starts the eyes usually leave the listener (sideways and a little up or down)
for part of it, and as it ends they come back and settle on the listener, small saccades damped.
:func:`intents` turns a line's words into such events; :class:`runtime.animate.idle.Idle` adds them
to its saccades.
"""

from __future__ import annotations

import numpy as np

# measured (tools/measure_saccades.py), see the module docstring
SACCADE_INTERVAL_SIGMA = 1.116  # ln seconds
# the measured mu (-0.816) drawn with the clip below gives ~75 shifts a minute: mu is set from the
# measured rate instead (60 a minute: mean interval 1 s = exp(mu + sigma^2 / 2))
SACCADE_INTERVAL_MU = -0.5 * SACCADE_INTERVAL_SIGMA ** 2
SACCADE_INTERVAL_MIN = 0.12  # s; p10 0.13 s
SACCADE_INTERVAL_MAX = 6.0
UNIT_YAW_DEG = 27.0 / 0.8  # degrees of eye yaw per EyeLook unit (the lookleft preset)
UNIT_PITCH_DEG = 21.6 / 0.8
GAZE_SD_YAW = 0.20 * UNIT_YAW_DEG  # degrees: 6.9
GAZE_SD_PITCH = 0.17 * UNIT_PITCH_DEG  # degrees: 4.6

VERGENCE = 0.034  # EyeLookIn of each eye at rest: the eyes converge on a face at talking distance

PAUSE = 0.2  # s between words that ends a thought
AWAY_CHANCE = 0.75  # a thought starts with the eyes leaving the listener
AWAY_LEAD = 0.15  # s: they leave just before the words
AWAY_DURATION = (0.5, 1.4)  # s, and at most AWAY_SHARE of the thought
AWAY_SHARE = 0.6
AWAY_SIZE = (0.8, 1.8)  # x the gaze spread, sideways; pitch up to +-1 spread
RETURN_HOLD = 0.9  # s the eyes settle on the listener as a thought ends
FOCUS = 0.8  # how much the small saccades are damped while settled on the listener
RAMP = 0.06  # s: an intent's gaze shift is saccade-fast


def thoughts(words, pause: float = PAUSE) -> list[tuple[float, float]]:
    """(start, end) line times of the runs of words between pauses."""
    out: list[list[float]] = []
    for w in words:
        if out and w.start - out[-1][1] < pause:
            out[-1][1] = max(out[-1][1], w.end)
        else:
            out.append([w.start, w.end])
    return [(a, b) for a, b in out if b > a]


def intents(words, rng: np.random.Generator, t0: float = 0.0) -> np.ndarray:
    """float64[m, 5] events (on, off, yaw deg, pitch deg, focus) for a line spoken from clock time t0."""
    ev = []
    for a, b in thoughts(words):
        if rng.random() < AWAY_CHANCE:
            on = t0 + a - AWAY_LEAD
            dur = min(rng.uniform(*AWAY_DURATION), AWAY_SHARE * (b - a + AWAY_LEAD))
            side = 1.0 if rng.random() < 0.5 else -1.0
            yaw = side * rng.uniform(*AWAY_SIZE) * GAZE_SD_YAW
            pitch = rng.uniform(-1.0, 1.0) * GAZE_SD_PITCH
            if dur > 2 * RAMP:
                ev.append((on, on + dur, yaw, pitch, 0.5))
        ev.append((t0 + b - 0.1, t0 + b + RETURN_HOLD, 0.0, 0.0, FOCUS))
    return np.array(ev, dtype=np.float64).reshape(-1, 5)


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(ev: np.ndarray, t: np.ndarray) -> np.ndarray:
    """float64[n, m]: how much each event holds at times t (0..1, saccade-fast ramps)."""
    tt = np.asarray(t, dtype=np.float64)[:, None]
    return _smooth((tt - ev[None, :, 0]) / RAMP) * (1.0 - _smooth((tt - ev[None, :, 1]) / RAMP))


def apply(ev: np.ndarray, t: np.ndarray, yaw: np.ndarray, pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Saccade gaze (degrees at times t) -> with the events' looks away and focus on the listener."""
    if not len(ev):
        return yaw, pitch
    env = envelope(ev, t)
    keep = 1.0 - np.clip((env * ev[None, :, 4]).sum(axis=1), 0.0, 1.0)
    return yaw * keep + env @ ev[:, 2], pitch * keep + env @ ev[:, 3]
