"""Lines started together on one model, against any checkout (only its public interface is used):
median and max text -> first keyframe, tokens per second over all lines. ``keyframeface bench``
reports the same figures for this checkout (``bench.concurrency``); this script also runs against
an older tree, for a baseline in the same sitting:

    PYTHONPATH=. .venv/bin/python tools/lines_at_once.py --counts 1,2,4,8 --rounds 3
    git archive <commit> | tar -x -C /tmp/base && PYTHONPATH=/tmp/base .venv/bin/python tools/lines_at_once.py

The model runs as configured in that tree's config.toml (in its own process by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import runtime
from runtime import assemble, config
from runtime.generate import LineRequest, stream_keyframes
from runtime.keyframes.parser import KeyframeParser

LINES = [
    "She laughs at the joke, then suddenly looks worried.",
    "He slams his fist on the table, furious.",
    "Tears roll down her cheeks as she reads the letter.",
    "The child gasps when the magician pulls out a rabbit.",
    "He smirks, unimpressed by the offer.",
    "She wrinkles her nose at the smell of the spoiled milk.",
    "A cold shiver runs through him as the lights go out.",
    "They grin at each other across the room.",
]


def at_once(backend, lang, n: int, rounds: int) -> dict:
    firsts: list[float] = []
    tokens, seconds = 0, 0.0
    for r in range(rounds):
        start = threading.Barrier(n + 1)
        got: list[tuple[float | None, int]] = [(None, 0)] * n

        def line(i: int, text: str, start=start, got=got) -> None:
            start.wait()
            t0 = time.perf_counter()
            first, count = None, 0
            for kf in stream_keyframes(backend, KeyframeParser(lang), LineRequest(text)):
                if first is None:
                    first = (time.perf_counter() - t0) * 1000
                count += kf.tokens
            got[i] = (first, count)

        threads = [threading.Thread(target=line, args=(i, LINES[(r * n + i) % len(LINES)]), daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds += time.perf_counter() - t0
        firsts += [f for f, _ in got if f is not None]
        tokens += sum(c for _, c in got)
    return {"lines_at_once": n, "first_keyframe_ms_median": round(statistics.median(firsts), 1),
            "first_keyframe_ms_max": round(max(firsts), 1), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    cfg = config.load(Path(runtime.__file__).resolve().parent.parent / "config.toml")
    lang = assemble.language(cfg)
    backend = assemble.backend(cfg, lang)
    list(backend.stream(LineRequest("Hello.")))
    tree = str(Path(runtime.__file__).resolve().parent.parent)
    for n in (int(x) for x in args.counts.split(",")):
        print(json.dumps({"tree": tree, **at_once(backend, lang, n, args.rounds)}), flush=True)
    if hasattr(backend, "close"):
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
