"""Train the closure detector (runtime/audio/closure.py): are the lips shut for a p/b/m in this
10 ms frame?

It learns from the lines ``tools/train_labial.py collect`` makes (random cmudict sentences, no eval
text, spoken by voices whose phone times are exact), each twice: as spoken and through a random
channel (train_labial.augment). Every frame inside a p/b/m of the voice is a positive; a random
``--neg-keep`` share of the others are negatives. As shipped (docs/BENCHMARKS.md, issue 17, stop 30):

    .venv/bin/python tools/train_closure.py train /tmp/lab /tmp/labB    # -> exported_models/closure.json
    .venv/bin/python tools/train_closure.py cross /tmp/lab /tmp/labB --models /tmp/closure_cross \
        --labial-models /tmp/labmodels --json /tmp/closure_cross.json  # labmodels: train_labial.py cross --models

(~3 and ~12 min on one core.)

``cross`` leaves one synthesis engine out (espeak-ng, festival, flite), trains on the others and
scores the left-out engine's collected lines (``--score-lines`` per voice) the way
tools/eval_speech.py scores its sentences: p/b/m closed within a frame, and false closures at
t/d/n/k/g, with the recogniser's phones and the lips' second opinion (also trained without that
engine, ``--labial-models``, where given) before and after the detector, at each threshold. The
threshold is chosen there, on training text of an engine each model never heard; ``train`` fits the
shipped model on espeak-ng and festival (flite's voices stay unheard, to test on), as the lips'
second opinion is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import train_labial as TL  # noqa: E402

from runtime.audio import closure, labial  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def labels(segs: list, n: int) -> np.ndarray:
    """1 for each 10 ms frame (centred at i * 10 ms) inside a p/b/m of the voice."""
    y = np.zeros(n, np.float32)
    t = np.arange(n) * closure.HOP / closure.RATE
    for name, s, e in segs:
        if name in TL.BILABIAL:
            y[(t >= s) & (t < e)] = 1
    return y


def frames_of(x16: np.ndarray) -> np.ndarray:
    n = len(x16) // closure.HOP + 1
    return labial.logmel(np.asarray(x16, np.float32), np.arange(n) * closure.HOP)


_SETS: dict = {}


def warped(lines: list[dict], seed: int) -> list[dict]:
    """Each line again with its frequencies and tempo scaled together by a random 0.82-0.9 or
    1.1-1.22 (resampled, played at the same rate): a longer or shorter vocal tract, another
    speaker of the same engine. Phone times scale with it."""
    from runtime.audio import resample

    rng = np.random.default_rng(seed + 1)
    out = []
    for d in lines:
        a = rng.uniform(0.82, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.22)
        x = resample(d["x16"], 16000, int(round(16000 * a)))
        out.append({**d, "x16": x, "segs": [(n, s * len(x) / len(d["x16"]), e * len(x) / len(d["x16"]))
                                            for n, s, e in d["segs"]]})
    return out


def training_set(folders: list[Path], fams: list[str], neg_keep: float, warp: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Features (float16, to fit in memory) and labels of every positive frame and a share of the
    rest, for the families ``fams`` (each built once per run)."""
    for f in fams:
        if f not in _SETS:
            rng = np.random.default_rng(0)
            lines = TL.load(folders, [f])
            X, Y = [], []
            for d in lines + TL.augment(lines, 0) + (warped(TL.augment(lines, 2), 0) if warp else []):
                lm = frames_of(d["x16"])
                y = labels(d["segs"], len(lm))
                idx = np.nonzero((y > 0) | (rng.random(len(y)) < neg_keep))[0]
                X.append(closure.windows(lm, idx, len(lm)).astype(np.float16))
                Y.append(y[idx])
            _SETS[f] = (np.concatenate(X), np.concatenate(Y))
            print(f"  {f}: {len(lines)} lines x {3 if warp else 2}, {len(_SETS[f][1])} frames", flush=True)
    return np.concatenate([_SETS[f][0] for f in fams]), np.concatenate([_SETS[f][1] for f in fams])


def fit(X: np.ndarray, y: np.ndarray, hidden: int, seed: int, steps: int) -> dict:
    """One hidden ReLU layer (torch, CPU, one thread), one-cycle AdamW; returns the card's weights."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sample = X[rng.choice(len(X), min(len(X), 200_000), replace=False)].astype(np.float32)
    mean, std = sample.mean(axis=0), sample.std(axis=0) + 1e-3
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    m, s = torch.tensor(mean), torch.tensor(std)
    t0 = time.time()
    for step in range(steps):
        b = rng.integers(0, len(X), 512)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net((torch.tensor(X[b].astype(np.float32)) - m) / s).squeeze(1), torch.tensor(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0:
            print(f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    lin1, lin2 = net[0], net[3]
    return {"mean": mean.tolist(), "std": std.tolist(), "w1": lin1.weight.detach().numpy().T.tolist(),
            "b1": lin1.bias.detach().numpy().tolist(), "w2": lin2.weight.detach().numpy()[0].tolist(),
            "b2": float(lin2.bias.item())}


def score(lines: list[dict], lab: labial.Net | None, det: closure.Detector, thresholds=THRESHOLDS,
          modes: tuple[bool, ...] = (False, True)) -> dict:
    """p/b/m closed and false closures (counts) on collected lines, as tools/eval_speech.py scores:
    the recogniser's phones, the second opinion, then the detector at each threshold."""
    import eval_speech as E

    from runtime.audio.align import TimedPhone

    prep = []
    for d in lines:
        raw = [TimedPhone(p, s, e) for p, s, e in d["rec"]]
        phones = labial.relabel(d["x16"], raw, model=lab) if lab is not None else raw
        p = closure.Frames().update(np.asarray(d["x16"], np.float32), det, True)
        espeak = d["voice"] not in TL.FESTIVAL and not str(d["voice"]).startswith("flite")
        sets = (E.ESPEAK_BILABIALS, E.ESPEAK_OPEN) if espeak else (E.FESTIVAL_BILABIALS, E.FESTIVAL_OPEN)
        prep.append((d, phones, p, sets))

    def count(th: float | None, rename: bool = False) -> tuple[int, int, int, int]:
        closed, false = [], []
        for d, phones, p, (bil, opens) in prep:
            if th is not None:
                phones = closure.insert(phones, p, det.at(th, rename))
            c, _o, f = E._score_line(E.frames_for(phones, d["x16"]), d["segs"], bil, opens)[:3]
            closed += c
            false += f
        return int(np.sum(closed)), int(np.sum(false)), len(closed), len(false)

    base = count(None)
    out = {"bilabials": base[2], "t/d/n/k/g": base[3], "closed before": base[0], "false before": base[1]}
    for rename in modes:
        for th in thresholds:
            c, f, _, _ = count(th, rename)
            out[f"{th}{' rename' if rename else ''}"] = {"closed +": c - base[0], "false +": f - base[1]}
    return out


