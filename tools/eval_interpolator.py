"""How well does each interpolator rebuild real face capture from a few keys?

    python tools/eval_interpolator.py [--recordings DIR] [--take NAME ...] [--json] [--plot PNG]

Every Live Link Face CSV under DIR (recursively) is read with the runtime's own reader (columns by
name, times from the timecode, values clamped; the ``BlendShapeCount`` column is read by position,
whatever its spelling); tracking-loss rows and time gaps over 0.25 s split a take into runs, and
each run is judged on its own. Times come from the timecode, never the row number: 30 Hz takes
(frames stepping by 2 of a 60-per-second timecode), true 60 Hz takes, and takes whose timecode
counts another rate (its frame field never passing 23, 24, 29 or 49: read at that rate) all play
in seconds; a row whose time does not advance is dropped. The folder a take lies in names its
person (``--person-models``, per-person rows). Keys are chosen by one fixed rule, the same
for every method, and always include both ends of a run:

- salient: Ramer–Douglas–Peucker over the multichannel curve, run by error (the sample farthest,
  in Euclidean distance over all channels, from the straight line between its neighbouring keys
  becomes a key next) until the run has round(2 * seconds) + 1 keys: 2 keys per second, on the
  curve's corners and extremes;
- uniform: the sample nearest every 0.5 s from the run's start.

The methods rebuild every frame from the keys: linear; Catmull-Rom (Hermite with tangent
(y[k+1] - y[k-1]) / (t[k+1] - t[k-1]), one-sided at the ends: it overshoots); monotone_cubic (the
runtime's spline, Fritsch–Carlson with zero end tangents); learned (the ONNX interpolator, played
exactly as the timeline plays it; the spline again if the model is missing). Scores are pooled over
non-key frames and the take's live channels (those that move at all: a calibrated export's
constant-zero channels, or head rotation streamed off, are not scored): RMSE, mean absolute velocity
error (units per second, central differences), and overshoot (fraction of samples outside the
channel's range; reconstructions are scored unclamped). ``rmse``, ``velocity_error`` and
``overshoot`` use the salient keys, ``rmse_uniform`` the uniform ones; ``frames`` counts the valid
frames read. The same sums are also kept per channel group (blendshapes, eye rotation, head
rotation) so that a take with head or eye motion shows what each method does on those channels.
With ``--json`` the last line printed is that one JSON object.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import channels  # noqa: E402
from runtime.animate.learned import DEFAULT_MODEL, LearnedInterpolator, render_offline  # noqa: E402
from runtime.animate.spline import monotone_cubic  # noqa: E402
from runtime.sinks.csv import TakeError, read_take  # noqa: E402

log = logging.getLogger("eval_interpolator")

METHODS = ("linear", "catmull_rom", "monotone_cubic", "learned")
SPLINES = METHODS[:3]
RULES = ("salient", "uniform")
KEYS_PER_SECOND = 2.0
UNIFORM_STEP = 0.5
MAX_GAP = 0.25  # seconds without a sample that split a run (dropped frames are ~1/30 s)
DEFAULT_RECORDINGS = ROOT.parent / "shared" / "data" / "recordings"
# channel groups scored apart as well as together: head rotation keeps the spline in the runtime,
# and a take with head motion must show it is not made worse there
GROUPS = {"shapes": np.arange(channels.SHAPES),
          "eyes": np.r_[np.arange(channels.LEFT_EYE.start, channels.LEFT_EYE.stop),
                        np.arange(channels.RIGHT_EYE.start, channels.RIGHT_EYE.stop)],
          "head": np.arange(channels.HEAD.start, channels.HEAD.stop)}
TIMECODE_RATES = (24.0, 25.0, 30.0, 50.0, 60.0)


# runs and keys ----------------------------------------------------------------------------------
@dataclass
class Run:
    take: str
    times: np.ndarray  # float64[n], seconds
    values: np.ndarray  # float64[n, 61]


def find_takes(root: Path, names: list[str] | None = None) -> list[Path]:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".csv" and p.is_file())
    if names:
        paths = [p for p in paths if p.stem in names or p.name in names]
    return paths


def person_of(path: Path) -> str:
    """Whose face a take is: the folder it lies in (shared/data/recordings/<person>/take.csv)."""
    return path.parent.name


def timecode_rate(path: Path) -> float:
    """Frames per second the take's timecode counts (``HH:MM:SS:FF.fff``): Live Link Face counts
    60, whatever the capture rate (30 Hz takes step FF by 2); a timecode whose FF never passes 29
    over several seconds counts 30 (and so on for 24, 25, 50), and reading it at 60 would play
    the take at half speed."""
    ff, secs = [], set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        next(fh, None)
        for line in fh:
            parts = line.split(",", 1)[0].split(":")
            if len(parts) != 4:
                continue
            try:
                ff.append(float(parts[3]))
            except ValueError:
                continue
            secs.add(parts[2])
    if len(secs) < 3 or not ff:  # too short to tell: the app's own rate
        return 60.0
    top = int(max(ff)) + 1
    return next((r for r in TIMECODE_RATES if top <= r), 60.0)


def runs_of(path: Path) -> list[Run]:
    """The take's stretches of valid, closely spaced frames (at least 3 frames each)."""
    rate = timecode_rate(path)
    if rate != 60.0:
        log.info("%s: timecode counts %g frames a second", path.name, rate)
    take = read_take(path, fps=rate)
    idx = np.flatnonzero(take.valid)
    if len(idx) == 0:
        return []
    # a row whose time does not advance (a repeated timecode) has no place on the time axis
    keep = np.r_[True, np.diff(take.times[idx]) > 1e-6]
    if not keep.all():
        log.warning("%s: dropping %d rows whose time does not advance", path.name,
                    int((~keep).sum()))
        while not keep.all():  # against the last kept row, not merely the previous one
            idx = idx[keep]
            keep = np.r_[True, np.diff(take.times[idx]) > 1e-6]
    lost = np.cumsum(~take.valid)  # a tracking-loss row between two kept rows splits them
    split = (np.diff(lost[idx]) > 0) | (np.diff(take.times[idx]) > MAX_GAP)
    runs = []
    for g in np.split(idx, np.flatnonzero(split) + 1):
        if len(g) >= 3:
            runs.append(Run(path.stem, take.times[g], take.values[g].astype(np.float64)))
    return runs


