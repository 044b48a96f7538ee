"""The ``keyframeface`` command: keyframes | say | render | serve | bench | demo.

Errors a user can cause (bad arguments, a bad config, a sink that cannot start, a missing model)
end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import queue
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from runtime import config as config_mod
from runtime.generate import Silent
from runtime.generate.prompt import LineRequest

log = logging.getLogger("keyframeface")
DEMO_LINE = "She laughs at the joke, then suddenly looks worried."


class UserError(Exception):
    """Something the user can fix; printed as one line."""


def _setup_logging(verbose: bool) -> logging.handlers.QueueListener:
    # The frame clock logs too: a queue handler makes a log call cost a put, never a write.
    q: queue.Queue = queue.Queue(10_000)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    listener = logging.handlers.QueueListener(q, handler)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    listener.start()
    return listener


def _request(args: argparse.Namespace, *, text_needed: bool = True) -> LineRequest:
    text = " ".join(args.text).strip()
    if not text and text_needed and not getattr(args, "audio", None):
        raise UserError("the line of text is empty")
    return LineRequest(text=text, context=args.context or "", emotion=args.emotion or "",
                       heard=_heard(args))


def _heard(args: argparse.Namespace) -> str:
    """--heard, checked as serve checks its say message's "heard"."""
    from runtime import protocol

    try:
        return protocol.validate_text({"heard": args.heard or ""}, "heard", protocol.Limits().max_heard).strip()
    except protocol.ProtocolError as e:
        raise UserError(f"--{e.message}") from None


