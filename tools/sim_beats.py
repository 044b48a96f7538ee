"""The runtime's feeling decision per beat, without writing keyframes: seconds instead of minutes.

For each line it runs what the keyframe backend decides before the model reads anything (the beats
of ``runtime.generate.beats.plan``, then ``LlamaBackend._told``: hint, emotion-word cues, feeling
model) and scores a face made of those decisions the way ``tools/eval_keyframes.py`` scores real
faces: one expected feeling, the most intense non-neutral beat (a stand-in for the probe's most
intense keyframe; the surer reading breaks ties), else neutral; two, the first beat and the last.
On MELD dev it reads within 0.01 of the end-to-end run (docs/BENCHMARKS.md, issue 16), so a change
to the beats can be screened here before an end-to-end run.

    .venv/bin/python tools/sim_beats.py --meld ../shared/data/emotion/meld/dev_sent_emo.csv
    .venv/bin/python tools/sim_beats.py --prompts ../shared/eval/prompts_dialogue_dev.jsonl
    .venv/bin/python tools/sim_beats.py --prompts tools/data/own_turns.jsonl --anchor 0.6   # stop 26
    .venv/bin/python tools/sim_beats.py --prompts tools/data/own_turns.jsonl --blend 0      # stop 27

``--anchor A``: an experiment (``beats.plan(anchor=A)``, off in the runtime): a sentence without a
turn word starts a new beat only while the whole line's own reading is below A (a line read surely
as one feeling stays one beat).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_keyframes import meld_prompts, weighted_f1  # noqa: E402  (tools/ is on the path)

from runtime import assemble  # noqa: E402
from runtime import config as C  # noqa: E402
from runtime.generate import beats  # noqa: E402
from runtime.generate.prompt import LineRequest  # noqa: E402


def decide(backend, p: dict, anchor: float | None = None, blend: float | None = None) -> list[str]:
    """The feelings a face made of the runtime's decisions for line ``p`` reads as, one per expected."""
    req = LineRequest(p["text"], context=p.get("context", ""), emotion=p.get("emotion", ""),
                      heard=p.get("heard", ""))
    rules = backend.beat_rules if blend is None else replace(backend.beat_rules, blend=blend)
    parts = beats.plan(req, backend.feeling, split=backend.split_clauses, rules=rules, anchor=anchor)
    decided = []
    for part in parts:
        told = backend._told(part, True)
        name = max(told, key=told.__getitem__)
        # the face peaks where the beat is most intense (the feeling's certainty breaks ties)
        decided.append((name, (part.intensity or 0.0, (part.prior or {}).get(name, -9.0))))
    if len(p["expect"]) == 1:
        felt = [d for d in decided if d[0] != "neutral"]
        return [max(felt, key=lambda d: d[1])[0] if felt else "neutral"]
    return [decided[0][0], decided[-1][0]]


def score(backend, lines: list[dict], anchor: float | None, blend: float | None = None) -> dict:
    truth, pred = [], []
    for p in lines:
        truth += p["expect"]
        pred += decide(backend, p, anchor, blend)
    right = sum(t == q for t, q in zip(truth, pred))
    return {"weighted_f1": round(weighted_f1(truth, pred), 4), "segment_accuracy": round(right / len(truth), 4),
            "lines": len(lines)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="JSONL with text and expect (the probe's format)")
    src.add_argument("--meld", help="MELD CSV: measure only")
    ap.add_argument("--anchor", type=float, nargs="*", default=None,
                    help="also score the --anchor experiment at these values")
    ap.add_argument("--blend", type=float, nargs="*", default=None,
                    help="also score with these feeling.blend values (0: each beat read alone, as until stop 27)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "config.toml"))
    args = ap.parse_args(argv)
    lines = (meld_prompts(args.meld, False, 1) if args.meld
             else [json.loads(x) for x in Path(args.prompts).read_text().splitlines() if x.strip()])
    cfg = C.load(args.config)
    cfg.model.process = False
    backend = assemble.local_backend(cfg, assemble.language(cfg))
    try:
        out = {"as shipped": score(backend, lines, None)}
        for a in args.anchor or []:
            out[f"anchor {a}"] = score(backend, lines, a)
        for b in args.blend or []:
            out[f"blend {b}"] = score(backend, lines, None, b)
    finally:
        backend.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