def _chord_error(t: np.ndarray, v: np.ndarray, a: int, b: int) -> tuple[float, int]:
    """Farthest sample strictly between a and b from the straight line a-b."""
    if b - a < 2:
        return 0.0, -1
    w = ((t[a + 1:b] - t[a]) / (t[b] - t[a]))[:, None]
    d = np.linalg.norm(v[a + 1:b] - ((1 - w) * v[a] + w * v[b]), axis=1)
    i = int(np.argmax(d))
    return float(d[i]), a + 1 + i


def salient_keys(t: np.ndarray, v: np.ndarray, per_second: float = KEYS_PER_SECOND) -> np.ndarray:
    """RDP by error until round(per_second * seconds) + 1 keys (indices, sorted)."""
    n = len(t)
    want = min(n, max(2, int(round(per_second * (t[-1] - t[0]))) + 1))
    keys = {0, n - 1}
    heap: list[tuple[float, int, int, int]] = []
    e, i = _chord_error(t, v, 0, n - 1)
    heap.append((-e, 0, n - 1, i))
    while len(keys) < want and heap:
        e, a, b, i = heapq.heappop(heap)
        if i < 0:
            continue
        keys.add(i)
        for lo, hi in ((a, i), (i, b)):
            ee, ii = _chord_error(t, v, lo, hi)
            heapq.heappush(heap, (-ee, lo, hi, ii))
    return np.array(sorted(keys))


def uniform_keys(t: np.ndarray, step: float = UNIFORM_STEP) -> np.ndarray:
    targets = np.arange(t[0], t[-1], step)
    idx = np.clip(np.searchsorted(t, targets), 1, len(t) - 1)
    idx -= (targets - t[idx - 1]) < (t[idx] - targets)  # nearest sample
    return np.unique(np.r_[0, idx, len(t) - 1])


def keys_for(rule: str, run: Run) -> np.ndarray:
    return salient_keys(run.times, run.values) if rule == "salient" else uniform_keys(run.times)


# reconstructions --------------------------------------------------------------------------------
def linear(kt: np.ndarray, kv: np.ndarray, q: np.ndarray) -> np.ndarray:
    j = np.clip(np.searchsorted(kt, q, side="right") - 1, 0, len(kt) - 2)
    w = np.clip((q - kt[j]) / (kt[j + 1] - kt[j]), 0.0, 1.0)[:, None]
    return (1 - w) * kv[j] + w * kv[j + 1]


