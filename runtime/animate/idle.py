"""The face between (and under) lines: blinks, eye saccades, breathing, slow head drift.

Everything is a function of time drawn from a seeded RNG, so a face is reproducible and any frame
can be computed without replaying the ones before it. Schedules (blink onsets, saccade onsets and
targets) are drawn in fixed-size batches as time advances, so the sequence does not depend on how
the caller steps through time. :meth:`Idle.signals` evaluates many times at once (tests, offline
renders); the frame clock calls :meth:`Idle.compose` with one time per frame.

Composition with the expression (the line's track) never fights it:

* blinks *screen* onto the eyelids, ``e + (1 - e) * blink``: a blink during a squint or a sad face
  still closes the eyes, and it never opens an eye the line has closed; EyeWide yields while the
  lid is down;
* saccades fade out while the line itself moves the gaze (EyeLook* set), head drift halves while the
  line moves the head, and breathing is a small additive lift.

Blink numbers were measured from the real recordings in ../shared/data/recordings with
``python tools/measure_blinks.py`` (takes S07-001, S88-001 and apfel: 49 blinks in 185.5 s of
tracked face, 15.9 per minute; the range-of-motion takes are posed, so left out):

* interval between blinks: median 3.58 s, p10 1.25 s, p90 7.84 s, min 0.77 s; log-normal fit
  mu = 1.195, sigma = 0.658 (of ln seconds);
* closing (10 % -> peak) median 89 ms, opening (peak -> 10 %) median 117 ms, whole blink median
  207 ms (p10 162 ms, p90 358 ms): lids close faster than they open;
* depth: median 0.59 in the tracker's units. A 30 Hz tracker misses the fully closed instant and
  ARKit under-reads closed lids; a rendered blink goes deeper (0.7-0.95: deep enough to close a
  rig's eyes, and with 0.9-1.0 the lids moved 40 % faster than captured ones, tools/eval_realism.py).

Saccades were measured from the recordings' EyeLook channels (their rotation columns are zero)
with ``python tools/measure_saccades.py``: numbers and the gaze's intent while talking are in
:mod:`runtime.animate.gaze`; durations follow the saccadic main sequence (~21 ms + 2.2 ms per
degree). Breathing: 12-20 breaths a minute at rest.

Over those, the layers that make a face move like a captured one (each its own module, each
measured from the recordings by ``tools/measure_coupling.py``, each with a strength a user can set,
0 = off): :mod:`~runtime.animate.asymmetry` (left and right not mirror images), the resting
``tone`` of a real face, :mod:`~runtime.animate.micro` (holds that breathe) and
:mod:`~runtime.animate.coupling` (neighbour channels brought along). A frame goes: expression ->
asymmetry -> tone -> gaze, drift, breath -> micro-motion -> blinks -> coupling -> clamp.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from runtime import channels
from runtime.animate import capture, gaze
from runtime.animate.asymmetry import Asymmetry
from runtime.animate.coupling import Coupling
from runtime.animate.micro import Micro

# measured (tools/measure_blinks.py), see the module docstring
BLINK_INTERVAL_MU = 1.195  # ln seconds; exp(mu) = 3.3 s, median of the fit
BLINK_INTERVAL_SIGMA = 0.658
BLINK_INTERVAL_MIN = 0.75  # the shortest measured interval was 0.77 s
BLINK_INTERVAL_MAX = 12.0
BLINK_CLOSE = 0.089  # s, 10 % -> peak
BLINK_OPEN = 0.117  # s, peak -> 10 %
BLINK_DEPTH = (0.7, 0.95)  # uniform range of a blink's depth (see the module docstring)
BLINK_JITTER = 0.25  # sigma of ln(duration) around those medians (p10/p90 spread of the takes)
# a smoothstep spends 20 % of its time below 10 %: stretch so the 10 %..peak part matches
_SMOOTH_10 = 0.196

# measured from the EyeLook channels (tools/measure_saccades.py, see runtime.animate.gaze)
SACCADE_INTERVAL_MU = gaze.SACCADE_INTERVAL_MU  # ln seconds between gaze shifts
SACCADE_INTERVAL_SIGMA = gaze.SACCADE_INTERVAL_SIGMA
SACCADE_RECENTRE = 0.15  # chance a shift goes back to the listener (the centre)
SACCADE_KEEP = 0.8  # AR(1) of the targets: each keeps this much of the last ...
SACCADE_STEP = math.sqrt(1.0 - SACCADE_KEEP ** 2)  # ... plus a step, so the spread stays the measured one
GAZE_DEGREES = gaze.GAZE_SD_YAW  # spread of gaze targets in yaw; pitch a bit smaller
PITCH_SHARE = gaze.GAZE_SD_PITCH / gaze.GAZE_SD_YAW

_BATCH = 64  # events drawn at a time

# signal columns
BLINK, YAW_POS, YAW_NEG, PITCH_POS, PITCH_NEG, HEAD_YAW, HEAD_PITCH, HEAD_ROLL, BREATH = range(9)
N_SIGNALS = 9


def _mix_matrix() -> np.ndarray:
    """float32[61, 8]: additive signals (degrees, breath 0..1) -> channel offsets."""
    m = np.zeros((channels.COUNT, N_SIGNALS - 1), dtype=np.float32)
    ix = channels.INDEX
    deg = 1.0 / 180.0  # rotations are degrees / 180
    look_yaw = 0.8 / 27.0  # the lookleft preset: 0.8 of EyeLookOut/In at 27 degrees of eye yaw
    look_pitch = 0.8 / 21.6  # the lookup preset: 0.8 of EyeLookUp at 21.6 degrees of eye pitch
    c = lambda name: ix[name]  # noqa: E731
    # eye yaw > 0 looks left (as the lookleft preset): left eye out, right eye in
    for col, sign, left, right in ((YAW_POS, 1, "EyeLookOutLeft", "EyeLookInRight"),
                                   (YAW_NEG, -1, "EyeLookInLeft", "EyeLookOutRight")):
        m[c(left), col - 1] = look_yaw
        m[c(right), col - 1] = look_yaw
        m[c("LeftEyeYaw"), col - 1] = sign * deg
        m[c("RightEyeYaw"), col - 1] = sign * deg
    # eye pitch < 0 looks up (as the lookup preset)
    for col, sign, left, right in ((PITCH_POS, 1, "EyeLookDownLeft", "EyeLookDownRight"),
                                   (PITCH_NEG, -1, "EyeLookUpLeft", "EyeLookUpRight")):
        m[c(left), col - 1] = look_pitch
        m[c(right), col - 1] = look_pitch
        m[c("LeftEyePitch"), col - 1] = sign * deg
        m[c("RightEyePitch"), col - 1] = sign * deg
    m[c("HeadYaw"), HEAD_YAW - 1] = deg
    m[c("HeadPitch"), HEAD_PITCH - 1] = deg
    m[c("HeadRoll"), HEAD_ROLL - 1] = deg
    m[c("HeadPitch"), BREATH - 1] = -0.35 * deg  # the head lifts a little on the in-breath
    m[c("JawOpen"), BREATH - 1] = 0.012
    return m


MIX = _mix_matrix()
EYE_BLINK = np.array([channels.INDEX["EyeBlinkLeft"], channels.INDEX["EyeBlinkRight"]])
EYE_WIDE = np.array([channels.INDEX["EyeWideLeft"], channels.INDEX["EyeWideRight"]])
EYE_LOOK = np.array([channels.INDEX[n] for n in channels.NAMES if n.startswith("EyeLook")])
HEAD = np.arange(52, 55)
_LOOK_L, _LOOK_R, _HEAD = slice(1, 5), slice(8, 12), slice(52, 55)  # EyeLook* left/right, head
_BLINK_IX = tuple(EYE_BLINK.tolist())
_WIDE_IX = tuple(EYE_WIDE.tolist())
assert [channels.NAMES[i][:7] for i in (*range(1, 5), *range(8, 12))] == ["EyeLook"] * 8


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Idle:
    """Idle motion for one face. ``seed=None`` draws a fresh face each run."""

    def __init__(self, *, seed: int | None = None, blinks: bool = True, saccades: bool = True,
                 breathing: bool = True, drift: bool = True, gaze_degrees: float = GAZE_DEGREES,
                 drift_degrees: float = 1.5, breaths_per_minute: float = 15.0, asymmetry: float = 1.0,
                 tone: float = 1.0, micro: float = 0.7, coupling: float = 0.4, gaze_intent: bool = True,
                 fps: float = 60.0) -> None:
        self.rng = np.random.default_rng(seed)
        # each life layer draws from its own seed, so switching one off leaves the others the same;
        # drawn off a stream of their own, so a seed still gives the blinks, saccades and drift
        # it gave before these layers existed
        life = np.random.default_rng(None if seed is None else [seed, 0x11FE])
        sub = [int(x) for x in life.integers(2 ** 31, size=3)]
        self.asym = Asymmetry(asymmetry, seed=sub[0], fps=fps)
        symmetric = not self.asym.on  # asymmetry 0: a symmetric rig, every layer mirror-symmetric
        tone_v = capture.load()["tone"].copy()
        if saccades:  # the eyes converge on the listener (measured, runtime.animate.gaze)
            tone_v[[channels.INDEX["EyeLookInLeft"], channels.INDEX["EyeLookInRight"]]] += gaze.VERGENCE
        if symmetric:
            tone_v = 0.5 * (tone_v + tone_v[channels.MIRROR[:channels.SHAPES]])
        self.tone = (tone_v * np.float32(max(tone, 0.0))).astype(np.float32)
        self.micro = Micro(micro, seed=sub[1], symmetric=symmetric)
        self.coupling = Coupling(coupling, symmetric=symmetric)
        self.gaze_intent = gaze_intent
        self._intent_rng = np.random.default_rng(sub[2])
        self._intents = np.zeros((0, 5))
        self._asym_buf = np.zeros(channels.COUNT, dtype=np.float32)
        self.blinks, self.saccades, self.breathing, self.drift = blinks, saccades, breathing, drift
        self.gaze_degrees = gaze_degrees
        # blinks: onset, closing time, opening time, depth
        self._b_on = np.empty(0)
        self._b_close = np.empty(0)
        self._b_open = np.empty(0)
        self._b_depth = np.empty(0)
        # saccades: onset, duration, target yaw/pitch (degrees); index 0 is the start (centre)
        self._s_on = np.array([-1e9])
        self._s_dur = np.array([0.03])
        self._s_yaw = np.zeros(1)
        self._s_pitch = np.zeros(1)
        self._extend_blinks(0.0)
        self._extend_saccades(0.0)
        # drift: three sines per axis at slow, unrelated frequencies; sum scaled to the given std
        self._d_freq = self.rng.uniform(0.02, 0.12, (3, 3))
        self._d_phase = self.rng.uniform(0, 2 * np.pi, (3, 3))
        amp = self.rng.uniform(0.5, 1.0, (3, 3))
        axis = np.array([[1.0], [0.7], [0.5]]) * drift_degrees  # yaw > pitch > roll
        self._d_amp = axis * amp / np.sqrt(0.5 * (amp ** 2).sum(axis=1, keepdims=True))
        self._breath_f = breaths_per_minute / 60.0 * self.rng.uniform(0.9, 1.1)
        self._breath_phase = self.rng.uniform(0, 2 * np.pi)
        # the per-frame path works on plain floats
        self._d_terms = [list(zip(self._d_amp[a].tolist(), (2 * np.pi * self._d_freq[a]).tolist(),
                                  self._d_phase[a].tolist(), strict=True)) for a in range(3)]
        self._add = np.zeros(N_SIGNALS - 1, dtype=np.float32)
        self._mixed = np.zeros(channels.COUNT, dtype=np.float32)

    @classmethod
    def from_config(cls, c, seed: int | None = None, fps: float = 60.0) -> Idle:
        """From an ``[idle]`` config section (:class:`runtime.config.IdleConfig`)."""
        return cls(seed=seed, blinks=c.blinks, saccades=c.saccades, breathing=c.breathing, drift=c.drift,
                   gaze_degrees=c.gaze_degrees, drift_degrees=c.drift_degrees,
                   breaths_per_minute=c.breaths_per_minute, asymmetry=c.asymmetry, tone=c.tone,
                   micro=c.micro, coupling=c.coupling, gaze_intent=c.gaze_intent, fps=fps)

    @staticmethod
    def times(n: int, fps: float) -> np.ndarray:
        """Times of an offline take's n frames."""
        return np.arange(n) / float(fps)

    def plan_speech(self, t0: float, plan) -> None:
        """A line spoken from time t0 (its words in ``plan``, a SpeechPlan or None): the eyes leave
        the listener as its thoughts begin and come back as they end. Cheap (the words of one
        line); events more than 10 s old are dropped."""
        # a voice that streams in (audio.LiveSpeech) has no words yet: the eyes keep their idle way
        words = getattr(plan, "words", None)
        if not self.gaze_intent or not words or not self.saccades:
            return
        ev = gaze.intents(words, self._intent_rng, t0)
        keep = self._intents[:, 1] > t0 - 10.0
        self._intents = np.r_[self._intents[keep], ev]
        self._intent_list = self._intents.tolist()

    _intent_list: list = []

    def _gaze1(self, t: float, yaw: float, pitch: float) -> tuple[float, float]:
        keep, dy, dp = 1.0, 0.0, 0.0
        for on, off, y, p, focus in self._intent_list:
            if t <= on or t >= off + gaze.RAMP:
                continue
            a = min((t - on) / gaze.RAMP, 1.0)
            b = min(max((t - off) / gaze.RAMP, 0.0), 1.0)
            env = a * a * (3 - 2 * a) * (1.0 - b * b * (3 - 2 * b))
            keep -= focus * env
            dy += env * y
            dp += env * p
        keep = min(max(keep, 0.0), 1.0)
        return yaw * keep + dy, pitch * keep + dp

    def _compose1(self, e: np.ndarray, t: float, out: np.ndarray | None) -> np.ndarray:
        """:meth:`compose` for one frame (the frame clock's path): scalar maths, a handful of
        small array ops over the 61 channels."""
        sig = self.signals1(t)
        look = max(float(e[_LOOK_L].max()), float(e[_LOOK_R].max()))
        if look > 0.0:
            g = 1.0 - min(look / 0.3, 1.0)
            for k in range(YAW_POS, PITCH_NEG + 1):
                sig[k] *= g
        head = e[_HEAD]
        head = max(float(head.max()), -float(head.min()))
        if head > 0.0:
            g = 1.0 - 0.5 * min(head / 0.05, 1.0)
            for k in range(HEAD_YAW, HEAD_ROLL + 1):
                sig[k] *= g
        res = out if out is not None else np.empty(channels.COUNT, dtype=np.float32)
        x = self.asym.step(e, self._asym_buf) if self.asym.on else e
        self._add[:] = sig[1:]
        np.dot(MIX, self._add, out=self._mixed)
        np.add(x, self._mixed, out=res)
        s = res[:channels.SHAPES]
        s += self.tone * (1.0 - s)
        if self.micro.on:
            s += self.micro.sample1(t)
        b = sig[BLINK]
        if b > 0.0:
            for j in _BLINK_IX:
                v = float(res[j])
                res[j] = v + (1.0 - v) * b
            for j in _WIDE_IX:
                res[j] = float(res[j]) * (1.0 - b)
        np.clip(res, channels.LOW, channels.HIGH, out=res)
        if self.coupling.on:
            self.coupling.apply(res, out=res)
        return res

    # schedules ----------------------------------------------------------------------------------
    def _extend_blinks(self, until: float) -> None:
        while not len(self._b_on) or self._b_on[-1] <= until + BLINK_INTERVAL_MAX:
            r = self.rng
            close = BLINK_CLOSE * np.exp(r.normal(0, BLINK_JITTER, _BATCH)) / (1 - _SMOOTH_10)
            opening = BLINK_OPEN * np.exp(r.normal(0, BLINK_JITTER, _BATCH)) / (1 - _SMOOTH_10)
            gap = np.clip(np.exp(r.normal(BLINK_INTERVAL_MU, BLINK_INTERVAL_SIGMA, _BATCH)),
                          BLINK_INTERVAL_MIN, BLINK_INTERVAL_MAX)
            gap = np.maximum(gap, close + opening + 0.1)  # blinks never overlap
            # the first blink falls anywhere in the first interval, as if the face had blinked
            # before the take began (a first blink within 2 s made short takes blink too often)
            start = self._b_on[-1] if len(self._b_on) else -r.uniform(0.0, 1.0) * gap[0]
            self._b_on = np.r_[self._b_on, start + np.cumsum(gap)]
            self._b_close = np.r_[self._b_close, close]
            self._b_open = np.r_[self._b_open, opening]
            self._b_depth = np.r_[self._b_depth, r.uniform(*BLINK_DEPTH, _BATCH)]
        self._b_list = [x.tolist() for x in (self._b_on, self._b_close, self._b_open, self._b_depth)]

    def _extend_saccades(self, until: float) -> None:
        while self._s_on[-1] <= until + 10.0:
            r = self.rng
            gap = np.clip(np.exp(r.normal(SACCADE_INTERVAL_MU, SACCADE_INTERVAL_SIGMA, _BATCH)),
                          gaze.SACCADE_INTERVAL_MIN, gaze.SACCADE_INTERVAL_MAX)
            g = self.gaze_degrees
            # targets wander (AR(1) with the measured spread), so most shifts are small, as in
            # capture (median 0.11 EyeLook units), and now and then they go back to the listener
            step_y = r.normal(0, g, _BATCH) * SACCADE_STEP
            step_p = r.normal(0, PITCH_SHARE * g, _BATCH) * SACCADE_STEP
            home = r.random(_BATCH) < SACCADE_RECENTRE
            yaw, pitch = np.empty(_BATCH), np.empty(_BATCH)
            y0, p0 = float(self._s_yaw[-1]), float(self._s_pitch[-1])
            for i in range(_BATCH):  # a batch of 64 events now and then, never per frame
                keep = 0.15 if home[i] else SACCADE_KEEP
                y0, p0 = keep * y0 + step_y[i], keep * p0 + step_p[i]
                yaw[i], pitch[i] = y0, p0
            yaw = np.clip(yaw, -2.5 * g, 2.5 * g)
            pitch = np.clip(pitch, -2.0 * g * PITCH_SHARE, 2.0 * g * PITCH_SHARE)
            prev_yaw = np.r_[self._s_yaw[-1], yaw[:-1]]
            prev_pitch = np.r_[self._s_pitch[-1], pitch[:-1]]
            amplitude = np.hypot(yaw - prev_yaw, pitch - prev_pitch)
            start = max(self._s_on[-1], 0.0)
            self._s_on = np.r_[self._s_on, start + np.cumsum(gap)]
            self._s_dur = np.r_[self._s_dur, 0.021 + 0.0022 * amplitude]  # main sequence
            self._s_yaw = np.r_[self._s_yaw, yaw]
            self._s_pitch = np.r_[self._s_pitch, pitch]
        self._s_list = [x.tolist() for x in (self._s_on, self._s_dur, self._s_yaw, self._s_pitch)]

    # signals ------------------------------------------------------------------------------------
    def signals(self, t: np.ndarray | float) -> np.ndarray:
        """float64[n, 9] at times t (seconds): blink 0..1, gaze yaw+/yaw-/pitch+/pitch- and head
        yaw/pitch/roll in degrees, breath 0..1."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.zeros((len(t), N_SIGNALS))
        if not len(t):
            return out
        tmax = float(t.max())
        if self.blinks:
            self._extend_blinks(tmax)
            k = np.searchsorted(self._b_on, t, side="right") - 1
            ok = k >= 0
            kk = np.maximum(k, 0)
            u = t - self._b_on[kk]
            c, o = self._b_close[kk], self._b_open[kk]
            closing = _smooth(u / c)
            opening = 1.0 - _smooth((u - c) / o)
            shape = np.where(u < c, closing, opening)
            out[:, BLINK] = np.where(ok & (u >= 0), shape * self._b_depth[kk], 0.0)
        if self.saccades:
            self._extend_saccades(tmax)
            k = np.maximum(np.searchsorted(self._s_on, t, side="right") - 1, 0)
            prev = np.maximum(k - 1, 0)
            s = _smooth((t - self._s_on[k]) / self._s_dur[k])
            yaw = self._s_yaw[prev] + (self._s_yaw[k] - self._s_yaw[prev]) * s
            pitch = self._s_pitch[prev] + (self._s_pitch[k] - self._s_pitch[prev]) * s
            yaw, pitch = gaze.apply(self._intents, t, yaw, pitch)
            out[:, YAW_POS] = np.maximum(yaw, 0.0)
            out[:, YAW_NEG] = np.maximum(-yaw, 0.0)
            out[:, PITCH_POS] = np.maximum(pitch, 0.0)
            out[:, PITCH_NEG] = np.maximum(-pitch, 0.0)
        if self.drift:
            arg = 2 * np.pi * self._d_freq[None] * t[:, None, None] + self._d_phase[None]
            out[:, HEAD_YAW:HEAD_ROLL + 1] = (self._d_amp[None] * np.sin(arg)).sum(axis=2)
        if self.breathing:
            out[:, BREATH] = 0.5 - 0.5 * np.cos(2 * np.pi * self._breath_f * t + self._breath_phase)
        return out

    def signals1(self, t: float) -> list[float]:
        """:meth:`signals` at one time, with scalar maths: the per-frame path."""
        out = [0.0] * N_SIGNALS
        if self.blinks:
            if t > self._b_on[-1] - BLINK_INTERVAL_MAX:
                self._extend_blinks(t)
            k = bisect.bisect_right(self._b_list[0], t) - 1
            if k >= 0:
                on, c, o, depth = (x[k] for x in self._b_list)
                u = t - on
                x = u / c if u < c else 1.0 - (u - c) / o
                if x > 0.0:
                    x = min(x, 1.0)
                    out[BLINK] = x * x * (3.0 - 2.0 * x) * depth
        if self.saccades:
            if t > self._s_on[-1] - 10.0:
                self._extend_saccades(t)
            on, dur, yaws, pitches = self._s_list
            k = max(bisect.bisect_right(on, t) - 1, 0)
            prev = max(k - 1, 0)
            x = min(max((t - on[k]) / dur[k], 0.0), 1.0)
            s = x * x * (3.0 - 2.0 * x)
            yaw = yaws[prev] + (yaws[k] - yaws[prev]) * s
            pitch = pitches[prev] + (pitches[k] - pitches[prev]) * s
            if self._intent_list:
                yaw, pitch = self._gaze1(t, yaw, pitch)
            out[YAW_POS], out[YAW_NEG] = max(yaw, 0.0), max(-yaw, 0.0)
            out[PITCH_POS], out[PITCH_NEG] = max(pitch, 0.0), max(-pitch, 0.0)
        if self.drift:
            for axis, terms in enumerate(self._d_terms):
                out[HEAD_YAW + axis] = sum(a * math.sin(w * t + ph) for a, w, ph in terms)
        if self.breathing:
            out[BREATH] = 0.5 - 0.5 * math.cos(2 * math.pi * self._breath_f * t + self._breath_phase)
        return out

    def compose(self, expr: np.ndarray, t: np.ndarray | float, out: np.ndarray | None = None) -> np.ndarray:
        """Expression pose(s) float32[61] or [n, 61] plus idle motion at time(s) t -> out."""
        e = np.asarray(expr, dtype=np.float32)
        single = e.ndim == 1
        if single and np.ndim(t) == 0:
            return self._compose1(e, float(t), out)
        e2 = e[None] if single else e
        sig = self.signals(t)
        if len(sig) == 1 and len(e2) > 1:
            sig = np.repeat(sig, len(e2), axis=0)
        # the line owns the gaze while it looks somewhere, and mostly owns the head while it moves it
        gaze_free = 1.0 - np.clip(e2[:, EYE_LOOK].max(axis=1) / 0.3, 0.0, 1.0)
        head_free = 1.0 - 0.5 * np.clip(np.abs(e2[:, HEAD]).max(axis=1) / 0.05, 0.0, 1.0)
        add = sig[:, 1:].copy()
        add[:, YAW_POS - 1:PITCH_NEG] *= gaze_free[:, None]
        add[:, HEAD_YAW - 1:HEAD_ROLL] *= head_free[:, None]
        x = self.asym.apply(e2) if self.asym.on else e2
        res = x + (add @ MIX.T).astype(np.float32)
        s = res[:, :channels.SHAPES]
        s += self.tone * (1.0 - s)
        if self.micro.on:
            s += self.micro.sample(np.broadcast_to(np.atleast_1d(t), (len(res),)))
        blink = sig[:, BLINK:BLINK + 1].astype(np.float32)
        res[:, EYE_BLINK] = res[:, EYE_BLINK] + (1.0 - res[:, EYE_BLINK]) * blink
        res[:, EYE_WIDE] = res[:, EYE_WIDE] * (1.0 - blink)
        np.clip(res, channels.LOW, channels.HIGH, out=res)
        if self.coupling.on:
            for a in range(0, len(res), 256):  # bounded scratch: [256, 52, 52] at a time
                self.coupling.apply(res[a:a + 256], out=res[a:a + 256])
        res = res[0] if single else res
        if out is None:
            return res
        out[...] = res
        return out
