#!/usr/bin/env python3
"""Score the keyframe generator on a prompt set in one process, with the shared emotion probe's rules.

The probe itself (``../shared/eval/emotion_probe.py --cmd ...``) starts the CLI once per prompt,
which reloads the model every time; this tool loads it once, so decoding variants can be compared
quickly, and it also reports speed: tokens per keyframe, first-keyframe latency and the real-time
factor (seconds of animation per second of generation).

    .venv/bin/python tools/eval_keyframes.py --prompts tests/data/prompts_heldout.jsonl
    .venv/bin/python tools/eval_keyframes.py --prompts ../shared/eval/prompts_dev.jsonl --plain
    .venv/bin/python tools/eval_keyframes.py --meld ../shared/data/emotion/meld/dev_sent_emo.csv --heard

``--meld`` scores TV dialogue one utterance at a time (``--heard``: with the utterance before it in
the same dialogue as ``heard``): each face is read back by the probe's ``label_segment`` (a face
left at rest is neutral) and the summary adds the weighted F1 over MELD's seven classes.
``--classifier-only`` skips the keyframe model and scores the feeling model's own label.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE = ROOT.parent / "shared" / "eval" / "emotion_probe.py"


def load_probe(path: Path = PROBE):
    spec = importlib.util.spec_from_file_location("emotion_probe", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the emotion probe from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    from runtime import assemble, config
    from runtime.generate.llama import LlamaBackend
    from runtime.generate.models import adapter, weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts")
    src.add_argument("--meld", help="MELD CSV (Utterance, Emotion, Dialogue_ID, Utterance_ID): measure only")
    ap.add_argument("--heard", action="store_true", help="--meld: the previous utterance as heard")
    ap.add_argument("--every", type=int, default=1, help="--meld: every Nth utterance only")
    ap.add_argument("--narration", type=float, default=None,
                    help="how much the feeling model counts in a stage direction (beats.NARRATION)")
    ap.add_argument("--heard-words", type=int, default=None, help="feeling.heard_words (read heard up to N words)")
    ap.add_argument("--feeling", default="auto", help="feeling model: 'auto' (shipped), '' (none) or a path")
    ap.add_argument("--feeling-weight", type=float, default=None)
    ap.add_argument("--reading", type=float, default=None,
                    help="feeling.reading: the keyframe model's own reading in speech")
    ap.add_argument("--change", type=float, default=None, help="beat change confidence (feeling.change)")
    ap.add_argument("--blend", type=float, default=None,
                    help="the whole line's share in a beat's reading (feeling.blend)")
    ap.add_argument("--aside", type=float, default=None,
                    help="how far below the line's own a beat of another feeling peaks (feeling.aside)")
    ap.add_argument("--classifier-only", action="store_true", help="score the feeling model's label alone")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quant", default=None, help="model.quant: 'auto', '' (as shipped) or a type such as Q8_0")
    ap.add_argument("--lora", default="", help="adapter path, 'auto' (the shipped one) or '' (none: few-shot)")
    ap.add_argument("--config")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--plain", action="store_true", help="plain few-shot: no calibration, no clause split")
    ap.add_argument("--no-calibrate", action="store_true")
    ap.add_argument("--no-split", action="store_true")
    ap.add_argument("--calibrate", default="1.0", help="calibration strength (0 = off); a comma list sweeps")
    ap.add_argument("--examples", type=int, default=-1, help="use only the first N few-shot examples")
    ap.add_argument("--no-consistent", action="store_true", help="let each line of a clause change emotion")
    ap.add_argument("--no-onset", action="store_true", help="the model writes each clause's first keyframe too")
    ap.add_argument("--decide-early", type=float, default=None,
                    help="keyframes.decide_early: nats of agreement that skip the model's reading (0 = never)")
    ap.add_argument("--no-cues", action="store_true", help="no prior for emotion words the text uses")
    ap.add_argument("--probe", default=str(PROBE))
    ap.add_argument("--save", help="write {id, keyframes, seconds} lines (the probe's --results format)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary last")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--question", help="replace the question after the text ('' drops it)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    ap.add_argument("--bench-kv", type=int, default=0, metavar="N",
                    help="instead of scoring: time N lines' prompt evaluation with each way to reuse the prefix")
    args = ap.parse_args(argv)

    probe = load_probe(Path(args.probe))
    cfg = config.load(args.config)
    lang = assemble.language(cfg)
    sweep = [0.0] if (args.plain or args.no_calibrate) else [float(x) for x in args.calibrate.split(",")]
    from runtime.generate import prompt as prompt_mod

    examples = None if args.examples < 0 else prompt_mod.EXAMPLES[: args.examples]
    if args.question is not None:  # an experiment: the question after the text costs ~11 tokens a line
        prompt_mod.QUESTION = args.question
    lora = adapter(args.model, args.lora)
    cfg.feeling.model = args.feeling
    if args.heard_words is not None:
        cfg.feeling.heard_words = args.heard_words
    if args.narration is not None:
        from runtime.generate import beats

        beats.NARRATION = args.narration
    rss0 = _rss_mb()
    feeling = assemble.feeling(cfg)
    feeling_mb = _rss_mb() - rss0
    prompts = (meld_prompts(args.meld, args.heard, args.every) if args.meld else
               [json.loads(line) for line in open(args.prompts) if line.strip()])[: args.limit or None]
    if args.classifier_only:
        if feeling is None:
            raise SystemExit("--classifier-only needs a feeling model")
        truth = [p["expect"][0] for p in prompts]
        t0 = time.perf_counter()
        pred = [feeling.classify(p["text"], p.get("heard", "")).label for p in prompts]
        ms = 1000 * (time.perf_counter() - t0) / max(len(prompts), 1)
        print(json.dumps({"lines": len(prompts), "weighted_f1": round(weighted_f1(truth, pred), 4),
                          "accuracy": round(sum(t == p for t, p in zip(truth, pred)) / max(len(truth), 1), 4),
                          "ms_per_line": round(ms, 1), "memory_mb": round(feeling_mb, 1),
                          "per_class": per_class(truth, pred)}))
        return 0
    t0 = time.perf_counter()
    path = weights(args.model, cfg.model.quant if args.quant is None else args.quant)
    backend = LlamaBackend(path, assemble.grammar(cfg, lang), n_threads=args.threads,
                           n_ctx=cfg.model.context, max_tokens=cfg.model.max_tokens,
                           lora_path=str(lora) if lora else None, language=lang, calibrate=1.0,
                           split_clauses=not (args.plain or args.no_split), examples=examples,
                           max_keyframes=cfg.keyframes.max_keyframes, consistent=not args.no_consistent,
                           level_floor=0 if args.plain else 4, cue_prior=0.0 if args.no_cues else 2.0,
                           onset=not args.no_onset, feeling=feeling,
                           feeling_weight=cfg.feeling.weight if args.feeling_weight is None else args.feeling_weight,
                           beat_rules=replace(assemble.beat_rules(cfg), **{
                               k: v for k, v in (("change", args.change), ("blend", args.blend), ("aside", args.aside))
                               if v is not None}),
                           decide_early=cfg.keyframes.decide_early if args.decide_early is None else args.decide_early,
                           reading=cfg.feeling.reading if args.reading is None else args.reading)
    load_s = time.perf_counter() - t0
    if args.bench_kv:
        bench_kv(backend, prompts[: args.bench_kv])
        return 0
    for calibrate in sweep:
        backend.calibrate = calibrate
        run(args, probe, backend, lang, prompts, calibrate, load_s)
    return 0


def _rss_mb() -> float:
    """This process's resident memory (Linux), for the feeling model's cost."""
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def _clean(text: str) -> str:
    """MELD's typographic quotes and stray cp1252 bytes, as plain ASCII punctuation."""
    for a, b in (("\x92", "'"), ("\x91", "'"), ("\x93", '"'), ("\x94", '"'), ("\x85", "..."), ("\x96", "-"),
                 ("\x97", "-"), ("\u2019", "'"), ("\u2018", "'"), ("\u201c", '"'), ("\u201d", '"'),
                 ("\u2026", "..."), ("\u2014", "-"), ("\u2013", "-"), ("\u00a0", " ")):
        text = text.replace(a, b)
    return " ".join(text.split())