def catmull_rom(kt: np.ndarray, kv: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = np.empty_like(kv)
    m[1:-1] = (kv[2:] - kv[:-2]) / (kt[2:] - kt[:-2])[:, None]
    m[0] = (kv[1] - kv[0]) / (kt[1] - kt[0])
    m[-1] = (kv[-1] - kv[-2]) / (kt[-1] - kt[-2])
    j = np.clip(np.searchsorted(kt, q, side="right") - 1, 0, len(kt) - 2)
    h = (kt[j + 1] - kt[j])[:, None]
    s = np.clip((q[:, None] - kt[j][:, None]) / h, 0.0, 1.0)
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * kv[j] + (s3 - 2 * s2 + s) * h * m[j]
            + (-2 * s3 + 3 * s2) * kv[j + 1] + (s3 - s2) * h * m[j + 1])


def reconstruct(method: str, kt: np.ndarray, kv: np.ndarray, q: np.ndarray,
                learned: LearnedInterpolator | None) -> np.ndarray:
    if method == "linear":
        return linear(kt, kv, q)
    if method == "catmull_rom":
        return catmull_rom(kt, kv, q)
    if method == "monotone_cubic":
        return monotone_cubic(kt, kv, q).astype(np.float64)
    if method == "learned":
        return render_offline(learned, kt, kv, q)
    raise ValueError(method)


# scores -----------------------------------------------------------------------------------------
@dataclass
class Sums:
    """Pooled sums for one (take or total, rule, method)."""

    sq: float = 0.0
    vel: float = 0.0
    over: int = 0
    n: int = 0

    def add(self, other: Sums) -> None:
        self.sq += other.sq
        self.vel += other.vel
        self.over += other.over
        self.n += other.n

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self.sq / self.n)) if self.n else float("nan")

    @property
    def velocity(self) -> float:
        return self.vel / self.n if self.n else float("nan")

    @property
    def overshoot(self) -> float:
        return self.over / self.n if self.n else float("nan")


@dataclass
class TakeScore:
    name: str
    frames: int = 0
    seconds: float = 0.0
    keys: dict[str, int] = field(default_factory=dict)
    sums: dict[tuple[str, str], Sums] = field(default_factory=dict)
    # squared error summed by the length of the segment a frame lies in: (rule, method) -> [bins]
    by_length: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    # the same sums per channel group (GROUPS), only for groups with live channels in this take
    groups: dict[tuple[str, str, str], Sums] = field(default_factory=dict)
    person: str = ""


LENGTH_BINS = (0.25, 0.5, 1.0, 2.0)  # segment-length bin edges, seconds (and one bin past the last)


def score_run(run: Run, live: np.ndarray, learned: LearnedInterpolator | None,
              score: TakeScore) -> None:
    t, v = run.times, run.values
    true_vel = np.gradient(v, t, axis=0)
    for rule in RULES:
        k = keys_for(rule, run)
        score.keys[rule] = score.keys.get(rule, 0) + len(k)
        free = np.ones(len(t), dtype=bool)
        free[k] = False
        j = np.clip(np.searchsorted(k, np.flatnonzero(free)) - 1, 0, len(k) - 2)
        length_bin = np.searchsorted(LENGTH_BINS, t[k[j + 1]] - t[k[j]], side="right")
        for method in METHODS:
            y = reconstruct(method, t[k], v[k], t, learned)
            err = (y - v)[free][:, live]
            binned = score.by_length.setdefault((rule, method), np.zeros(len(LENGTH_BINS) + 1))
            binned += np.bincount(length_bin, (err ** 2).sum(axis=1), len(LENGTH_BINS) + 1)
            verr = (np.gradient(y, t, axis=0) - true_vel)[free][:, live]
            yl = y[free][:, live]
            out = (yl < channels.LOW[live] - 1e-6) | (yl > channels.HIGH[live] + 1e-6)
            score.sums.setdefault((rule, method), Sums()).add(
                Sums(float((err ** 2).sum()), float(np.abs(verr).sum()), int(out.sum()), err.size))
            cols = np.flatnonzero(live)
            for g, members in GROUPS.items():
                m = np.isin(cols, members)
                if m.any():
                    score.groups.setdefault((rule, method, g), Sums()).add(
                        Sums(float((err[:, m] ** 2).sum()), float(np.abs(verr[:, m]).sum()),
                             int(out[:, m].sum()), int(err[:, m].size)))