def _config(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    if getattr(args, "model", None):
        cfg.model.name = args.model
    if getattr(args, "lora", None) is not None:
        cfg.model.lora_path = args.lora
    if getattr(args, "fps", None):
        cfg.animation.fps = args.fps
    return cfg


def _backend(cfg: config_mod.Config, realtime: bool = False):
    """The model; outside real time (keyframes, render) it stays in this process, since there is
    no frame clock to protect and the child's start-up would only add latency."""
    from runtime import assemble
    from runtime.generate.llama import GenerationError
    from runtime.generate.models import ModelNotFound

    lang = assemble.language(cfg)
    if not realtime:
        cfg.model.process = False
    try:
        backend = assemble.backend(cfg, lang)
    except (ModelNotFound, GenerationError, ValueError) as e:
        raise UserError(str(e)) from None
    return lang, backend


def _load(args: argparse.Namespace):
    cfg = _config(args)
    return (cfg, *_backend(cfg))


# -- keyframes ------------------------------------------------------------------------------------
def cmd_keyframes(args: argparse.Namespace) -> int:
    from runtime.generate import stream_keyframes
    from runtime.keyframes.parser import KeyframeParser

    if args.batch is not None:
        return _batch(args)
    req = _request(args)
    cfg, lang, backend = _load(args)
    start = time.perf_counter()
    n = 0
    for kf in stream_keyframes(backend, KeyframeParser(lang), req):
        n += 1
        if args.format == "jsonl":
            print(json.dumps(kf.to_json()), flush=True)
        else:
            print(f"{kf.t:6.2f}s  {lang.format_items(kf.items)}", flush=True)
    log.info("%d keyframes in %.2f s", n, time.perf_counter() - start)
    return 0


def _batch(args: argparse.Namespace) -> int:
    """--batch FILE ('-' = stdin): one JSON object a line in, JSON lines out; exit 1 if any failed."""
    from runtime import batch, protocol

    if args.text or args.context or args.emotion or args.heard:
        raise UserError("--batch takes its lines, contexts, emotions and heard from FILE: no text or "
                        "--context/--emotion/--heard with it")
    try:
        src = sys.stdin if args.batch == "-" else open(args.batch, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read {args.batch}: {e.strerror}") from None
    cfg, lang, backend = _load(args)  # the model, loaded once for the whole batch
    limits = protocol.Limits(max_text=cfg.serve.max_text)
    start = time.perf_counter()
    with src:
        ok, failed = batch.run(backend, lang, src, lambda obj: print(json.dumps(obj), flush=True), limits)
    log.info("batch: %d lines done, %d failed in %.2f s", ok, failed, time.perf_counter() - start)
    return 1 if failed else 0


# -- say ------------------------------------------------------------------------------------------
def _seconds_of_day() -> float:
    now = datetime.now()
    return now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6


def cmd_say(args: argparse.Namespace) -> int:
    from runtime import assemble
    from runtime.animate.spline import warm_up
    from runtime.avatar import Avatar
    from runtime.sinks import SinkError

    if args.stdin and (args.text or args.talk or args.words or args.duration or args.speak is not None
                       or args.audio):
        raise UserError("--stdin reads the line from standard input: no text, and no speech options with it")
    req = _request(args, text_needed=not args.stdin)
    cfg = _config(args)
    plan, wav = (None, None) if args.stdin else _spoken(args, req, cfg)
    if not args.sink and not cfg.sinks:
        raise UserError("no sink: add --sink livelink://127.0.0.1:11111 (or csv:take.csv)")
    try:
        sinks = assemble.sinks(cfg, args.sink or [])
    except SinkError as e:
        raise UserError(str(e)) from None
    try:
        if req.text or args.stdin:
            lang, backend = _backend(cfg, realtime=True)
        else:  # audio alone: no expression to generate
            lang, backend = assemble.language(cfg), Silent()
    except UserError:
        for s in sinks:
            s.close()
        raise
    warm_up()
    fanout = assemble.fanout(cfg, sinks)
    a = cfg.animation
    avatar = Avatar("default", backend, lang, fanout, fps=a.fps, attack=a.attack,
                    release=a.release, interpolator=assemble.interpolator(cfg),
                    timeout=cfg.model.timeout, idle=_idle(cfg, args), lead=a.lead_ms / 1000.0)
    day0 = _seconds_of_day()
    tail = int(a.fps * 0.25)  # a few rest frames after the line so receivers settle
    state = {"after": -1}
    started = threading.Event()
    if wav is not None:  # the audio starts on the line's first frame, off the clock thread
        threading.Thread(target=lambda: started.wait() and voice_play(wav), daemon=True).start()

    def tick(n: int, t: float) -> bool:
        avatar.tick(n, t, day0 + t)
        if line.first_frame_at and not started.is_set():
            started.set()
        if line.first_frame_at and avatar.current is None and not avatar.pending:
            state["after"] += 1
            return state["after"] < tail
        return True

    if args.stdin:  # text as it arrives: each sentence starts as soon as it is complete
        line = avatar.say(req, chunked=True, chunk_timeout=None, max_chars=cfg.serve.max_turn)
        threading.Thread(target=_pump_stdin, args=(avatar, line), name="stdin", daemon=True).start()
    else:
        line = avatar.say(req, speech=plan)
    clock = assemble.frame_clock(cfg, tick, [fanout])
    try:
        clock.start()
        while clock.running:
            clock.join(0.1)
    except KeyboardInterrupt:
        print("keyframeface: interrupted; closing sinks", file=sys.stderr)
    finally:
        clock.stop()
        avatar.close()
        fanout.close()
    s = clock.stats.summary()
    print(json.dumps({
        "line": req.text, "keyframes": line.keyframes, "tokens": line.tokens,
        "first_keyframe_ms": round((line.first_key_at - line.submitted) * 1000, 1) if line.first_key_at else None,
        "first_frame_ms": round((line.first_frame_at - line.submitted) * 1000, 1) if line.first_frame_at else None,
        **({"first_keyframe_after_sentence_ms": round((line.first_key_at - line.first_text_at) * 1000, 1)
            if line.first_key_at and line.first_text_at else None} if args.stdin else {}),
        "generation_s": round(line.gen_seconds, 3), "frames": s["frames"], "missed": s["missed"],
        "late_ms_p99": round(s["late_ms_p99"], 3), "clock": clock.scheduling, "sinks": [x.label for x in sinks],
        "error": line.error or None}), file=sys.stderr)
    return 0


def _pump_stdin(avatar, line) -> None:
    """``say --stdin``: each line of standard input as it arrives; end of input ends the line."""
    try:
        while raw := sys.stdin.readline():
            try:
                avatar.feed(line, raw)
            except ValueError as e:  # over serve.max_turn: the rest is not read
                log.warning("--stdin: %s; the rest of the input is dropped", e)
                break
    finally:
        try:
            avatar.feed(line, "", final=True)
        except ValueError:
            pass


# -- render ---------------------------------------------------------------------------------------
def cmd_render(args: argparse.Namespace) -> int:
    from runtime import assemble
    from runtime.animate.timeline import Track
    from runtime.generate import stream_keyframes
    from runtime.keyframes.parser import KeyframeParser
    from runtime.sinks.csv import write_take

    req = _request(args)
    cfg = _config(args)
    plan = _audio_plan(args, req, cfg) if args.audio else _speech(args, req)
    if req.text:
        lang, backend = _backend(cfg)
    else:  # audio alone: the mouth over the rest pose
        from runtime.assemble import language

        lang, backend = language(cfg), Silent()
    a = cfg.animation
    keys = list(stream_keyframes(backend, KeyframeParser(lang), req))
    track = Track(lang.rest, assemble.interpolator(cfg))
    for kf in keys:
        track.add(a.attack + kf.t, kf.values)
    track.add(track.end + a.release, lang.rest)
    track.finish()
    frames = track.render(a.fps)
    if plan is not None:  # jaw and lips from the words, the rest from the expression
        frames = plan.apply(frames, a.fps)
    idle = _idle(cfg, args)
    if idle is not None:  # blinks, gaze, breath and drift over the whole take, as `say` and `serve`
        idle.plan_speech(0.0, plan)
        frames = idle.compose(frames, idle.times(len(frames), a.fps))
    try:
        write_take(args.output, frames, a.fps)
    except OSError as e:
        raise UserError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"wrote {args.output}: {len(frames)} frames, {len(keys)} keyframes", file=sys.stderr)
    if args.plot:
        from runtime.plot import plot_take

        plot_take(frames, a.fps, [(a.attack + k.t, k) for k in keys], args.plot, title=req.text or args.audio)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# -- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.animate.spline import warm_up
    from runtime.serve import ServeError, Server
    from runtime.sinks import SinkError

    cfg = _config(args)
    if args.no_idle:
        cfg.idle.enabled = False
    lang, backend = _backend(cfg, realtime=True)
    warm_up()
    try:
        server = Server(cfg, backend, lang, host=args.host, port=args.port, token=args.token).start()
    except (ServeError, SinkError) as e:
        raise UserError(str(e)) from None
    ws_url = "ws" + server.url[len("http"):] + "ws"
    print(f"serving {server.url} (WebSocket {ws_url}) for avatars: {', '.join(server.names)}",
          file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if hasattr(backend, "close"):
            backend.close()
        if server.clock is not None:
            s = server.clock.stats.summary()
            print(json.dumps({"frames": s["frames"], "missed": s["missed"],
                              "late_ms_p99": round(s["late_ms_p99"], 3)}), file=sys.stderr)
    return 0


# -- bench --------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from runtime import bench

    cfg = _config(args)
    counts = tuple(int(x) for x in args.concurrent.split(",") if x.strip()) if args.concurrent else ()
    result = bench.run(cfg, pacing_seconds=args.seconds, lines=args.lines, concurrent=counts,
                       only_concurrency=args.only_concurrency)
    print(bench.table(result))
    if args.json:
        print(json.dumps(result))
    return 0


# -- demo -----------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """The README's first command: render the demo line to a take and a plot, then stream it."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = ["--config", args.config] if args.config else []
    text = args.text or [DEMO_LINE]
    render = parse_args(["render", *text, "-o", str(out / "demo.csv"), "--plot", str(out / "demo.png"), *base])
    cmd_render(render)
    say = parse_args(["say", *text, "--sink", args.sink, "--sink", f"csv:{out / 'demo_live.csv'}", *base])
    cmd_say(say)
    print(f"demo: streamed to {args.sink}; take {out / 'demo.csv'}, plot {out / 'demo.png'}",
          file=sys.stderr)
    return 0


def _line_args(p: argparse.ArgumentParser, text: str = "+", audio: bool = False) -> None:
    if audio:
        p.add_argument("text", nargs="*", help="the line: dialogue, stage direction (optional with --audio: "
                       "without it the mouth moves over the rest pose)")
    else:
        p.add_argument("text", nargs=text, help="the line: dialogue, stage direction")
    p.add_argument("--context", help="the scene or situation")
    p.add_argument("--emotion", help="an emotion hint, e.g. 'nervous'")
    p.add_argument("--heard", help="what was just said to the character (\"Okay.\" after \"I'm pregnant\")")
    _common(p)


def _speech_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speech (the mouth speaks the line's words; off unless one is given)")
    g.add_argument("--talk", action="store_true", help="speak the text at a natural rate")
    g.add_argument("--words", help="word timings JSON from a TTS engine: [{word, start, end}, ...]")
    g.add_argument("--duration", type=float, help="seconds of speech audio, when there are no word timings")
    g.add_argument("--speech-start", type=float, default=0.0, help="seconds into the line where the audio starts")
    g.add_argument("--audio", metavar="WAV", help="the line's voice: the mouth follows it (phones aligned to "
                   "TEXT when given, recognised when not; loudness opens the jaw)")


def voice_play(path: str) -> None:
    from runtime import voice

    if voice.play(path) is None:
        log.warning("no audio player found (aplay, paplay, pw-play); the voice is in %s", path)


def _audio_plan(args: argparse.Namespace, req: LineRequest, cfg: config_mod.Config):
    """``--audio FILE.wav``: the mouth from the voice; bad audio -> a warning and no mouth (the
    line goes on) when there is text, an error when the audio was all there was."""
    from runtime import audio

    try:
        a = audio.analyse_wav(args.audio, req.text or None, max_bytes=cfg.audio.max_bytes,
                              max_seconds=cfg.audio.max_seconds)
    except audio.AudioError as e:
        if not req.text:
            raise UserError(f"--audio: {e}") from None
        print(f"keyframeface: --audio: {e}; the line goes on without a mouth", file=sys.stderr)
        return None
    if a.error:
        log.warning("--audio: %s; the mouth follows phones recognised without the text", a.error)
    log.info("--audio: %.2f s, %d phones (%s)", a.duration, len(a.phones), a.method)
    return a.plan(start=args.speech_start, beats=cfg.audio.beats, strength=cfg.audio.beat_strength)


def _spoken(args: argparse.Namespace, req: LineRequest, cfg: config_mod.Config):
    """``say``: the speech plan and, with --speak or --audio --play, the WAV file to play."""
    if args.audio:
        if args.speak is not None:
            raise UserError("--audio and --speak both give the voice: use one")
        plan = _audio_plan(args, req, cfg)
        return plan, (args.audio if args.play else None)
    if args.play:
        raise UserError("--play plays the --audio file: give one")
    if args.speak is None:
        return _speech(args, req), None
    import tempfile

    from runtime import voice
    from runtime.animate import speech

    try:
        spoken = voice.speak(req.text)
    except voice.VoiceError as e:
        raise UserError(f"--speak: {e} (install espeak-ng)") from None
    path = args.speak or tempfile.mktemp(prefix="keyframeface-", suffix=".wav")
    spoken.write_wav(path)
    return speech.SpeechPlan.from_text(req.text, words=spoken.words, start=args.speech_start), path


def _speech(args: argparse.Namespace, req: LineRequest):
    """The line's speech plan, or None when the line is not spoken."""
    if not (args.talk or args.words or args.duration):
        return None
    from runtime.animate import speech

    try:
        words = speech.load_words(args.words) if args.words else None
        return speech.SpeechPlan.from_text(req.text, words=words, duration=args.duration,
                                           start=args.speech_start)
    except (ValueError, OSError) as e:
        raise UserError(f"speech: {e}") from None


def _idle(cfg: config_mod.Config, args: argparse.Namespace):
    """The idle layer for say/render: None with --no-idle (or [idle] enabled = false)."""
    if getattr(args, "no_idle", False) or not cfg.idle.enabled:
        return None
    from runtime.animate.idle import Idle

    seed = cfg.idle.seed if getattr(args, "seed", None) is None else args.seed
    return Idle.from_config(cfg.idle, seed=None if seed < 0 else seed, fps=cfg.animation.fps)


def _idle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-idle", action="store_true", help="no blinks, gaze, breathing, drift or micro-motion")
    p.add_argument("--seed", type=int, help="seed of the idle motion, for repeatable takes (overrides [idle] seed)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="config.toml (defaults if omitted)")
    p.add_argument("--model", help="model name or .gguf path (overrides config)")
    p.add_argument("--lora", help="GGUF LoRA adapter path (overrides config; 'auto' = the shipped one, '' = none)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="keyframeface", description="Text in, ARKit face frames out.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keyframes", help="print keyframes as they are generated")
    _line_args(p, text="*")
    p.add_argument("--format", choices=("jsonl", "text"), default="jsonl")
    p.add_argument("--batch", metavar="FILE", help="many lines, the model loaded once: one JSON object a line "
                   "({\"id\", \"text\", \"context\", \"emotion\", \"heard\"}; '-' = stdin), JSON lines out")
    p.set_defaults(func=cmd_keyframes)
    p = sub.add_parser("say", help="stream a line in real time to sinks, then exit")
    _line_args(p, audio=True)
    p.add_argument("--stdin", action="store_true", help="read the line from standard input as it arrives (a "
                   "chat model's reply): each sentence starts once complete; end of input ends the line")
    _speech_args(p)
    p.add_argument("--play", action="store_true", help="play the --audio file on this machine, mouth in sync")
    p.add_argument("--speak", nargs="?", const="", metavar="WAV",
                   help="speak the line with espeak-ng (to the audio device, and to WAV if given), mouth aligned")
    p.add_argument("--sink", action="append", help="sink URL, repeatable: livelink://HOST:11111, vmc://HOST:39539, "
                   "vts://localhost:8001, vrchat://127.0.0.1:9000, osc://HOST:PORT, ws://HOST:PORT, csv:PATH")
    p.add_argument("--fps", type=float, help="frame rate (overrides config)")
    _idle_args(p)
    p.set_defaults(func=cmd_say)
    p = sub.add_parser("render", help="write a Live Link Face CSV take as fast as possible")
    _line_args(p, audio=True)
    _speech_args(p)
    p.add_argument("-o", "--output", required=True, help="take.csv")
    p.add_argument("--plot", help="also draw the keyframes and curves to this PNG")
    p.add_argument("--fps", type=float, help="frame rate (overrides config)")
    _idle_args(p)
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("serve", help="serve the control API (WebSocket /ws) and the overlay page (GET /)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, help="port (default 8765)")
    p.add_argument("--token", help="clients must present it (?token= or Authorization: Bearer)")
    p.add_argument("--fps", type=float, help="frame rate (overrides config)")
    p.add_argument("--no-idle", action="store_true", help="no blinks, saccades, breathing or drift")
    _common(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("bench", help="measure the real-time budget on this machine")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.add_argument("--seconds", type=float, default=20.0, help="pacing run length")
    p.add_argument("--lines", type=int, default=12, help="lines for the latency figures (>= 10)")
    p.add_argument("--concurrent", default="1,2,4,8",
                   help="lines started together, for the concurrency figures ('' skips them)")
    p.add_argument("--only-concurrency", action="store_true", help="only the lines-at-once figures")
    _common(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="render and stream a demo line (the README's first command)")
    p.add_argument("text", nargs="*")
    p.add_argument("--out", default="out", help="folder for the take and plot")
    p.add_argument("--sink", default="livelink://127.0.0.1:11111")
    _common(p)
    p.set_defaults(func=cmd_demo)
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def _terminate(signum, frame):  # SIGTERM takes the same clean path as Ctrl-C: takes get closed
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    listener = _setup_logging(args.verbose)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except (UserError, config_mod.ConfigError) as e:
        print(f"keyframeface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        listener.stop()


if __name__ == "__main__":
    sys.exit(main())