def meld_prompts(path: str, heard: bool, every: int) -> list[dict]:
    """MELD rows as prompts ({id, text, expect, heard}), in dialogue order."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: (int(r["Dialogue_ID"]), int(r["Utterance_ID"])))
    out, prev = [], {}
    for r in rows:
        text = _clean(r["Utterance"])
        d = r["Dialogue_ID"]
        out.append({"id": f"meld{d}_{r['Utterance_ID']}", "text": text, "expect": [r["Emotion"]],
                    "heard": prev.get(d, "") if heard else ""})
        prev[d] = text
    return out[:: max(1, every)]


def weighted_f1(truth: list[str], pred: list[str]) -> float:
    """F1 per class present in ``truth``, weighted by its share (a predicted class not in truth,
    such as contempt on MELD, is simply wrong)."""
    n = len(truth)
    total = 0.0
    for c in set(truth):
        tp = sum(t == p == c for t, p in zip(truth, pred))
        fp = sum(p == c != t for t, p in zip(truth, pred))
        fn = sum(t == c != p for t, p in zip(truth, pred))
        total += (2 * tp / (2 * tp + fp + fn) if tp else 0.0) * sum(t == c for t in truth) / n
    return total


def per_class(truth: list[str], pred: list[str]) -> dict[str, dict]:
    out = {}
    for c in sorted(set(truth) | set(pred)):
        tp = sum(t == p == c for t, p in zip(truth, pred))
        out[c] = {"n": sum(t == c for t in truth), "predicted": sum(p == c for p in pred),
                  "recall": round(tp / max(1, sum(t == c for t in truth)), 3),
                  "precision": round(tp / max(1, sum(p == c for p in pred)), 3)}
    return out


def bench_kv(backend, prompts: list[dict]) -> None:
    """CPU milliseconds (run it with --threads 1) to get a line's first logits: cut the KV cache back
    to the prefix (what the backend does), restore a saved prefix state (llama_state_seq_set_data),
    or evaluate the whole prompt again (no reuse)."""
    from runtime.generate import prompt as prompt_mod
    from runtime.generate.prompt import LineRequest

    llm = backend.llm

    def cut() -> None:  # the prefix's own sequence (0) back to the prefix; no line is generating
        llm._ctx.kv_cache_seq_rm(0, backend.prefix_tokens, -1)
        llm.n_tokens = backend.prefix_tokens

    times: dict[str, list[float]] = {"cut": [], "restore": [], "full": []}
    for p in prompts:
        # the prefix state holds the turn's opening; the line evaluates the rest (as the backend does)
        part = prompt_mod.line_part(LineRequest(p["text"]), backend.template)[len(backend._open):]
        part = llm.tokenize(part.encode(), add_bos=False, special=True)
        for how in times:
            t0 = time.process_time()
            if how == "cut":
                cut()
            elif how == "restore":
                saved = backend._snapshot
                llm._ctx.kv_cache_clear()
                import ctypes

                buf = (ctypes.c_uint8 * len(saved)).from_buffer_copy(saved)
                backend.lib.llama_state_seq_set_data(llm._ctx.ctx, buf, len(saved), 0)
                llm.n_tokens = backend.prefix_tokens
            else:
                llm._ctx.kv_cache_clear()
                llm.n_tokens = 0
                llm.eval(llm.tokenize((backend.prefix + backend._open).encode(), add_bos=True, special=True))
            llm.eval(part)
            times[how].append(1000 * (time.process_time() - t0))
    cut()
    print(json.dumps({"prefix_tokens": backend.prefix_tokens, "snapshot_bytes": len(backend._snapshot),
                      **{f"{k}_cpu_ms_median": round(statistics.median(v), 1) for k, v in times.items()}}))


def run(args, probe, backend, lang, prompts, calibrate: float, load_s: float) -> None:
    from runtime.generate import stream_keyframes
    from runtime.generate.prompt import LineRequest
    from runtime.keyframes.parser import KeyframeParser

    saved = open(args.save, "w") if args.save else None
    right = total = whole = bad = lines = 0
    # Wall-clock numbers suffer when the cores are shared; with --threads 1 the process CPU time is
    # what the same work costs on a core of its own, so both are reported.
    firsts: list[float] = []
    firsts_cpu: list[float] = []
    rtfs_cpu: list[float] = []
    rtfs: list[float] = []
    tpk: list[float] = []
    truth: list[str] = []
    pred: list[str] = []
    for p in prompts:
        parser = KeyframeParser(lang)
        req = LineRequest(text=p["text"], context=p.get("context", ""), emotion=p.get("emotion", ""),
                          heard=p.get("heard", ""))
        start, cpu0 = time.perf_counter(), time.process_time()
        first = first_cpu = None
        keys = []
        for kf in stream_keyframes(backend, parser, req):
            if first is None:
                first, first_cpu = time.perf_counter() - start, time.process_time() - cpu0
            keys.append(kf)
        gen, gen_cpu = time.perf_counter() - start, time.process_time() - cpu0
        bad += len(parser.errors)
        lines += len(keys) + len(parser.errors)
        kfs = [k.to_json() for k in keys]
        if saved:
            saved.write(json.dumps({"id": p["id"], "keyframes": kfs, "seconds": gen}) + "\n")
        if keys:
            firsts.append(first)
            firsts_cpu.append(first_cpu)
            rtfs.append(keys[-1].t / gen)
            rtfs_cpu.append(keys[-1].t / max(gen_cpu, 1e-6))
            tpk.append(backend.stats.get("tokens", 0) / len(keys))
        expect = p["expect"]
        got = [probe.label_segment(seg) for seg in probe.segments(kfs, len(expect))]
        hits = sum(g == e for g, e in zip(got, expect))
        truth += expect
        pred += ["neutral" if g == "missing" else g for g in got]
        right += hits
        total += len(expect)
        whole += hits == len(expect)
        if not args.quiet:
            mark = "ok  " if hits == len(expect) else "MISS"
            items = " | ".join(lang.format_items(k.items) for k in keys)
            print(f"{mark} {p['id']} expect={'>'.join(expect)} got={'>'.join(got)}  {p['text'][:60]!r}  [{items}]",
                  flush=True)
    summary = {
        "prompts_file": args.prompts or args.meld, "model": args.model, "heard": args.heard,
        "feeling": args.feeling, "weighted_f1": round(weighted_f1(truth, pred), 4), "plain": args.plain,
        "calibrate": calibrate,
        "split": not (args.plain or args.no_split),
        "segment_accuracy": round(right / max(total, 1), 4), "prompt_accuracy": round(whole / max(len(prompts), 1), 4),
        "well_formed": round(1 - bad / max(lines, 1), 4), "load_s": round(load_s, 2),
        "first_keyframe_ms_median": round(1000 * statistics.median(firsts), 1) if firsts else None,
        "realtime_factor_median": round(statistics.median(rtfs), 2) if rtfs else None,
        "first_keyframe_cpu_ms_median": round(1000 * statistics.median(firsts_cpu), 1) if firsts_cpu else None,
        "realtime_factor_cpu_median": round(statistics.median(rtfs_cpu), 2) if rtfs_cpu else None,
        "tokens_per_keyframe": round(statistics.mean(tpk), 2) if tpk else None,
        "grammar_full_mask_share": round(backend.grammar_counts["full_checks"] / max(
            backend.grammar_counts["checks"] + backend.grammar_counts["full_checks"], 1), 3),
    }
    if args.meld:
        summary["per_class"] = per_class(truth, pred)
    print(json.dumps(summary) if args.json else f"segment accuracy: {summary['segment_accuracy']:.3f}  {summary}",
          flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