def evaluate(paths: list[Path], learned: LearnedInterpolator | None,
             progress: bool = True, speed: float = 1.0) -> list[TakeScore]:
    """Score every take; ``speed`` > 1 plays the capture that much faster (a quicker face)."""
    scores = []
    for p in paths:
        try:
            runs = runs_of(p)
            if speed != 1.0:
                runs = [Run(r.take, r.times[0] + (r.times - r.times[0]) / speed, r.values)
                        for r in runs]
        except (TakeError, OSError) as e:
            log.warning("skipping %s: %s", p, e)
            continue
        if not runs:
            log.warning("skipping %s: no run of 3 valid frames", p)
            continue
        allv = np.concatenate([r.values for r in runs])
        live = (allv.max(axis=0) - allv.min(axis=0)) > 1e-6
        s = TakeScore(p.stem, frames=sum(len(r.times) for r in runs),
                      seconds=sum(float(r.times[-1] - r.times[0]) for r in runs),
                      person=person_of(p))
        t0 = time.perf_counter()
        for r in runs:
            score_run(r, live, learned, s)
        if progress:
            print(f"  {p.name}: {s.frames} frames, {len(runs)} runs, {int(live.sum())} live channels "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        scores.append(s)
    return scores


def pooled(scores: list[TakeScore]) -> dict[tuple[str, str], Sums]:
    total: dict[tuple[str, str], Sums] = {}
    for s in scores:
        for key, v in s.sums.items():
            total.setdefault(key, Sums()).add(v)
    return total


def summary(scores: list[TakeScore]) -> dict:
    tot = pooled(scores)
    return {
        "rmse": {m: tot[("salient", m)].rmse for m in METHODS},
        "rmse_uniform": {m: tot[("uniform", m)].rmse for m in METHODS},
        "velocity_error": {m: tot[("salient", m)].velocity for m in METHODS},
        "overshoot": {m: tot[("salient", m)].overshoot for m in METHODS},
        "takes": len(scores),
        "frames": sum(s.frames for s in scores),
    }


def gain(sums: dict[tuple[str, str], Sums], rule: str) -> float:
    """Learned RMSE below the best spline, percent (negative: worse)."""
    best = min(sums[(rule, m)].rmse for m in SPLINES)
    return 100.0 * (1.0 - sums[(rule, "learned")].rmse / best)


def group_gain(score: TakeScore, rule: str, group: str, against: str | None = None) -> float | None:
    """Learned RMSE below the best spline (or ``against``) on one channel group of one take,
    percent; None where the take has no live channel in that group (or nothing to lose: the
    spline is exact there)."""
    g = score.groups
    if (rule, "learned", group) not in g:
        return None
    ref = (g[(rule, against, group)].rmse if against else
           min(g[(rule, m, group)].rmse for m in SPLINES))
    if ref <= 0.0:
        return None
    return 100.0 * (1.0 - g[(rule, "learned", group)].rmse / ref)


def pooled_groups(scores: list[TakeScore]) -> dict[tuple[str, str, str], Sums]:
    total: dict[tuple[str, str, str], Sums] = {}
    for s in scores:
        for key, v in s.groups.items():
            total.setdefault(key, Sums()).add(v)
    return total


def people(scores: list[TakeScore]) -> dict[str, list[TakeScore]]:
    out: dict[str, list[TakeScore]] = {}
    for s in scores:
        out.setdefault(s.person, []).append(s)
    return out


def table(scores: list[TakeScore]) -> str:
    """Markdown: RMSE per take and pooled, both key rules, and the learned gain."""
    head = "| take | keys | " + " | ".join(METHODS) + " | learned vs best spline |"
    lines = []
    for rule in RULES:
        lines += [f"\n{rule} keys (RMSE over non-key frames, live channels)\n", head,
                  "|---" * (len(METHODS) + 3) + "|"]
        rows = [(s.name, s.keys.get(rule, 0), s.seconds, s.sums) for s in scores]
        by_person = people(scores)
        if len(by_person) > 1:  # each person pooled, then everyone
            for who, ss in by_person.items():
                rows.append((f"*{who or '.'} pooled*", sum(x.keys.get(rule, 0) for x in ss),
                             sum(x.seconds for x in ss), pooled(ss)))
        rows.append(("**pooled**", sum(r[1] for r in rows[:len(scores)]),
                     sum(r[2] for r in rows[:len(scores)]), pooled(scores)))
        for name, k, secs, sums in rows:
            cells = " | ".join(f"{sums[(rule, m)].rmse:.5f}" for m in METHODS)
            lines.append(f"| {name} | {k} ({k / max(secs, 1e-9):.2f}/s) | {cells} | "
                         f"{gain(sums, rule):+.1f}% |")
    tot = pooled(scores)
    lines += ["\nsalient keys: velocity error (units/s) and overshoot (fraction outside range)\n",
              "| | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|",
              "| velocity error | " + " | ".join(f"{tot[('salient', m)].velocity:.4f}" for m in METHODS)
              + " |",
              "| overshoot | " + " | ".join(f"{tot[('salient', m)].overshoot:.4f}" for m in METHODS)
              + " |"]
    rot = [(s, g) for s in scores for g in ("eyes", "head") if ("salient", "learned", g) in s.groups]
    if rot:  # rotation channels on their own: a take with head motion must not be made worse
        lines += ["\nrotation channels (takes where they move): RMSE, learned vs best spline and vs "
                  "the monotone cubic\n",
                  "| take | group | rule | " + " | ".join(METHODS) + " | vs best spline | vs cubic |",
                  "|---" * (len(METHODS) + 5) + "|"]
        for s, g in rot:
            for rule in RULES:
                cells = " | ".join(f"{s.groups[(rule, m, g)].rmse:.5f}" for m in METHODS)
                vb, vc = group_gain(s, rule, g), group_gain(s, rule, g, "monotone_cubic")
                lines.append(f"| {s.name} | {g} | {rule} | {cells} | "
                             + " | ".join("-" if x is None else f"{x:+.1f}%" for x in (vb, vc))
                             + " |")
    return "\n".join(lines)


def length_table(scores: list[TakeScore]) -> str:
    """Markdown: where the squared error lies by segment length, as shares of the best spline's
    total (pooled over takes): which segments a method gains or loses on."""
    names = [f"< {LENGTH_BINS[0]} s"] + [f"{a}-{b} s" for a, b in zip(LENGTH_BINS, LENGTH_BINS[1:])]
    names.append(f">= {LENGTH_BINS[-1]} s")
    tot = pooled(scores)
    lines = []
    for rule in RULES:
        best = min(SPLINES, key=lambda m: tot[(rule, m)].rmse)
        sums = {m: sum(s.by_length[(rule, m)] for s in scores) for m in METHODS}
        norm = sums[best].sum() or 1.0  # an exact best spline: plain sums
        lines += [f"\n{rule} keys: squared error by segment length, share of {best}'s total\n",
                  "| segment | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{sums[m][i] / norm:.3f}" for m in METHODS) + " |"
                  for i, n in enumerate(names)]
    return "\n".join(lines)


