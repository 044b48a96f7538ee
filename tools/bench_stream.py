#!/usr/bin/env python3
"""Text arriving in pieces: how soon the face starts once the first sentence is complete.

    tools/bench_stream.py [--lines 12] [--word-ms 40] [--config config.toml] [--json]

Each dialogue turn (written for this tool; none from an evaluation set) is fed to an avatar word by
word, ``--word-ms`` apart (a chat model streaming its reply), the way ``serve`` feeds a chunked
``say``. Measured per turn, with the real default model as serve runs it (in its own process) and a
60 fps frame clock ticking the avatar:

* ``after_sentence_ms``: from the moment the first sentence is complete (the chunk that decides it
  was fed) to the first keyframe parsed;
* ``whole_line_ms`` (baseline, same run): the first sentence said as one ordinary line, say -> first
  keyframe; the difference is what streaming costs (the sentence wait aside);
* ``handoff_ms``: from the first sentence complete to the model being asked for it: what the
  chunked path itself adds (the rest of ``after_sentence_ms`` is the model's own first keyframe);
* ``sentences``: how many requests the turn became; keyframe times must rise across them.

The two kinds of line alternate in order from turn to turn, so neither always runs first.

Medians over the turns; the box is shared, so compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime import assemble, config  # noqa: E402
from runtime.avatar import Avatar  # noqa: E402
from runtime.clock import FrameClock  # noqa: E402
from runtime.generate.prompt import LineRequest  # noqa: E402
from runtime.sinks.fanout import Fanout  # noqa: E402
from runtime.text import split_sentences  # noqa: E402

TURNS = [
    "Ha! You fell right in the mud! Wait, are you bleeding?",
    "You came back. I honestly thought I'd never see you again.",
    "Put the sword down. Slowly, or I swear I'll scream for the guards.",
    "Oh, a gift? For me? You really shouldn't have.",
    "Don't touch that! It's been in my family for three generations.",
    "We won the whole tournament! Can you believe it? Nobody thought we had a chance.",
    "Something's moving in the cellar. Did you hear that? There it is again.",
    "That smell... What did you leave in the oven this time?",
    "Fine. Do whatever you want. You always do anyway.",
    "The test results came back. It's not good news, I'm afraid.",
    "Oh, brilliant. Another meeting that could have been an email.",
    "My little brother just got into the academy! I'm so proud of him.",
]


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


class _Timed:
    """The backend, with the time each request was handed to it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.asked: list[float] = []

    def stream(self, req, cancel=None):
        self.asked.append(time.perf_counter())
        yield from self.inner.stream(req, cancel)


def run(cfg, lines: int, word_ms: float) -> dict:
    lang = assemble.language(cfg)
    t0 = time.perf_counter()
    model = assemble.backend(cfg, lang)
    load_s = time.perf_counter() - t0
    backend = _Timed(model)
    a = cfg.animation
    avatar = Avatar("bench", backend, lang, Fanout([]), fps=a.fps, attack=a.attack, release=a.release,
                    interpolator=assemble.interpolator(cfg), timeout=cfg.model.timeout)
    clock = FrameClock(a.fps, lambda n, t: avatar.tick(n, t) is not None).start()
    turns = (TURNS * (lines // len(TURNS) + 1))[:lines]
    rows = []
    try:
        avatar.say(LineRequest("She smiles."))  # warm: the first line after a load is slower
        _wait(lambda: avatar.idle, 60)
        for i, turn in enumerate(turns):
            first = split_sentences(turn)[0]

            def whole(first=first) -> float:
                base = avatar.say(LineRequest(first))
                _wait(lambda: base.first_key_at or base.gen_done, 60)
                _wait(lambda: avatar.idle, 60)
                return (base.first_key_at - base.submitted) * 1000 if base.first_key_at else float("nan")

            whole_ms = whole() if i % 2 == 0 else float("nan")
            keys: list[float] = []
            line = avatar.say(LineRequest(""), chunked=True, chunk_timeout=30.0)
            avatar.on_event = lambda e, line=line, keys=keys: keys.append(e["t"]) if e.get("type") == "keyframe" \
                and e.get("id") == line.req.id else None
            words = turn.split(" ")
            n_asked = len(backend.asked)
            for j, w in enumerate(words):
                avatar.feed(line, w if j == 0 else " " + w, final=j == len(words) - 1)
                time.sleep(word_ms / 1000)
            _wait(lambda: avatar.idle, 60)
            avatar.on_event = lambda e: None
            after_ms = (line.first_key_at - line.first_text_at) * 1000 if line.first_key_at else float("nan")
            handoff_ms = (backend.asked[n_asked] - line.first_text_at) * 1000
            if i % 2:
                whole_ms = whole()
            rows.append({"turn": turn, "after_sentence_ms": round(after_ms, 1), "whole_line_ms": round(whole_ms, 1),
                         "handoff_ms": round(handoff_ms, 2),
                         "sentences": len(split_sentences(turn)), "keyframes": line.keyframes,
                         "times_rise": all(b > a for a, b in zip(keys, keys[1:])), "error": line.error or None})
            sys.stderr.write(f"\r  turns: {i + 1}/{len(turns)}   ")
        sys.stderr.write("\n")
    finally:
        clock.stop()
        avatar.close()
        if hasattr(model, "close"):
            model.close()
    ok = [r for r in rows if r["after_sentence_ms"] == r["after_sentence_ms"]]
    return {
        "turns": len(rows), "word_ms": word_ms, "model_process": cfg.model.process, "load_s": round(load_s, 1),
        "after_sentence_ms_median": round(statistics.median(r["after_sentence_ms"] for r in ok), 1),
        "after_sentence_ms_max": max(r["after_sentence_ms"] for r in ok),
        "whole_line_ms_median": round(statistics.median(r["whole_line_ms"] for r in ok), 1),
        "handoff_ms_median": round(statistics.median(r["handoff_ms"] for r in ok), 2),
        "handoff_ms_max": max(r["handoff_ms"] for r in ok),
        "times_rise_all": all(r["times_rise"] for r in rows), "errors": sum(bool(r["error"]) for r in rows),
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=12)
    ap.add_argument("--word-ms", type=float, default=40.0, help="milliseconds between words fed")
    ap.add_argument("--config", help="config.toml (defaults if omitted)")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = ap.parse_args()
    cfg = config.load(args.config)
    res = run(cfg, args.lines, args.word_ms)
    if args.json:
        print(json.dumps(res, indent=1))
    print(f"first keyframe after the first sentence is complete: median {res['after_sentence_ms_median']} ms "
          f"(max {res['after_sentence_ms_max']}); the same sentence as a whole line: median "
          f"{res['whole_line_ms_median']} ms; sentence complete -> model asked: median {res['handoff_ms_median']} ms "
          f"(max {res['handoff_ms_max']}); {res['turns']} turns, words {res['word_ms']:g} ms apart, "
          f"times rise across sentences: {res['times_rise_all']}, errors: {res['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
