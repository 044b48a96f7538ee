"""Learned in-betweens: an ONNX network that reshapes each segment of the monotone cubic.

The network sees one segment (its two keys, their tangents, its length) plus at most one key on
each side of it, which is all a streaming runtime knows. For each of the 52 blendshapes and the 6
eye rotations it can predict (tools/train_interpolator.py chooses which; the model card says what
was shipped):

- a monotone warp of the phase (softmax weights of equal bins, so w(0) = 0, w(1) = 1) at which the
  base curve is read: it retimes the motion the keys show (a blink that closes late and fast, an
  ease that starts early) but cannot invent motion in a segment whose keys show none;
- a lean of the base from the monotone cubic toward the straight line (a convex blend);
- a residual as a few sine coefficients (zero at both keys), squashed by tanh into (-1, 1) and
  applied as a fraction of the room left to the channel's bound: ``base + r * (1 - base)`` for
  r > 0, ``base + r * base`` for r < 0;
- and segments longer than a set length fade to the straight line, read at one learned monotone
  warp of the phase (motion after a key starts at once and settles); as exported, the learned
  deviation from that line may also shrink with the segment's length (the model card says how).

Both base curves stay in [0, 1] at any phase and every step is a convex blend or a fraction of
the room to the bound, so every output lies in [0, 1] by construction. The network sees and
writes each channel as a fraction of its range, so the eye rotations it shapes stay in theirs;
head rotation (52..54) keeps the spline.

The model runs once per segment on a phase grid (GRID_HZ points per second); each frame then
reads the grid with a linear blend, so the per-frame cost is a few microseconds.

Status: the shipped model learns from two people (issue 19). With a person left out (trained on
one, judged on the other) it is 1.6-2.3% below the best spline with salient keys and 1.9-3.7%
with uniform ones, pooled per person, and worse than the best spline by more than 1% on 3 of 15
takes: short of the 5% the project asks before making it the default
(exported_models/interpolator.json, docs/BENCHMARKS.md), so ``animation.interpolator`` defaults
to "spline".
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from numba import njit

from runtime import channels
from runtime.animate.spline import hermite, tangents
from runtime.animate.timeline import Interpolator, SplineSegment

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "exported_models" / "interpolator.onnx"

# The channels the network shapes: the 52 blendshapes and the eye rotations (the eyes move with
# EyeLook*, saccade-like, and the learned retiming helps them as much). Head rotation keeps the
# spline: the capture it learns from has none. Values enter the network as a fraction of each
# channel's range, so every output channel lies in [0, 1] and maps back into its own range.
SHAPED = np.r_[np.arange(channels.SHAPES), np.arange(channels.LEFT_EYE.start, channels.COUNT)]
C = len(SHAPED)  # 58
LOW = channels.LOW[SHAPED].astype(np.float64)
SPAN = (channels.HIGH - channels.LOW)[SHAPED].astype(np.float64)
FEATURE_VERSION = 2
# features: y0, y1, m0*h, m1*h, y0 - y_prev, y_next - y1 (C each, as fractions of the range),
# then 5 scalars
BLOCKS = 6
SCALARS = 5
FEATURES = BLOCKS * C + SCALARS
H_MIN, H_MAX = 0.02, 4.0  # segment lengths the model tells apart (seconds)
GRID_HZ = 120.0  # phase grid density; frames blend linearly between grid points
INPUTS = ("features", "phase")
OUTPUT = "pose"


def to_unit(v: np.ndarray) -> np.ndarray:
    """Full frames [..., 61] -> the shaped channels as fractions of their range [..., C]."""
    return (np.asarray(v)[..., SHAPED] - LOW) / SPAN


def from_unit(u: np.ndarray) -> np.ndarray:
    """The network's [..., C] in [0, 1] -> values in each shaped channel's own range."""
    return LOW + SPAN * u


def features(h: np.ndarray, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray, m1: np.ndarray,
             dt_prev: np.ndarray, y_prev: np.ndarray, has_prev: np.ndarray,
             dt_next: np.ndarray, y_next: np.ndarray, has_next: np.ndarray) -> np.ndarray:
    """Segment features, float32[S, FEATURES], for S segments at once (training and runtime).

    Shapes: h, dt_*, has_* are [S]; values and tangents (per second) are full frames [S, 61]. A
    missing neighbour has has_* = 0 (its other inputs are then ignored). Everything is in seconds
    and phase, never frames, so takes at any frame rate look the same.
    """
    h = np.clip(np.asarray(h, dtype=np.float64), 1e-3, 60.0)[:, None]
    hp = np.asarray(has_prev, dtype=np.float64)[:, None]
    hn = np.asarray(has_next, dtype=np.float64)[:, None]
    y0, y1 = to_unit(y0), to_unit(y1)
    f = np.empty((h.shape[0], FEATURES), dtype=np.float32)
    f[:, 0 * C:1 * C] = y0
    f[:, 1 * C:2 * C] = y1
    f[:, 2 * C:3 * C] = np.asarray(m0)[:, SHAPED] / SPAN * h
    f[:, 3 * C:4 * C] = np.asarray(m1)[:, SHAPED] / SPAN * h
    f[:, 4 * C:5 * C] = (y0 - to_unit(y_prev)) * hp
    f[:, 5 * C:6 * C] = (to_unit(y_next) - y1) * hn
    rp = np.log(np.clip(np.asarray(dt_prev, dtype=np.float64)[:, None], 1e-3, 60.0) / h)
    rn = np.log(np.clip(np.asarray(dt_next, dtype=np.float64)[:, None], 1e-3, 60.0) / h)
    s = BLOCKS * C
    f[:, s] = np.log(np.clip(h[:, 0], H_MIN, H_MAX))  # longer holds all look alike
    f[:, s + 1] = hp[:, 0]
    f[:, s + 2] = hn[:, 0]
    f[:, s + 3] = np.clip(rp[:, 0], -4, 4) * hp[:, 0]
    f[:, s + 4] = np.clip(rn[:, 0], -4, 4) * hn[:, 0]
    return f


def phase_grid(h: float) -> np.ndarray:
    n = max(2, int(math.ceil(h * GRID_HZ))) + 1
    return np.linspace(0.0, 1.0, n, dtype=np.float32)


@njit(cache=True)
def _prepare(h: float, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray, m1: np.ndarray,
             dtp: float, yp: np.ndarray, hasp: float, dtn: float, yn: np.ndarray, hasn: float,
             s: np.ndarray, feat: np.ndarray, grid: np.ndarray) -> None:
    """One segment at runtime: ``features`` (row 0 of feat) and the spline on the phase grid,
    without numpy's per-call overhead. Must agree with ``features`` (tests check)."""
    hc = min(max(h, 1e-3), 60.0)
    for c in range(C):
        j, lo, sp = SHAPED[c], LOW[c], SPAN[c]
        a, b = (y0[j] - lo) / sp, (y1[j] - lo) / sp
        feat[0, c] = a
        feat[0, C + c] = b
        feat[0, 2 * C + c] = m0[j] / sp * hc
        feat[0, 3 * C + c] = m1[j] / sp * hc
        feat[0, 4 * C + c] = (a - (yp[j] - lo) / sp) * hasp
        feat[0, 5 * C + c] = ((yn[j] - lo) / sp - b) * hasn
    k = BLOCKS * C
    feat[0, k] = math.log(min(max(h, H_MIN), H_MAX))
    feat[0, k + 1] = hasp
    feat[0, k + 2] = hasn
    feat[0, k + 3] = min(max(math.log(min(max(dtp, 1e-3), 60.0) / hc), -4.0), 4.0) * hasp
    feat[0, k + 4] = min(max(math.log(min(max(dtn, 1e-3), 60.0) / hc), -4.0), 4.0) * hasn
    for i in range(s.shape[0]):
        hermite(y0, y1, m0, m1, h, float(s[i]), grid[i])  # the spline's own kernel: the residual's base


