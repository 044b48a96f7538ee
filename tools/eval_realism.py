"""How real do our faces move? Generated takes against real Live Link Face capture.

    # takes to judge: the dev lines rendered as the CLI renders them (one CSV per line)
    python tools/eval_realism.py --render out/realism/after [--render-seed 0] [--render-args="--no-idle"]
    # judge them (and, optionally, an earlier set) against the recordings
    python tools/eval_realism.py --takes out/realism/after [--before out/realism/before] \
        [--json out.json] [--plot docs/realism.png]

Every take (ours at 60 fps, the recordings at 30 or 60 Hz) is cut into continuous runs at
tracking losses and resampled to 30 Hz, so "per frame" means the same everywhere. Runs are cut
into 2-second windows (1 s hop); each window is summed up by channel-agnostic statistics of the 52
blendshapes (rotations are left out: the recordings' rotation columns are zero):

* ``still``: share of frame steps where no channel moves by 1e-4 (frame-perfect stillness);
* ``active``: channels above 0.1, on average per frame; ``moving``: channels whose range in the
  window exceeds 0.02;
* ``speed``: mean |dx| per channel per frame; ``jerk``: the jerk ratio sum|d2x| / sum|dx|
  (splines are smooth, capture is not); ``burst``: p95 / median of the per-frame face speed;
* ``blinks``: blinks a minute (tools/measure_blinks.py's detector on the mean eyelid);
* ``asym_static``: mean |L - R| over the left/right pairs (gaze pairs aside);
  ``asym_velocity``: sum|dL - dR| / sum(|dL| + |dR|): 0 when both sides move in lockstep;
* ``gaze_speed``: mean |dx| of the eight EyeLook channels; ``gaze_asym``: mean |left eye's gaze -
  right eye's| (yaw = Out - In of the left eye vs In - Out of the right, pitch = Up - Down);
* region speeds: ``lid_speed`` (blink, squint, wide), ``mouth_speed`` (Jaw*, Mouth*, Tongue),
  ``jaw_speed`` (JawOpen alone), ``brow_speed``, ``cheek_speed`` (cheeks, nose);
* ``hf``: share of the motion's power above 4 Hz (a spectrum statistic), ``spread``: mean
  per-channel standard deviation in the window.

A logistic regression (L2, standardised log-features, balanced classes; numpy, no scikit-learn)
tells ours from real; it is cross-validated by take (no take's windows in both its training and
its test folds) and scored by the AUC of the pooled out-of-fold predictions. The floor is the same
classifier telling one real person (alexdjulin) from the other (animavr). The posed range-of-motion
takes are left out of the real set. The give-away table shows each statistic, ours vs real (real =
the mean of the two people's means, so neither person outweighs the other; for the mouth and jaw
speeds, the speech take S88-001, since every take of ours talks), and whether ours is within 25 %
of it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from measure_blinks import blinks as find_blinks  # noqa: E402

from runtime import channels as C  # noqa: E402
from runtime.sinks.csv import read_take  # noqa: E402

RECORDINGS = ROOT.parent / "shared" / "data" / "recordings"
PROMPTS = [ROOT.parent / "shared" / "eval" / "prompts_dev.jsonl",
           ROOT.parent / "shared" / "eval" / "prompts_dialogue_dev.jsonl"]
POSED = ("alex_rom_3", "alex_rom_4")  # range of motion: every channel pushed on purpose, not behaviour
RATE = 30.0  # Hz everything is resampled to
WIN, HOP = 2.0, 1.0  # seconds
TOLERANCE = 0.25
SPEECH_TAKE = "S88-001"  # the one take of speech: the reference for the mouth of our talking takes
SPEECH_KEYS = ("mouth_speed", "jaw_speed")
# A window talks when JawOpen moves by TALKING within it. S88-001 is utterances with pauses: 22 of
# its 51 windows have the jaw within 0.07 (it rests between utterances), the others move it by 0.1
# or more; every take of ours is one line, spoken throughout. The talking mouth is judged speech
# against speech: both sides' talking windows (the figures over all windows are reported beside).
TALKING = 0.1

N = C.SHAPES
_names = C.NAMES[:N]
_ix = lambda *ns: np.array([C.INDEX[n] for n in ns])  # noqa: E731
GAZE = np.array([i for i, n in enumerate(_names) if n.startswith("EyeLook")])
LIDS = np.array([i for i, n in enumerate(_names) if n.startswith(("EyeBlink", "EyeSquint", "EyeWide"))])
MOUTH = np.array([i for i, n in enumerate(_names) if n.startswith(("Jaw", "Mouth", "Tongue"))])
BROWS = np.array([i for i, n in enumerate(_names) if n.startswith("Brow")])
CHEEKS = np.array([i for i, n in enumerate(_names) if n.startswith(("Cheek", "Nose"))])
JAW = C.INDEX["JawOpen"]
PAIRS = np.array([(a, b) for a, b in C.PAIRS if b < N and a not in GAZE])
BLINK_L, BLINK_R = C.INDEX["EyeBlinkLeft"], C.INDEX["EyeBlinkRight"]
_g = C.INDEX
YAW_L = (_g["EyeLookOutLeft"], _g["EyeLookInLeft"])
YAW_R = (_g["EyeLookInRight"], _g["EyeLookOutRight"])
PITCH_L = (_g["EyeLookUpLeft"], _g["EyeLookDownLeft"])
PITCH_R = (_g["EyeLookUpRight"], _g["EyeLookDownRight"])

# (key, label, the issue's give-away it answers or "" for an extra)
FEATURES = [
    ("still", "frame-perfect stillness (share of steps)", "6"),
    ("active", "channels above 0.1 at a time", "4"),
    ("moving", "channels moving in a window (range > 0.02)", "4"),
    ("speed", "speed, mean |dx| per channel-frame", ""),
    ("jerk", "jerk ratio sum|d2x| / sum|dx|", "6"),
    ("burst", "burstiness p95/median of face speed", ""),
    ("blinks", "blinks a minute", "2"),
    ("asym_static", "static asymmetry |L-R|", "3"),
    ("asym_velocity", "L/R velocity mismatch", "3"),
    ("gaze_speed", "gaze speed (EyeLook, per frame)", "1"),
    ("gaze_asym", "L/R gaze asymmetry", "1"),
    ("lid_speed", "lid speed", "7"),
    ("mouth_speed", "mouth/jaw speed, talking windows", "5"),
    ("jaw_speed", "JawOpen speed, talking windows", "5"),
    ("brow_speed", "brow speed", ""),
    ("cheek_speed", "cheek/nose speed", ""),
    ("hf", "share of motion power above 4 Hz", ""),
    ("spread", "mean per-channel std in a window", ""),
]
KEYS = [k for k, _, _ in FEATURES]


@dataclass
class Take:
    name: str
    group: str  # "ours", "alexdjulin", "animavr"
    runs: list[np.ndarray]  # float64[n, 52] at RATE, continuous


def resample(times: np.ndarray, values: np.ndarray, max_step: float = 0.1) -> list[np.ndarray]:
    """Continuous runs (cut at tracking losses and time gaps) resampled onto a RATE grid."""
    ok = ~np.isnan(values).any(axis=1)
    cut = np.flatnonzero(~ok | np.r_[False, np.diff(times) > max_step])
    out = []
    for a, b in zip(np.r_[0, cut + 1], np.r_[cut, len(values)]):
        seg = np.arange(a, b)
        seg = seg[ok[seg]]
        if len(seg) < 2 or times[seg[-1]] - times[seg[0]] < WIN:
            continue
        t = times[seg]
        grid = np.arange(t[0], t[-1] + 1e-9, 1.0 / RATE)
        v = values[seg][:, :N].astype(np.float64)
        out.append(np.stack([np.interp(grid, t, v[:, j]) for j in range(N)], axis=1))
    return out


def load(path: Path, group: str) -> Take:
    take = read_take(path)
    return Take(path.stem, group, resample(take.times, take.values))


def real_takes(recordings: Path = RECORDINGS) -> list[Take]:
    out = []
    for person in ("alexdjulin", "animavr"):
        for p in sorted((recordings / person).glob("*.csv")):
            if p.stem not in POSED:
                out.append(load(p, person))
    return out


def _blink_times(run: np.ndarray) -> np.ndarray:
    t = np.arange(len(run)) / RATE
    y = 0.5 * (run[:, BLINK_L] + run[:, BLINK_R])
    return np.array([b["t"] for b in find_blinks(t, y, 0.25, 0.6)])


def window_features(x: np.ndarray, n_blinks: int) -> dict[str, float]:
    """Statistics of one window x (float64[frames, 52] at RATE)."""
    d = np.diff(x, axis=0)
    ad = np.abs(d)
    d2 = np.abs(np.diff(x, n=2, axis=0))
    face = ad.sum(axis=1)
    f: dict[str, float] = {}
    f["still"] = float((ad.max(axis=1) < 1e-4).mean())
    f["active"] = float((x > 0.1).sum(axis=1).mean())
    f["moving"] = float((np.ptp(x, axis=0) > 0.02).sum())
    f["speed"] = float(ad.mean())
    f["jerk"] = float(d2.sum() / max(ad.sum(), 1e-9))
    f["burst"] = float(np.percentile(face, 95) / max(np.median(face), 1e-6))
    f["blinks"] = n_blinks * 60.0 / WIN
    L, R = PAIRS[:, 0], PAIRS[:, 1]
    f["asym_static"] = float(np.abs(x[:, L] - x[:, R]).mean())
    f["asym_velocity"] = float(np.abs(d[:, L] - d[:, R]).sum() / max((ad[:, L] + ad[:, R]).sum(), 1e-9))
    f["gaze_speed"] = float(ad[:, GAZE].mean())
    yl = x[:, YAW_L[0]] - x[:, YAW_L[1]]
    yr = x[:, YAW_R[0]] - x[:, YAW_R[1]]
    pl = x[:, PITCH_L[0]] - x[:, PITCH_L[1]]
    pr = x[:, PITCH_R[0]] - x[:, PITCH_R[1]]
    f["gaze_asym"] = float(0.5 * (np.abs(yl - yr) + np.abs(pl - pr)).mean())
    f["lid_speed"] = float(ad[:, LIDS].mean())
    f["mouth_speed"] = float(ad[:, MOUTH].mean())
    f["jaw_speed"] = float(ad[:, JAW].mean())
    f["jaw_range"] = float(np.ptp(x[:, JAW]))  # not a feature: it says whether the window talks
    f["brow_speed"] = float(ad[:, BROWS].mean())
    f["cheek_speed"] = float(ad[:, CHEEKS].mean())
    spec = np.abs(np.fft.rfft(d - d.mean(axis=0), axis=0)) ** 2
    freq = np.fft.rfftfreq(len(d), 1.0 / RATE)
    total = spec.sum()
    f["hf"] = float(spec[freq > 4.0].sum() / total) if total > 1e-18 else 0.0
    f["spread"] = float(x.std(axis=0).mean())
    return f


def take_windows(take: Take) -> list[dict[str, float]]:
    w, h = int(round(WIN * RATE)), int(round(HOP * RATE))
    out = []
    for run in take.runs:
        bt = _blink_times(run)
        for a in range(0, len(run) - w + 1, h):
            t0, t1 = a / RATE, (a + w) / RATE
            out.append(window_features(run[a:a + w], int(((bt >= t0) & (bt < t1)).sum())))
    return out


def table(takes: list[Take], talking: float = TALKING) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Feature matrix (windows x features), take index per window, group per take, and whether
    each window talks (JawOpen range >= ``talking``)."""
    rows, take_ix, talks = [], [], []
    for i, t in enumerate(takes):
        for f in take_windows(t):
            rows.append([f[k] for k in KEYS])
            take_ix.append(i)
            talks.append(f["jaw_range"] >= talking)
    return np.array(rows), np.array(take_ix), [t.group for t in takes], np.array(talks, dtype=bool)


