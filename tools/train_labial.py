"""Train the lips' second opinion on recognised stops and nasals (runtime/audio/labial.py).

PocketSphinx's phone recogniser hears m as n and b as d/g (issue 17), so from the audio alone the
lips miss a third of p/b/m on some voices. This tool makes labelled speech from voices whose phone
times are exact (espeak-ng's phoneme events over 20 voice variants and 5 rates; festival's slt HTS,
kal and ked diphone voices and flite's rms and awb voices, their own segment times), runs the
recogniser on it (no second pass), and trains a small net that says, for each candidate phone the
recogniser heard, whether the voice made a p/b/m there, from the sound around it
(runtime.audio.labial.features). As shipped (docs/BENCHMARKS.md, issue 17):

    .venv/bin/python tools/train_labial.py collect /tmp/lab --lines 300 --seed 0 --families espeak,slt,kal
    .venv/bin/python tools/train_labial.py collect /tmp/lab --lines 150 --seed 1 --families ked,flite_rms,flite_awb
    .venv/bin/python tools/train_labial.py collect /tmp/labB --lines 900 --seed 2 --families espeak,slt,kal,ked
    .venv/bin/python tools/train_labial.py train /tmp/lab /tmp/labB      # espeak + festival; flite left out
    .venv/bin/python tools/train_labial.py cross /tmp/lab /tmp/labB --models /tmp/labmodels  # one engine out

(~35 min of one core for the data, a minute to train; festival needs festvox-us-slt-hts,
festvox-kallpc16k and festvox-kdlpc16k, flite the Debian ``flite`` package.) The training text is
random sentences of cmudict words; no sentence or word of tools/eval_speech.py (SENTENCES,
WORDLIST) is used, so its figures are on unseen text.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.animate import phonemes as ph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# espeak-ng voices x variants: accents and formant sets unlike the en-us default the eval uses
ESPEAK_VOICES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us+m3",
                 "en-us+f2", "en+m1", "en+f4", "en-us+m7", "en-us+f5", "en+klatt", "en-us+klatt2",
                 "en+croak", "en-us+Andy", "en+Annie", "en-us+edward", "en+steph", "en-us+john"]
ESPEAK_WPM = (125, 150, 175, 200, 235)
FESTIVAL = {"slt": "voice_cmu_us_slt_arctic_hts", "kal": "voice_kal_diphone", "ked": "voice_ked_diphone"}
FLITE = ("rms", "awb")  # flite's clustergen voices (US male, Scottish male): another engine
FESTIVAL_STRETCH = (0.75, 0.9, 1.0, 1.15, 1.3)
BILABIAL = {"p", "b", "m"}  # both synthesisers' names


def eval_words() -> set[str]:
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_speech

    words = set(eval_speech.WORDLIST)
    for s in eval_speech.SENTENCES:
        words |= {w.lower().strip(".,!?;:'\"") for w in s.replace("'", " ").split()}
    return words


def vocabulary() -> list[str]:
    """Plain cmudict words (letters only, 2-9 long, one pronunciation), less every eval word;
    words with a stop or nasal are kept twice as often, the point of the training."""
    d = ph.load()
    banned = eval_words()
    out = []
    for w, pron in d.items():
        if not w.isalpha() or not 2 <= len(w) <= 9 or w in banned:
            continue
        seq = pron.split()
        out.append(w)
        if any(p in ("M", "N", "NG", "B", "D", "G", "P", "T", "K") for p in seq):
            out.append(w)
    return out


def sentences(n: int, rng: np.random.Generator) -> list[str]:
    vocab = vocabulary()
    out = []
    for _ in range(n):
        k = int(rng.integers(5, 12))
        words = [vocab[i] for i in rng.integers(0, len(vocab), k)]
        cut = int(rng.integers(2, k)) if rng.random() < 0.4 else 0
        if cut:
            words[cut - 1] += ","
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!"]))
    return out


def espeak_line(text: str, voice_name: str, wpm: int) -> tuple[np.ndarray, int, list]:
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_speech

    from runtime import voice

    sp = voice.speak(text, voice=voice_name, wpm=wpm)
    x = np.frombuffer(sp.pcm, np.int16).astype(np.float32) / 32768
    return x, sp.sample_rate, eval_speech.espeak_segments(sp)


def collect(folder: Path, lines: int, seed: int, families: list[str]) -> None:
    """Synthesise, recognise and save: DIR/{family}.pkl, a list of line dicts."""
    sys.path.insert(0, str(ROOT / "tools"))
    import eval_speech

    from runtime.audio import align
    from runtime.audio.wav import read_wav, resample

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    align.warm()

    def finish(x, sr, segs, text, vname, rate) -> dict:
        x16 = resample(x, sr, align.RATE).astype(np.float32)
        rec = align.recognize(x16, second_pass=False)  # what the recogniser alone hears
        return {"x16": x16, "segs": segs, "text": text, "voice": vname, "rate": rate,
                "rec": [(p.phone, p.start, p.end) for p in rec]}

    t0 = time.time()
    texts = sentences(lines, rng)
    out = []
    for i, text in enumerate(texts if "espeak" in families else []):
        vname = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        wpm = int(ESPEAK_WPM[(i // len(ESPEAK_VOICES)) % len(ESPEAK_WPM)] * rng.uniform(0.93, 1.07))
        x, sr, segs = espeak_line(text, vname, wpm)
        out.append(finish(x, sr, segs, text, vname, wpm))
    if out:
        (folder / "espeak.pkl").write_bytes(pickle.dumps(out))
        print(f"espeak: {len(out)} lines, {time.time() - t0:.0f} s", flush=True)
    for fam in FESTIVAL:
        texts = sentences(lines, rng)
        if fam not in families:
            continue
        out = []
        for k, stretch in enumerate(FESTIVAL_STRETCH):
            part = texts[k::len(FESTIVAL_STRETCH)]
            with tempfile.TemporaryDirectory() as tmp:
                for (wav, segs), text in zip(eval_speech.festival_lines(fam, part, stretch, Path(tmp)), part):
                    x, sr = read_wav(wav)
                    out.append(finish(x, sr, segs, text, fam, stretch))
        (folder / f"{fam}.pkl").write_bytes(pickle.dumps(out))
        print(f"{fam}: {len(out)} lines, {time.time() - t0:.0f} s", flush=True)
    for fam in FLITE:
        texts = sentences(lines, rng)
        if f"flite_{fam}" not in families:
            continue
        out = []
        for i, text in enumerate(texts):
            stretch = FESTIVAL_STRETCH[i % len(FESTIVAL_STRETCH)]
            with tempfile.TemporaryDirectory() as tmp:
                wav, segs = eval_speech.flite_line(text, fam, stretch, Path(tmp))
                x, sr = read_wav(wav)
            out.append(finish(x, sr, segs, text, f"flite_{fam}", stretch))
        (folder / f"flite_{fam}.pkl").write_bytes(pickle.dumps(out))
        print(f"flite_{fam}: {len(out)} lines, {time.time() - t0:.0f} s", flush=True)


# -- labels and features ---------------------------------------------------------------------------
NEAR = 1 / 60  # the eval's tolerance: one 60 fps frame either side
NON_LABIAL_STOPS = {"t", "d", "n", "k", "g"}  # where a false closure is counted


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def augment(lines: list[dict], seed: int) -> list[dict]:
    """Each line again through another channel: a first-order tilt (a brighter or duller
    microphone or codec) and white noise at 15-40 dB SNR, so the net leans less on how these
    synthesisers happen to sound."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    out = []
    for d in lines:
        x = d["x16"].astype(np.float64)
        tilt = rng.uniform(-0.9, 0.9)
        y = lfilter([1.0, -tilt], [1.0], x) if rng.random() < 0.7 else x
        p = np.sqrt((x * x).mean()) + 1e-9
        y = y * p / (np.sqrt((y * y).mean()) + 1e-9)
        y = y + rng.standard_normal(len(y)) * p * 10 ** (-rng.uniform(15, 40) / 20)
        out.append({**d, "x16": y.astype(np.float32)})
    return out