# cost -------------------------------------------------------------------------------------------
def bench(runs: list[Run], learned: LearnedInterpolator, fps: float = 60.0, repeat: int = 3) -> dict:
    """Microseconds per frame playing salient keys through the streaming Track at ``fps``:
    everything the frame clock pays (segment() amortized, at(), the Track's bookkeeping)."""
    from runtime.animate.timeline import Interpolator, Track

    out = {}
    frame = np.zeros(channels.COUNT, dtype=np.float32)
    for name, interp in (("monotone_cubic", Interpolator()), ("learned", learned)):
        best = float("inf")
        for _ in range(repeat):
            n, spent = 0, 0.0
            for r in runs:
                k = salient_keys(r.times, r.values)
                kt = r.times[k] - r.times[0]
                track = Track(r.values[0], interp)
                for t, v in zip(kt[1:], r.values[k[1:]]):
                    track.add(t, v)
                track.finish()
                t0 = time.perf_counter()
                while not track.done:
                    track.advance(1.0 / fps, frame)
                    n += 1
                spent += time.perf_counter() - t0
            best = min(best, spent / n * 1e6)
        out[name] = best
    return out


# plot -------------------------------------------------------------------------------------------
def plot(path: Path, png: Path, channel: str, start: float, seconds: float,
         learned: LearnedInterpolator | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = channels.lookup(channel)
    run = max(runs_of(path), key=lambda r: len(r.times))
    fig, axes = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
    for ax, rule in zip(axes, RULES):
        k = keys_for(rule, run)
        t, v = run.times, run.values
        show = (t >= t[0] + start) & (t <= t[0] + start + seconds)
        ax.plot(t[show], v[show, c], color="black", lw=2.2, label="capture")
        for method in METHODS:
            y = reconstruct(method, t[k], v[k], t, learned)
            ax.plot(t[show], y[show, c], lw=1.1, label=method)
        ks = k[show[k]]
        ax.plot(t[ks], v[ks, c], "o", color="red", ms=5, label="keys")
        ax.set_title(f"{path.stem}: {channels.NAMES[c]}, {rule} keys")
        ax.set_ylabel("value")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # off the curves
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=Path, default=DEFAULT_RECORDINGS,
                    help="folder of Live Link Face CSV takes (searched recursively)")
    ap.add_argument("--take", action="append", help="only this take (file stem); repeatable")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the learned model (.onnx)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON, last line")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="draw one channel of one take")
    ap.add_argument("--channel", default="JawOpen", help="channel to plot")
    ap.add_argument("--plot-take", help="take to plot (default: the first)")
    ap.add_argument("--window", type=float, nargs=2, default=(10.0, 8.0), metavar=("START", "SECONDS"),
                    help="plotted stretch of the take's longest run")
    ap.add_argument("--loo-models", type=Path, metavar="DIR",
                    help="score each take TAKE with DIR/TAKE.onnx instead of --model (the models "
                         "of a `train_interpolator.py --loo DIR` run)")
    ap.add_argument("--person-models", type=Path, metavar="DIR",
                    help="score each take with DIR/PERSON.onnx, PERSON the folder the take lies in "
                         "(the models of a `train_interpolator.py --lopo DIR` run, each trained "
                         "without that person)")
    ap.add_argument("--by-length", action="store_true",
                    help="also show where the error lies by segment length")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="play every take this much faster (0.8: slower) before choosing keys: "
                         "how the methods fare on a quicker or slower face than the capture's")
    ap.add_argument("--bench", action="store_true",
                    help="also time streaming playback (us/frame at 60 fps) per method")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    paths = find_takes(a.recordings, a.take)
    if not paths:
        print(f"no CSV takes found in {a.recordings}", file=sys.stderr)
        return 2
    if a.speed <= 0:
        ap.error("--speed must be positive")
    if a.loo_models and a.person_models:
        ap.error("--loo-models or --person-models, not both")
    if a.loo_models or a.person_models:  # each take scored by a model that never saw it
        where, name = ((a.loo_models, lambda p: p.stem) if a.loo_models else
                       (a.person_models, person_of))
        missing = sorted({name(p) for p in paths if not (where / f"{name(p)}.onnx").is_file()})
        if missing:
            print(f"no model for {missing} in {where}", file=sys.stderr)
            return 2
        models = {n: LearnedInterpolator(where / f"{n}.onnx") for n in sorted({name(p) for p in paths})}
        scores = [s for p in paths for s in evaluate([p], models[name(p)], speed=a.speed)]
        learned = None
    else:
        learned = LearnedInterpolator(a.model)
        if learned.session is None:
            print("note: 'learned' below is the spline fallback (no usable model)", file=sys.stderr)
        scores = evaluate(paths, learned, speed=a.speed)
    if not scores:
        print("no readable takes", file=sys.stderr)
        return 2
    print(table(scores))
    if a.by_length:
        print(length_table(scores))
    if a.plot:
        pick = [p for p in paths if p.stem == a.plot_take] if a.plot_take else paths[:1]
        if not pick:
            print(f"no take named {a.plot_take!r}", file=sys.stderr)
            return 2
        model = (LearnedInterpolator(a.loo_models / f"{pick[0].stem}.onnx") if a.loo_models else
                 LearnedInterpolator(a.person_models / f"{person_of(pick[0])}.onnx")
                 if a.person_models else learned)
        plot(pick[0], a.plot, a.channel, a.window[0], a.window[1], model)
    if a.bench:
        runs = [r for p in paths for r in runs_of(p)]
        us = bench(runs, learned or LearnedInterpolator(a.model))
        print("\nstreaming cost, us/frame at 60 fps (best of 3): "
              + ", ".join(f"{k} {v:.1f}" for k, v in us.items()))
    if a.json:
        out = summary(scores)
        if len(people(scores)) > 1:
            out["per_person"] = {who: {r: round(gain(pooled(ss), r), 2) for r in RULES}
                                 for who, ss in people(scores).items()}
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