@njit(cache=True)
def _lerp_rows(grid: np.ndarray, x: float, out: np.ndarray) -> None:
    n = grid.shape[0] - 1
    x = min(max(x, 0.0), 1.0) * n
    i = min(int(x), n - 1)
    f = x - i
    for c in range(grid.shape[1]):
        out[c] = grid[i, c] + f * (grid[i + 1, c] - grid[i, c])


class LearnedSegment:
    """One segment, precomputed on a phase grid; ``at`` blends the two nearest grid rows."""

    __slots__ = ("t0", "h", "grid")

    def __init__(self, t0: float, t1: float, grid: np.ndarray) -> None:
        self.t0, self.h, self.grid = t0, t1 - t0, grid

    def at(self, t: float, out: np.ndarray) -> None:
        _lerp_rows(self.grid, (t - self.t0) / self.h, out)


def _providers(ort) -> list[str]:
    return (["CUDAExecutionProvider", "CPUExecutionProvider"]
            if "CUDAExecutionProvider" in ort.get_available_providers() else ["CPUExecutionProvider"])


class LearnedInterpolator(Interpolator):
    """In-betweens from the ONNX model; the spline when the model cannot be used."""

    name = "learned"

    def __init__(self, path: str | Path | None = None, providers: list[str] | None = None) -> None:
        self.path = Path(path) if path else DEFAULT_MODEL
        self.session = None
        self.provider = ""
        try:
            self.session, self.provider = self._load(providers)
        except Exception as e:  # missing, truncated, wrong shape, no onnxruntime: play the spline
            self.name = "monotone_cubic"
            log.warning("learned interpolator unavailable (%s: %s); using the spline",
                        self.path, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return
        log.info("learned interpolator %s on %s", self.path.name, self.provider)
        z = np.zeros(channels.COUNT)
        self.segment(0.0, 0.5, z, z, z, z, None, None).at(0.25, z)  # compile the kernels now

    def _load(self, providers: list[str] | None):
        import onnxruntime as ort

        if not self.path.is_file():
            raise FileNotFoundError("no such file")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # one tiny call per segment: threads only add latency
        ort.set_default_logger_severity(4)  # a missing CUDA library is expected on CPU machines
        try:
            sess = ort.InferenceSession(str(self.path), so, providers=providers or _providers(ort))
        finally:
            ort.set_default_logger_severity(2)
        names = [i.name for i in sess.get_inputs()]
        shape = sess.get_inputs()[0].shape
        if tuple(names) != INPUTS or shape[-1] != FEATURES:
            raise ValueError(f"inputs {names} {shape} do not match features v{FEATURE_VERSION} "
                             f"({FEATURES} values)")
        card = self.path.with_suffix(".json")
        if card.is_file():
            v = json.loads(card.read_text()).get("features", {}).get("version", FEATURE_VERSION)
            if v != FEATURE_VERSION:
                raise ValueError(f"model card says features v{v}, runtime has v{FEATURE_VERSION}")
        provider = sess.get_providers()[0]  # what really runs, not what was asked for
        # one real call now: a broken graph fails here, not on the first frame
        sess.run(None, {"features": np.zeros((1, FEATURES), np.float32),
                        "phase": np.linspace(0, 1, 5, dtype=np.float32)})
        return sess, provider

    def segment(self, t0: float, t1: float, y0: np.ndarray, y1: np.ndarray, m0: np.ndarray,
                m1: np.ndarray, prev: tuple[float, np.ndarray] | None,
                nxt: tuple[float, np.ndarray] | None):
        if self.session is None:
            return SplineSegment(t0, t1, y0, y1, m0, m1)
        h = t1 - t0
        s = phase_grid(h)
        f = np.empty((1, FEATURES), dtype=np.float32)
        grid = np.empty((len(s), len(y0)))  # head rotation stays on the spline
        _prepare(h, y0, y1, m0, m1, t0 - prev[0] if prev else h, prev[1] if prev else y0,
                 1.0 if prev else 0.0, nxt[0] - t1 if nxt else h, nxt[1] if nxt else y1,
                 1.0 if nxt else 0.0, s, f, grid)
        try:
            grid[:, SHAPED] = from_unit(self.session.run(None, {"features": f, "phase": s})[0][0])
        except Exception as e:  # never stop the stream: this segment plays the spline
            log.warning("learned interpolator failed on a segment (%s); using the spline", e)
            return SplineSegment(t0, t1, y0, y1, m0, m1)
        return LearnedSegment(t0, t1, grid)


def load_interpolator(kind: str, path: str | Path | None = None) -> Interpolator:
    """``"spline"`` (monotone cubic) or ``"learned"`` (ONNX, falling back to the spline)."""
    if kind == "spline":
        return Interpolator()
    if kind == "learned":
        return LearnedInterpolator(path)
    raise ValueError(f"unknown interpolator {kind!r} (expected 'spline' or 'learned')")


def render_offline(interp: Interpolator, times: np.ndarray, values: np.ndarray,
                   query: np.ndarray) -> np.ndarray:
    """Play a whole key list through ``interp`` at sorted query times, as the timeline would
    with every key known in time: FC tangents (zero at both ends), one key either side.

    Not clamped, so evaluation sees exactly what the interpolator makes.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    m = tangents(times, values)
    out = np.empty((len(query), values.shape[1]), dtype=np.float64)
    seg = np.clip(np.searchsorted(times, query, side="right") - 1, 0, len(times) - 2)
    tmp = np.empty(values.shape[1])
    bounds = np.flatnonzero(np.diff(seg)) + 1  # query is sorted, so seg is too
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(seg)]):
        j = int(seg[lo])
        prev = (times[j - 1], values[j - 1]) if j > 0 else None
        nxt = (times[j + 2], values[j + 2]) if j + 2 < len(times) else None
        sg = interp.segment(times[j], times[j + 1], values[j], values[j + 1], m[j], m[j + 1], prev,
                            nxt)
        for i in range(lo, hi):
            sg.at(float(query[i]), tmp)
            out[i] = tmp
    before, after = query <= times[0], query >= times[-1]
    out[before], out[after] = values[0], values[-1]
    return out