def training_set(lines: list[dict], seed: int, aug: bool) -> tuple[np.ndarray, np.ndarray]:
    X, y, _ = examples(lines)
    if aug:
        X2, y2, _ = examples(augment(lines, seed))
        X, y = np.concatenate([X, X2]), np.concatenate([y, y2])
    return X, y


def examples(lines: list[dict]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Features and labels for every candidate phone the recogniser heard: 1 when it covers at
    least half of a p/b/m of the voice (or half of itself is one), 0 when it touches none;
    in-between ones are left out. Also (line, phone) indices."""
    from runtime.audio import labial

    X, y, where = [], [], []
    for li, d in enumerate(lines):
        bil = [(a, b) for n, a, b in d["segs"] if n in BILABIAL]
        idx, spans, names, labels = [], [], [], []
        for k, (p, s, e) in enumerate(d["rec"]):
            base = p.rstrip("012")
            if base not in labial.CANDIDATES and base not in labial.NOT_LABIAL:
                continue
            ov = max((_overlap(s, e, a, b) / max(min(e - s, b - a), 1e-3) for a, b in bil), default=0.0)
            if ov >= 0.5:
                lab = 1
            elif ov <= 0.0:
                lab = 0
            else:
                continue
            idx.append(k)
            spans.append((s, e))
            names.append(base)
            labels.append(lab)
        if idx:
            X.append(labial.features(d["x16"], np.array(spans), names))
            y += labels
            where += [(li, k) for k in idx]
    return np.concatenate(X), np.array(y, np.float32), where


def score(lines: list[dict], prob: dict | None, up: float, down: float, strict: float | None = None) -> dict:
    """A quick stand-in for tools/eval_speech.py's figure on phone spans: a p/b/m of the voice is
    closed when a recognised (and relabelled) bilabial touches its span within a frame; a t/d/n/k/g
    with no p/b/m beside it is falsely closed when a recognised bilabial covers its middle."""
    from runtime.audio import labial

    hit, false = [], []
    for li, d in enumerate(lines):
        rec = []
        for k, (p, s, e) in enumerate(d["rec"]):
            base = p.rstrip("012")
            pr = prob.get((li, k)) if prob is not None else None
            if pr is not None and base in labial.NOT_LABIAL and pr < down:
                base = labial.NOT_LABIAL[base]
            elif pr is not None and base in labial.CANDIDATES and pr > (
                    up if base in labial.RELIABLE or strict is None else strict):
                base = labial.LABIAL_OF[base]
            rec.append((base, s, e))
        closes = [(s, e) for b, s, e in rec if b in ("P", "B", "M")]
        segs = d["segs"]
        for j, (n, a, b) in enumerate(segs):
            if n in BILABIAL:
                hit.append(any(_overlap(s, e, a - NEAR, b + NEAR) > 0 for s, e in closes))
            elif n in NON_LABIAL_STOPS:
                nb = {segs[j - 1][0] if j else "", segs[j + 1][0] if j + 1 < len(segs) else ""}
                if nb & BILABIAL:
                    continue
                m = (a + b) / 2
                false.append(any(s <= m <= e for s, e in closes))
    return {"bilabials": len(hit), "closed": float(np.mean(hit)), "false_close": float(np.mean(false))}


def load(folder: Path | list[Path], fams: list[str]) -> list[dict]:
    """The collected lines of families ``fams`` from one or more collect folders (where present)."""
    out = []
    for d in folder if isinstance(folder, list) else [folder]:
        for f in fams:
            if (d / f"{f}.pkl").exists():
                out += pickle.loads((d / f"{f}.pkl").read_bytes())
    return out


def fit(X: np.ndarray, y: np.ndarray, hidden: int, seed: int, steps: int = 3000, wd: float = 1e-3) -> dict:
    """A one-hidden-layer net (torch, CPU, one thread); returns the card's weights."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-3
    Xt = torch.tensor((X - mean) / std)
    yt = torch.tensor(y)
    net = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Dropout(0.2), torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=wd)
    pos = float(y.mean())
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos * 0.5))
    gen = torch.Generator().manual_seed(seed)
    for _step in range(steps):
        i = torch.randint(0, len(Xt), (256,), generator=gen)
        xb = Xt[i] + 0.1 * torch.randn(len(i), Xt.shape[1], generator=gen)
        loss = lossf(net(xb).squeeze(1), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    lin1, lin2 = net[1], net[4]
    return {"mean": mean.tolist(), "std": std.tolist(), "w1": lin1.weight.detach().numpy().T.tolist(),
            "b1": lin1.bias.detach().numpy().tolist(), "w2": lin2.weight.detach().numpy()[0].tolist(),
            "b2": float(lin2.bias.item())}


def predict(card: dict, X: np.ndarray) -> np.ndarray:
    from runtime.audio import labial

    return labial.Net({**card, "threshold_up": 0.5, "threshold_down": 0.5})(X)


ENGINES = {"espeak": ["espeak"], "festival": ["slt", "kal", "ked"], "flite": ["flite_rms", "flite_awb"]}
TRAIN = ["espeak", "slt", "kal", "ked"]  # the shipped model's: flite's voices stay unheard, to test on


def cross(folder: list[Path], hidden: int, seed: int, up: float, down: float, strict: float,
          out_dir: Path | None, aug: bool = True) -> dict:
    """Leave one synthesis engine out: train on the others' voices, score each voice of the one
    left out (with :func:`score`), before and after; with ``out_dir``, keep each model there."""
    res = {}
    for left in ENGINES:
        train_on = [f for e, fs in ENGINES.items() if e != left for f in fs]
        X, y = training_set(load(folder, train_on), seed, aug)
        card = fit(X, y, hidden, seed)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_card(card, out_dir / f"without_{left}.json", up, down, strict, hidden, seed, train_on, y,
                       aug=aug)
        for f in ENGINES[left]:
            te = load(folder, [f])
            Xe, ye, where = examples(te)
            prob = dict(zip(where, predict(card, Xe).tolist()))
            key = f"{'+'.join(train_on)} -> {f}"
            res[key] = {"before": score(te, None, up, down), "after, one threshold": score(te, prob, up, down),
                        "after": score(te, prob, up, down, strict)}
            print(key, res[key], flush=True)
    return res


def write_card(card: dict, out: Path, up: float, down: float, strict: float, hidden: int, seed: int,
               families: list[str], y: np.ndarray, extra: dict | None = None, aug: bool = True) -> None:
    card = dict(card)
    card.update({"threshold_up": up, "threshold_strict": strict, "threshold_down": down, "hidden": hidden,
                 "seed": seed,
                 "examples": len(y), "positives": int(y.sum()), "families": families,
                 "trained_on": "tools/train_labial.py collect: random cmudict sentences (no eval text) "
                               "spoken by the families' voices, phones from align.recognize(second_pass=False)",
                 "augmented": "each line twice: as spoken, and with a random tilt and 15-40 dB noise"
                 if aug else "no", **(extra or {})})
    for k in ("mean", "std", "b1", "w2"):
        card[k] = [float(f"{v:.5g}") for v in card[k]]
    card["w1"] = [[float(f"{v:.5g}") for v in row] for row in card["w1"]]
    out.write_text(json.dumps(card, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {len(y)} examples)")


def train(folder: list[Path], out: Path, hidden: int, seed: int, up: float, down: float, strict: float,
          families: list[str], cross_json: Path | None, aug: bool = True) -> None:
    X, y = training_set(load(folder, families), seed, aug)
    card = fit(X, y, hidden, seed)
    extra = {"leave_one_engine_out": json.loads(cross_json.read_text())} if cross_json else None
    write_card(card, out, up, down, strict, hidden, seed, families, y, extra, aug)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("dir", type=Path)
    c.add_argument("--lines", type=int, default=160)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--families", default="espeak,slt,kal",
                   help="espeak, slt, kal, ked (festival), flite_rms, flite_awb")
    for name in ("train", "cross"):
        t = sub.add_parser(name)
        t.add_argument("dir", type=Path, nargs="+", help="collect folders")
        t.add_argument("--hidden", type=int, default=64)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--up", type=float, default=0.5)
        t.add_argument("--down", type=float, default=0.0,
                       help="rename a recognised p/b/m to t/d/n below this (0: never; it cost recall)")
        t.add_argument("--no-augment", action="store_true", help="train on the voices as they are only")
        t.add_argument("--strict", type=float, default=0.9,
                       help="threshold for candidates outside labial.RELIABLE (m heard as n ...)")
        if name == "train":
            t.add_argument("--out", type=Path, default=ROOT / "exported_models" / "labial.json")
            t.add_argument("--families", default=",".join(TRAIN))
            t.add_argument("--cross-json", type=Path, help="the cross run's --json, quoted in the card")
        else:
            t.add_argument("--json", type=Path)
            t.add_argument("--models", type=Path, help="keep each left-out model here (for eval_speech.py)")
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.dir, args.lines, args.seed, args.families.split(","))
    elif args.cmd == "cross":
        res = cross(args.dir, args.hidden, args.seed, args.up, args.down, args.strict, args.models,
                    not args.no_augment)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    else:
        train(args.dir, args.out, args.hidden, args.seed, args.up, args.down, args.strict,
              args.families.split(","), args.cross_json, not args.no_augment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
