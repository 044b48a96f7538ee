#!/usr/bin/env python3
"""A feeling model read beside another of a different vocabulary: the runtime mixes their readings.

Readers with the same vocabulary are merged into one graph (tools/ensemble_feeling.py). One with
another vocabulary (an MPNet beside MiniLMs) cannot share its inputs, so the main model's card
names it under ``with`` and runtime/text/feeling.py reads the line with both and takes the weighted
mean of their log-probabilities. This tool chooses the other reader's weight and the mix's neutral
shift on the two sets that choices are made on (our own held-out lines and GoEmotions dev: the
largest sum of weighted F1), and writes the pair, with a card, to ``--out``.

    .venv/bin/python tools/mix_feeling.py exported_models/feeling.onnx /tmp/mp8b/feeling.onnx --out /tmp/mix

``--meld FILE`` also reports MELD dev's label alone for the chosen mix (measure only: MELD chooses
nothing here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_feeling as tf  # noqa: E402

from runtime.text.feeling import LABELS, FeelingModel  # noqa: E402

WEIGHTS = (0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0)
SHIFTS = tuple(np.arange(0.0, 1.51, 0.25))


CACHE = Path.home() / ".cache" / "keyframeface" / "feeling_probs"


def raw(model: FeelingModel, rows: list[dict], model_path: Path | None = None) -> np.ndarray:
    """Each line's probabilities without any shift, read as the runtime reads it (heard only for
    short replies); kept under ~/.cache by the model file's and the lines' hash when a path is given."""
    key = None
    if model_path is not None:
        h = hashlib.md5(Path(model_path).read_bytes())
        h.update(json.dumps([(r["text"], r.get("heard", "")) for r in rows]).encode())
        key = CACHE / f"{h.hexdigest()}.npy"
        if key.exists():
            return np.load(key)
    out = []
    for r in rows:
        heard = r.get("heard", "") if len(r["text"].split()) <= model.heard_words else ""
        out.append(model._raw(r["text"], heard))
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        np.save(key, np.array(out))
    return np.array(out)


def mixed(a: np.ndarray, b: np.ndarray, w: float, shift: float) -> np.ndarray:
    logp = (1 - w) * np.log(np.maximum(a, 1e-9)) + w * np.log(np.maximum(b, 1e-9))
    logp[:, LABELS.index("neutral")] += shift
    return logp


def f1(rows: list[dict], logp: np.ndarray) -> float:
    return tf.scores([r["label"] for r in rows], [LABELS[i] for i in logp.argmax(1)])[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("main", type=Path, help="the main feeling.onnx (its card and feeling_vocab.txt beside it)")
    ap.add_argument("other", type=Path, help="the other reader's feeling.onnx (its feeling_vocab.txt beside it)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="feeling_mpnet", help="the other reader's file name in --out")
    ap.add_argument("--meld", type=Path, default=None, help="MELD dev CSV: report the chosen mix's label alone")
    ap.add_argument("--mix-below", type=float, default=0.8,
                    help="mix only where the graph's top reading (shifted) is below this (card mix_below; 1.01 = "
                         "always): 0.8 read own held-out 0.7843 and GoEmotions dev 0.6415 against 0.7853 / 0.6415 "
                         "always, with the MPNet run on 36 %% / 60 %% of their lines")
    args = ap.parse_args(argv)

    main_m = FeelingModel(args.main, args.main.with_name("feeling_vocab.txt"))
    other_vocab = args.other.with_name(f"{args.other.stem}_vocab.txt")  # feeling_mpnet.onnx: feeling_mpnet_vocab.txt
    if args.other.stem == "feeling" or not other_vocab.exists():
        other_vocab = args.other.with_name("feeling_vocab.txt")  # as tools/train_feeling.py writes it
    other = FeelingModel(args.other, other_vocab)
    _, held = tf.own_lines(tf.OWN)
    go_dev = tf.goemotions(tf.SHARED / "goemotions" / "dev.tsv", 0, random.Random(1))
    sets = {"own_held": held, "go_dev": go_dev}
    probs = {}
    for name, rows in sets.items():
        probs[name] = (raw(main_m, rows, args.main), raw(other, rows, args.other))
        print(f"read {name}: {len(rows)} lines", flush=True)

    table = {}
    for w in WEIGHTS:
        for s in SHIFTS:
            table[(w, s)] = {n: round(f1(sets[n], mixed(*probs[n], w, s)), 4) for n in sets}
    for w in WEIGHTS:
        best = max(SHIFTS, key=lambda s: sum(table[(w, s)].values()))
        print(f"weight {w:.2f}: best neutral shift {best:.2f} -> {table[(w, best)]}", flush=True)
    w, s = max(table, key=lambda k: sum(table[k].values()))
    print(f"chosen: weight {w:.2f}, neutral shift {s:.2f} -> {table[(w, s)]}", flush=True)
    for bar in (0.6, 0.7, 0.8, 0.9, 1.01):
        got = {}
        for n in sets:
            a, b = probs[n]
            alone, mix = mixed(a, b, 0.0, s), mixed(a, b, w, s)
            p = np.exp(alone - alone.max(1, keepdims=True))
            use = (p / p.sum(1, keepdims=True)).max(1) < bar
            got[n] = (round(f1(sets[n], np.where(use[:, None], mix, alone)), 4), f"mixed {use.mean():.0%}")
        print(f"  mix below {bar:.2f}: {got}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    card = json.loads(args.main.with_suffix(".json").read_text())  # read before --out may overwrite it
    for src, dst in ((args.main, "feeling.onnx"), (args.main.with_name("feeling_vocab.txt"), "feeling_vocab.txt"),
                     (args.other, f"{args.name}.onnx"),
                     (other_vocab, f"{args.name}_vocab.txt")):
        if not (args.out / dst).exists() or not (args.out / dst).samefile(src):
            shutil.copy(src, args.out / dst)
    other_card = args.other.with_suffix(".json")
    if "with" not in card:  # the graph's own figures, before any mix
        card["figures_graph_alone"] = card.get("figures", {})
    card["with"] = [{"model": f"{args.name}.onnx", "vocab": f"{args.name}_vocab.txt", "weight": round(w, 4),
                     "card": json.loads(other_card.read_text()) if other_card.exists() else {}}]
    card["output"] = ("probs[batch, 8] of this graph; the runtime mixes in the readers under 'with' "
                      "(weighted mean of log-probabilities) and applies 'bias'")
    card["bias"] = {"neutral": round(float(s), 2)}
    card["mix_below"] = args.mix_below
    card["figures"] = {n: {"weighted_f1": v} for n, v in table[(w, s)].items()}
    card["mix_sweep"] = {f"{k[0]:.2f}/{k[1]:.2f}": v for k, v in table.items()}
    card["command"] = "tools/mix_feeling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "feeling.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out}", flush=True)

    if args.meld:
        from eval_keyframes import meld_prompts

        rows = [{"text": r["text"], "label": r["expect"][0]} for r in meld_prompts(str(args.meld), False, 1)]
        a, b = raw(main_m, rows, args.main), raw(other, rows, args.other)
        for tag, (ww, ss) in (("main alone", (0.0, float(main_m.bias[LABELS.index("neutral")]))),
                              ("chosen mix", (w, s))):
            print(f"MELD dev, label alone, {tag}: {f1(rows, mixed(a, b, ww, ss)):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