# -- classifier -------------------------------------------------------------------------------------
def _transform(X: np.ndarray) -> np.ndarray:
    return np.log(np.abs(X) + 1e-4)  # every statistic is >= 0 and skewed


def _fit(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2 logistic regression by Newton's method, classes weighted to count equally."""
    A = np.c_[np.ones(len(X)), X]
    w = np.zeros(A.shape[1])
    cw = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    reg = np.full(A.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))
        g = A.T @ (cw * (p - y)) / len(y) + reg * w / len(y)
        H = (A * (cw * p * (1 - p))[:, None]).T @ A / len(y) + np.diag(reg) / len(y)
        step = np.linalg.solve(H + 1e-9 * np.eye(len(w)), g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve (ties count half)."""
    pos, neg = score[y == 1], score[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.r_[pos, neg], kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.r_[pos, neg][order]
    # average ranks for ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cv_auc(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[float, np.ndarray]:
    """AUC of out-of-fold scores; folds split by take, each class's takes dealt across folds."""
    Z = _transform(X)
    rng = np.random.default_rng(seed)
    fold_of = {}
    for cls in (0, 1):
        g = np.unique(groups[y == cls])
        rng.shuffle(g)
        for k, gi in enumerate(g):
            fold_of[gi] = k % folds
    fold = np.array([fold_of[g] for g in groups])
    score = np.zeros(len(y))
    for k in range(folds):
        te = fold == k
        tr = ~te
        if not te.any() or len(np.unique(y[tr])) < 2:
            continue
        mu, sd = Z[tr].mean(axis=0), Z[tr].std(axis=0) + 1e-9
        w = _fit((Z[tr] - mu) / sd, y[tr])
        score[te] = np.c_[np.ones(te.sum()), (Z[te] - mu) / sd] @ w
    return auc(score, y), score


# -- report -----------------------------------------------------------------------------------------
def summarise(X: np.ndarray, take_ix: np.ndarray, groups: list[str], takes: list[Take],
              talks: np.ndarray | None = None) -> dict:
    g = np.array([groups[i] for i in take_ix])
    out = {}
    for name in ("ours", "alexdjulin", "animavr"):
        m = g == name
        if not m.any():
            continue
        stats = {k: float(X[m, j].mean()) for j, k in enumerate(KEYS)}
        out[name] = stats
    if "alexdjulin" in out and "animavr" in out:
        out["real"] = {k: 0.5 * (out["alexdjulin"][k] + out["animavr"][k]) for k in KEYS}
    speech = np.array([takes[i].name == SPEECH_TAKE for i in take_ix])
    talks = np.ones(len(X), dtype=bool) if talks is None else talks
    if speech.any():  # our takes talk: their mouths are judged against real speech, talking windows
        out["speech_all"] = {k: float(X[speech, j].mean()) for j, k in enumerate(KEYS)}
        m = speech & talks
        out["speech"] = {k: float(X[m, j].mean()) for j, k in enumerate(KEYS)}
        out["speech"]["windows"] = int(m.sum())
        out["speech_all"]["windows"] = int(speech.sum())
        for k in SPEECH_KEYS:
            out["real"][k] = out["speech"][k]
        if "ours" in out:
            ours = g == "ours"
            out["ours_all"] = {k: out["ours"][k] for k in SPEECH_KEYS} | {"windows": int(ours.sum())}
            out["ours_talking_windows"] = int((ours & talks).sum())
            for k in SPEECH_KEYS:
                j = KEYS.index(k)
                out["ours"][k] = float(X[ours & talks, j].mean())
    return out


def evaluate(ours: list[Take], real: list[Take], talking: float = TALKING) -> dict:
    takes = real + ours
    X, take_ix, groups, talks = table(takes, talking)
    y = np.array([1 if groups[i] == "ours" else 0 for i in take_ix])
    res = {"windows": {"ours": int(y.sum()), "real": int((1 - y).sum())},
           "takes": {"ours": len(ours), "real": len(real)}}
    if len(ours):
        res["auc"], _ = cv_auc(X, y, take_ix)
        # how much the figure depends on which takes share a fold
        res["auc_fold_seeds"] = [round(cv_auc(X, y, take_ix, seed=s)[0], 3) for s in range(1, 6)]
    # the floor: one real person against the other
    rm = y == 0
    yr = np.array([1 if groups[i] == "animavr" else 0 for i in take_ix[rm]])
    res["auc_person_vs_person"], _ = cv_auc(X[rm], yr, take_ix[rm])
    res["stats"] = summarise(X, take_ix, groups, takes, talks)
    res["talking"] = talking
    res["per_feature_auc"] = {}
    if len(ours):
        for j, k in enumerate(KEYS):
            a = auc(X[:, j], y)
            res["per_feature_auc"][k] = round(max(a, 1 - a), 3)
    return res


def give_aways(res: dict) -> list[dict]:
    s = res["stats"]
    rows = []
    for k, label, issue in FEATURES:
        real, ours = s["real"][k], s.get("ours", {}).get(k, float("nan"))
        rel = (ours - real) / real if real else float("nan")
        rows.append({"key": k, "label": label, "issue": issue, "ours": ours, "real": real,
                     "alexdjulin": s["alexdjulin"][k], "animavr": s["animavr"][k], "rel": rel,
                     "ok": bool(abs(rel) <= TOLERANCE) if real else ours == 0})
    return rows


def print_report(res: dict, before: dict | None = None) -> None:
    print(f"windows: ours {res['windows']['ours']} ({res['takes']['ours']} takes), "
          f"real {res['windows']['real']} ({res['takes']['real']} takes)")
    if before is not None:
        nan = float("nan")
        print(f"AUC ours vs real: before {before.get('auc', nan):.3f}, after {res.get('auc', nan):.3f}")
    elif "auc" in res:
        print(f"AUC ours vs real: {res['auc']:.3f}")
    if "auc_fold_seeds" in res:
        print(f"  (other fold assignments: {', '.join(f'{a:.3f}' for a in res['auc_fold_seeds'])})")
    print(f"AUC one real person vs the other (floor): {res['auc_person_vs_person']:.3f}")
    b = {r["key"]: r for r in give_aways(before)} if before is not None else {}
    head = f"{'statistic':44} {'#':>2} {'alexdjulin':>10} {'animavr':>9} {'real':>9}"
    head += f" {'before':>9}" if b else ""
    print(head + f" {'ours':>9} {'vs real':>8}  ok")
    for r in give_aways(res):
        line = f"{r['label']:44} {r['issue']:>2} {r['alexdjulin']:10.4f} {r['animavr']:9.4f} {r['real']:9.4f}"
        line += f" {b[r['key']]['ours']:9.4f}" if b else ""
        print(line + f" {r['ours']:9.4f} {r['rel']:+8.0%}  {'yes' if r['ok'] else 'NO'}")
    st = res["stats"]
    if "speech_all" in st and "ours_all" in st:
        print(f"talking windows (JawOpen range >= {res['talking']}): {SPEECH_TAKE} {st['speech']['windows']} of "
              f"{st['speech_all']['windows']}, ours {st['ours_talking_windows']} of {st['ours_all']['windows']}; "
              "over all windows, pauses included:")
        for k in SPEECH_KEYS:
            real, ours = st["speech_all"][k], st["ours_all"][k]
            print(f"  {k}: {SPEECH_TAKE} {real:.4f}, ours {ours:.4f} ({(ours - real) / real:+.0%})")


def plot(res: dict, before: dict | None, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = give_aways(res)
    rb = give_aways(before) if before is not None else None
    y = np.arange(len(rows))[::-1]
    lr = lambda a, b: np.log2(max(a, 1e-6) / max(b, 1e-6))  # noqa: E731
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.axvspan(np.log2(0.75), np.log2(1.25), color="0.9", label="within 25 % of real")
    ax.scatter([lr(r["animavr"], r["real"]) for r in rows], y, marker="|", s=120, color="0.5",
               label="each real person")
    ax.scatter([lr(r["alexdjulin"], r["real"]) for r in rows], y, marker="|", s=120, color="0.5")
    if rb is not None:
        ax.scatter([lr(r["ours"], r["real"]) for r in rb], y, marker="x", color="tab:red",
                   label=f"before (AUC {before['auc']:.3f})")
    ax.scatter([lr(r["ours"], r["real"]) for r in rows], y, marker="o", color="tab:blue",
               label=f"now (AUC {res['auc']:.3f})")
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("log2(ours / real)")
    ax.set_xlim(-7, 4)
    ax.axvline(0, color="k", lw=0.5)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Generated vs real capture, 2 s windows (floor: person vs person AUC "
                 f"{res['auc_person_vs_person']:.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def prompts(paths: list[Path]) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                out.append((d["id"], d["text"]))
    return out


def render(folder: Path, extra: list[str], prompt_files: list[Path], seed: int | None = None) -> None:
    """Render every prompt with ``runtime.cli render TEXT --talk`` into folder/<id>.csv; with a seed,
    take i gets ``--seed seed+i`` (repeatable, and not every take the same face)."""
    from runtime import cli

    folder.mkdir(parents=True, exist_ok=True)
    for i, (pid, text) in enumerate(prompts(prompt_files)):
        out = folder / f"{pid}.csv"
        if out.exists():
            continue
        seeded = [] if seed is None else ["--seed", str(seed + i)]
        # in this process: the CLI's own code path, without a Python start-up per take
        if cli.main(["render", text, "--talk", "-o", str(out), *seeded, *extra]):
            print(f"{pid}: render failed", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--takes", type=Path, help="folder of generated CSV takes to judge")
    ap.add_argument("--before", type=Path, help="an earlier folder of takes, shown beside")
    ap.add_argument("--render", type=Path, help="render the prompts' takes into this folder first")
    ap.add_argument("--render-args", default="", help="extra arguments for `render`, e.g. '--no-idle'")
    ap.add_argument("--render-seed", type=int, help="take i is rendered with --seed RENDER_SEED+i")
    ap.add_argument("--prompts", type=Path, action="append", help="prompt JSONL files (default: the dev sets)")
    ap.add_argument("--recordings", type=Path, default=RECORDINGS)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plot", help="draw ours vs real per statistic to this PNG")
    ap.add_argument("--talking", type=float, default=TALKING,
                    help=f"a window talks when JawOpen moves by this much in it (default {TALKING}; 0: every window)")
    a = ap.parse_args(argv)
    if a.render:
        render(a.render, shlex.split(a.render_args), a.prompts or PROMPTS, a.render_seed)
        a.takes = a.takes or a.render
    real = real_takes(a.recordings)
    if not real:
        print(f"no recordings under {a.recordings}", file=sys.stderr)
        return 2
    ours = [load(p, "ours") for p in sorted(a.takes.glob("*.csv"))] if a.takes else []
    res = evaluate(ours, real, a.talking)
    before = evaluate([load(p, "ours") for p in sorted(a.before.glob("*.csv"))], real, a.talking) if a.before else None
    print_report(res, before)
    if a.json:
        Path(a.json).write_text(json.dumps({"now": res, "before": before, "give_aways": give_aways(res)},
                                           indent=1))
    if a.plot and ours:
        plot(res, before, a.plot)
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