def members(X: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """One net per seed in ``--seeds``, weights rounded to 5 digits (the card is JSON)."""
    out = []
    for seed in args.seeds:
        w = fit(X, y, args.hidden, seed, args.steps)
        m = {k: ([float(f"{v:.5g}") for v in w[k]] if k != "w1" else
                 [[float(f"{v:.5g}") for v in row] for row in w[k]]) for k in ("mean", "std", "w1", "b1", "w2")}
        out.append({**m, "b2": w["b2"], "seed": seed})
    return out


def card_of(nets: list[dict], args: argparse.Namespace, families: list[str], y: np.ndarray,
            extra: dict | None = None) -> dict:
    card = {"members": nets}
    card.update({"threshold": args.threshold, "min_frames": args.min_frames, "rename": args.rename,
                 "hidden": args.hidden, "steps": args.steps, "families": families, "frames": len(y),
                 "positives": int(y.sum()),
                 "features": f"log-mel {labial.BANDS} bands, frames -{closure.BACK}..+{closure.AHEAD} "
                             "(10 ms), band mean per window removed, levels vs the window's loudest",
                 "trained_on": "tools/train_labial.py collect lines (random cmudict sentences, no eval text), "
                               "each also through a random channel (train_labial.augment)", **(extra or {})})
    return card


def cross(folders: list[Path], args: argparse.Namespace) -> dict:
    res = {}
    for left, fams in TL.ENGINES.items():
        train_on = [f for e, fs in TL.ENGINES.items() if e != left for f in fs]
        print(f"without {left}: training on {', '.join(train_on)}", flush=True)
        X, y = training_set(folders, train_on, args.neg_keep, args.warp)
        card = card_of(members(X, y, args), args, train_on, y)
        del X
        if args.models:
            args.models.mkdir(parents=True, exist_ok=True)
            (args.models / f"without_{left}.json").write_text(json.dumps(card, separators=(",", ":")) + "\n")
        lab = None
        if args.labial_models and (args.labial_models / f"without_{left}.json").exists():
            lab = labial.Net(json.loads((args.labial_models / f"without_{left}.json").read_text()))
        elif args.labial_models is None or left == "flite":  # the shipped second opinion never heard flite
            lab = labial.net()
        det = closure.Detector(card)
        for f in fams:
            lines = TL.load(folders[:1], [f])[: args.score_lines]
            res[f"{'+'.join(train_on)} -> {f}"] = r = score(lines, lab, det)
            print(f, json.dumps(r), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "cross"):
        t = sub.add_parser(name)
        t.add_argument("dir", type=Path, nargs="+", help="train_labial.py collect folders")
        t.add_argument("--hidden", type=int, default=64)
        t.add_argument("--seeds", type=lambda v: [int(s) for s in v.split(",")], default=[0, 1],
                       help="one net per seed, probabilities averaged")
        t.add_argument("--steps", type=int, default=6000)
        t.add_argument("--neg-keep", type=float, default=0.3, help="share of frames without a p/b/m kept")
        t.add_argument("--threshold", type=float, default=0.95)
        t.add_argument("--min-frames", type=int, default=2)
        t.add_argument("--warp", action="store_true",
                       help="also a third copy of each line, through another channel and warped in "
                            "frequency and tempo (another speaker of the same engine)")
        t.add_argument("--rename", action="store_true",
                       help="also rename recognised candidates (more p/b/m, more false closures)")
        if name == "train":
            t.add_argument("--out", type=Path, default=closure.MODEL)
            t.add_argument("--families", default=",".join(TL.TRAIN))
            t.add_argument("--cross-json", type=Path, help="the cross run's --json, quoted in the card")
        else:
            t.add_argument("--json", type=Path)
            t.add_argument("--models", type=Path, help="keep each left-out model here (for eval_speech.py)")
            t.add_argument("--labial-models", type=Path,
                           help="train_labial.py cross --models: the second opinion without the same engine")
            t.add_argument("--score-lines", type=int, default=150, help="collected lines scored per voice")
    args = ap.parse_args()
    if args.cmd == "cross":
        res = cross(args.dir, args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        return 0
    fams = args.families.split(",")
    t0 = time.time()
    X, y = training_set(args.dir, fams, args.neg_keep, args.warp)
    nets = members(X, y, args)
    extra = {"training_seconds": round(time.time() - t0)}
    if args.cross_json:
        extra["leave_one_engine_out"] = json.loads(args.cross_json.read_text())
    card = card_of(nets, args, fams, y, extra)
    args.out.write_text(json.dumps(card, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {len(y)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
