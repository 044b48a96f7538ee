"""``keyframeface serve``: avatars that act out lines sent over a WebSocket, and the overlay page.

One process holds every avatar of ``config.toml`` (each with its own sinks and idle layer), one
frame clock that ticks them all, and one asyncio loop in its own thread that serves:

* ``GET /`` (and the page's few static files): the overlay, read into memory at start-up from a
  fixed list, so nothing a client sends names a file;
* ``/ws``: the control API of :mod:`runtime.protocol` (say, interrupt, subscribe).

Audio (a say's WAV inline, or a stream of binary chunks): the protocol session validates and
decodes it on the loop thread (numpy, no alignment); each audio line gets a
:class:`runtime.audio.LiveSpeech`, whose worker thread has the recogniser's process find the
phones and whose clock (the audio's, set by the client's ``start``) the avatar's mouth follows.
Bad audio is an error event; the line goes on without it.

Threads meet only through non-blocking hand-offs: avatar events (generator and clock threads) reach
the loop with ``call_soon_threadsafe``; frames go through an in-process sink that appends to a
bounded inbox and wakes the loop once per batch. Each client has a control queue (acks, events,
errors: never dropped) and a bounded frame queue that drops its own oldest frames, written by its
own task, so a slow client falls behind alone.

One model backend is shared by all avatars: a llama.cpp context per avatar would multiply memory.
It generates the lines of every avatar together, one batch step for all (``model.batch``), or
spreads them over a pool of model servers (``model.servers``); a backend that cannot only takes
one line at a time, and avatars take turns. An interrupt cancels only its own avatar's line.

Security: loopback by default; any other address needs a token (``?token=`` or ``Authorization:
Bearer``), compared in constant time, for the page and the socket alike. On loopback the Host header
must be a loopback name (no DNS rebinding), and a browser's Origin must be the page's own or listed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import ipaddress
import logging
import queue
import socket
import struct
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from runtime import assemble
from runtime import protocol as proto
from runtime.animate.idle import Idle
from runtime.avatar import Avatar
from runtime.clock import FrameClock
from runtime.config import AvatarConfig, Config
from runtime.generate.prompt import LineRequest
from runtime.loop_thread import LoopThread
from runtime.sinks.base import Sink
from runtime.sinks.fanout import Fanout

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/overlay.js": ("overlay.js", "text/javascript; charset=utf-8"),
          "/overlay.css": ("overlay.css", "text/css; charset=utf-8")}
SEND_BUFFER = 32 * 1024  # bytes a client may have in flight (kernel) and queued (websockets), each
HARD_MAX_MESSAGE = 1 << 20  # the library closes the connection (1009) above this; below, we answer
CONTROL_QUEUE = 512  # control messages waiting for a client that does not read: then it is closed
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _warm_kernels() -> None:
    from runtime.animate import speech
    from runtime.animate.spline import warm_up

    warm_up()
    speech.warm()
    try:  # the recogniser's process (1-2 s to start): now, not at the first audio line
        from runtime.audio import worker

        worker.warm()
    except Exception as e:  # the first audio line starts it
        log.warning("audio recogniser not warmed: %s", e)


class ServeError(Exception):
    """Cannot serve as asked (non-loopback without a token, port in use, bad avatar names)."""


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_static() -> dict[str, tuple[str, bytes]]:
    return {path: (ctype, (WEB / name).read_bytes()) for path, (name, ctype) in STATIC.items()}


def _f32_wav_header(rate: int) -> bytes:
    """The head of a float32 mono WAV stream of unknown length: the session's decoded samples are
    handed to the line's LiveSpeech in this one format, whatever the client sent."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 0xFFFFFFFF, b"WAVE", b"fmt ", 16, 3, 1, rate, rate * 4,
                       4, 32, b"data", 0xFFFFFFFF)


class _Voice:
    """One audio line: the client that owns it and the LiveSpeech its mouth follows.

    A TTS engine often sends a sentence's chunks in a burst, faster than they are analysed: when
    the LiveSpeech's queue is full, the samples wait here, merged into one piece, and are handed
    over again shortly (loop thread only; nothing is lost, the frame clock is not involved)."""

    __slots__ = ("client", "live", "rate", "headed", "failed", "pending", "closing", "retry")

    def __init__(self, client: Client, live, rate: int | None) -> None:
        self.client, self.live, self.rate = client, live, rate
        self.headed = False  # the f32 WAV head has been fed
        self.failed = False  # an analysis error has been reported to the client
        self.pending: list[bytes] = []  # f32 samples not yet taken by the LiveSpeech
        self.closing = False  # the audio is complete: close the LiveSpeech once pending is in
        self.retry = None  # the scheduled hand-over, while one is

    def feed(self, samples: np.ndarray, rate: int | None) -> None:
        if not self.headed:
            self.live.feed(_f32_wav_header(rate or self.rate or 16000))
            self.headed = True
        if len(samples):
            self.pending.append(samples.astype("<f4").tobytes())
        self._hand_over()

    def _hand_over(self) -> None:
        self.retry = None
        if self.pending:
            data = b"".join(self.pending)
            try:
                self.live.feed(data)
                self.pending.clear()
            except Exception:
                if self.live.error or self.live.done:  # the analysis has ended: nothing more to give
                    self.pending.clear()
                    raise
                self.pending = [data]  # its queue is full: again in a moment, as one piece
                self.retry = asyncio.get_running_loop().call_later(0.02, self._hand_over)
                return
        if self.closing:
            self.live.close()

    def close(self) -> None:
        self.closing = True
        try:
            if not self.headed:  # no audio came: a clean, empty stream rather than a "truncated" error
                self.feed(np.zeros(0, np.float32), self.rate)
            elif self.retry is None:
                self._hand_over()
        except Exception:  # the analysis had already ended (its error was reported): close it anyway
            self.live.close()

    def drop(self) -> None:
        """The line is over: stop at once."""
        if self.retry is not None:
            self.retry.cancel()
        self.pending.clear()
        self.live.close()


class _Tap(Sink):
    """The in-process sink that hands one avatar's frames to the server's loop."""

    scheme = "serve"

    def __init__(self, server: Server, avatar: str) -> None:
        super().__init__()
        self.server, self.avatar = server, avatar

    @property
    def label(self) -> str:
        return f"serve:{self.avatar}"

    def send(self, frame: np.ndarray, number: int, t: float) -> None:
        self.server._frame_from_clock(self.avatar, frame, number, t)


class _Frame:
    """One frame of one avatar, encoded lazily once per format however many clients want it."""

    __slots__ = ("avatar", "frame", "seq", "t", "_enc")

    def __init__(self, avatar: str, frame: np.ndarray, seq: int, t: float) -> None:
        self.avatar, self.frame, self.seq, self.t = avatar, frame, seq, t
        self._enc: dict[str, str | bytes] = {}

    def encoded(self, fmt: str) -> str | bytes:
        data = self._enc.get(fmt)
        if data is None:
            enc = proto.frame_binary if fmt == "binary" else proto.frame_json
            data = self._enc[fmt] = enc(self.avatar, self.frame, self.seq, self.t)
        return data


class Client:
    def __init__(self, ws, session: proto.Session, frame_queue: int) -> None:
        self.ws = ws
        self.session = session
        self.subs: dict[str, str] = {}  # avatar or "*" -> frame format
        self.control: collections.deque[str] = collections.deque()
        self.frames: collections.deque[tuple[_Frame, str]] = collections.deque(maxlen=frame_queue)
        self.ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0
        self.closing = False

    @property
    def peer(self) -> str:
        addr = getattr(self.ws, "remote_address", None)
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    def fmt_for(self, avatar: str) -> str | None:
        return self.subs.get(avatar) or self.subs.get(proto.ALL)

    def push_control(self, msg: str) -> None:
        if len(self.control) >= CONTROL_QUEUE:
            if not self.closing:  # it does not read its replies: end it rather than grow
                self.closing = True
                asyncio.ensure_future(self.ws.close(1008, "not reading its messages"))
            return
        self.control.append(msg)
        self.ready.set()

    def push_frame(self, item: _Frame, fmt: str) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self.frames.append((item, fmt))
        self.ready.set()


class Server:
    """Avatars + frame clock + HTTP/WebSocket front. :meth:`start`, then :meth:`close`."""

    def __init__(self, cfg: Config, backend, language, *, host: str | None = None,
                 port: int | None = None, token: str | None = None) -> None:
        s = cfg.serve
        self.cfg = cfg
        self.backend, self.language = backend, language
        self.host = host if host is not None else s.host
        self.port = s.port if port is None else port
        self.token = s.token if token is None else token
        if not is_loopback(self.host) and not self.token:
            raise ServeError(f"--host {self.host} is not a loopback address: give a --token "
                             "(clients present it) or serve on 127.0.0.1")
        self.loopback = is_loopback(self.host)
        self.origins = set(s.origins)
        self.limits = proto.Limits(max_message=s.max_message, max_text=s.max_text,
                                   say_rate=s.say_rate, say_burst=s.say_burst,
                                   audio_max_message=s.audio_max_message, audio_max_chunk=s.audio_max_chunk,
                                   audio_max_bytes=s.audio_max_bytes, audio_max_seconds=s.audio_max_seconds,
                                   audio_streams=s.audio_streams, audio_stream_timeout=s.audio_stream_timeout)
        self.max_size = max(HARD_MAX_MESSAGE, s.audio_max_message, s.audio_max_chunk) + 1024
        self._voices: dict[tuple[str, str], _Voice] = {}  # (avatar, line id) -> its audio
        self.limits = dataclasses.replace(self.limits, max_turn=s.max_turn, chunk_timeout=s.chunk_timeout)
        specs = list(cfg.avatars)
        if not specs:
            specs = [AvatarConfig(name="default", sinks=list(cfg.sinks))]
        elif cfg.sinks:
            log.warning("serve: [[avatars]] are listed, so the top-level sinks %s are not used", cfg.sinks)
        names = [a.name for a in specs]
        bad = [n for n in names if not proto._ID.match(n) or n == proto.ALL]
        if bad or len(set(names)) != len(names):
            raise ServeError(f"avatar names must be unique, 1-64 characters of A-Z a-z 0-9 _ . : - "
                             f"(got {names})")
        self.specs = specs
        self.names = names
        self.static = load_static()
        self.avatars: dict[str, Avatar] = {}
        self.fanouts: list[Fanout] = []
        self.clients: set[Client] = set()
        self._owners: dict[tuple[str, str], Client] = {}
        self._streams: dict[tuple[str, str], object] = {}  # chunked lines still taking text -> Line
        self._inbox: collections.deque[_Frame] = collections.deque(maxlen=240)
        self._wake_pending = False
        self._subscribed = 0  # clients with any subscription: the clock skips the tap when 0
        self._lt = LoopThread("serve")
        self.loop = self._lt.loop
        self.clock: FrameClock | None = None
        self._broken: set[str] = set()
        self._day0 = 0.0

    # -- start / stop -----------------------------------------------------------------------------
    def _idle_for(self, i: int) -> Idle | None:
        c = self.cfg.idle
        if not c.enabled:
            return None
        seed = None if c.seed < 0 else c.seed + i  # avatars of one seed still blink apart
        return Idle.from_config(c, seed=seed, fps=self.cfg.animation.fps)

    def start(self) -> Server:
        cfg, a = self.cfg, self.cfg.animation
        try:
            for i, spec in enumerate(self.specs):
                sinks = assemble.sinks(dataclasses.replace(cfg, sinks=list(spec.sinks)))
                fanout = assemble.fanout(cfg, [_Tap(self, spec.name), *sinks])
                self.fanouts.append(fanout)
                self.avatars[spec.name] = Avatar(
                    spec.name, self.backend, self.language, fanout, fps=a.fps, attack=a.attack,
                    release=a.release, interpolator=assemble.interpolator(cfg),
                    timeout=cfg.model.timeout, max_lines=cfg.serve.max_lines,
                    on_event=self._event_from_thread, idle=self._idle_for(i),
                    interrupt_blend=cfg.serve.interrupt_blend, lead=a.lead_ms / 1000.0)
            from websockets.asyncio.server import serve

            try:
                self._lt.start(lambda: serve(
                    self._handler, self.host, self.port, process_request=self._http, compression=None,
                    max_size=self.max_size, write_limit=SEND_BUFFER, close_timeout=1.0,
                    server_header="keyframeface"))
            except OSError as e:  # port in use, bad host
                raise ServeError(f"cannot serve on {self.host}:{self.port}: {e}") from None
        except Exception:
            self.close()
            raise
        if self.port == 0:
            self.port = self._lt.port
        now = datetime.now()
        self._day0 = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        _warm_kernels()  # compile or load every per-frame kernel now, not on the clock's first frames
        self.clock = assemble.frame_clock(cfg, self._tick, self.fanouts).start()
        log.info("serving http://%s:%d/ (WebSocket /ws) for avatars %s", self.host, self.port, self.names)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        if self.clock is not None:
            self.clock.stop()
        for av in self.avatars.values():
            av.close()
        for f in self.fanouts:
            f.close()
        self._lt.stop()

    def serve_forever(self) -> None:
        while self._lt.alive:
            self._lt.thread.join(0.5)

    # -- frame clock thread -----------------------------------------------------------------------
    def _tick(self, n: int, t: float) -> bool:
        for name, av in self.avatars.items():
            try:
                av.tick(n, t, self._day0 + t)
            except Exception as e:  # one avatar's bug must not stop the others' faces
                if name not in self._broken:
                    self._broken.add(name)
                    log.exception("avatar %s: tick failed: %s (further failures not logged)", name, e)
        return True

    def _frame_from_clock(self, avatar: str, frame: np.ndarray, seq: int, t: float) -> None:
        if not self._subscribed:
            return
        self._inbox.append(_Frame(avatar, frame.copy(), seq, t))
        if not self._wake_pending:
            self._wake_pending = True
            self._lt.call_soon(self._drain_frames)

    def _event_from_thread(self, event: dict) -> None:
        self._lt.call_soon(self._dispatch, event)

    # -- loop thread ------------------------------------------------------------------------------
    def _drain_frames(self) -> None:
        self._wake_pending = False
        while self._inbox:
            item = self._inbox.popleft()
            for c in self.clients:
                fmt = c.fmt_for(item.avatar)
                if fmt is not None:
                    c.push_frame(item, fmt)

    def _dispatch(self, event: dict) -> None:
        avatar, line_id = event.get("avatar", ""), event.get("id", "")
        key = (avatar, line_id)
        owner = self._owners.get(key)
        if event.get("type") == "done":
            self._owners.pop(key, None)
            self._streams.pop(key, None)
            voice = self._voices.pop(key, None)
            if voice is not None:  # interrupted or finished: stop its analysis, drop late chunks
                voice.client.session.kill_stream(line_id)
                voice.drop()
        msg = proto.event(event)
        for c in self.clients:
            if c is owner or c.fmt_for(avatar) is not None:
                c.push_control(msg)

    def _http(self, connection, request):
        """process_request: the page, the token, Host/Origin checks; None = go on to /ws."""
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        parts = urlsplit(request.path)
        headers = request.headers
        if self.loopback:
            host = urlsplit(f"//{headers.get('Host') or ''}").hostname or ""
            if host.lower() not in LOOPBACK_NAMES:
                return connection.respond(403, "Host must be a loopback name\n")
        if self.token:
            given = parse_qs(parts.query).get("token", [""])[0]
            auth = headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return connection.respond(401, "a valid token is required\n")
        if parts.path == "/ws":
            origin = headers.get("Origin")
            if origin is not None and origin != f"http://{headers.get('Host')}" and origin not in self.origins:
                return connection.respond(403, "Origin not allowed\n")
            return None
        static = self.static.get(parts.path)
        if static is None:
            return connection.respond(404, "not found\n")
        ctype, body = static
        return Response(200, "OK", Headers([
            ("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
                                        "style-src 'self' 'unsafe-inline'"),
        ]), body)

    async def _handler(self, ws) -> None:
        client = Client(ws, proto.Session(self.names, self.limits), self.cfg.serve.frame_queue)
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sock is not None:
            # a small kernel buffer: a slow client gets fresh frames late rather than stale ones
            # seconds behind (loopback autotuning would otherwise queue seconds of frames)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.clients.add(client)
        client.push_control(proto.hello(self.names, self.cfg.animation.fps, self.limits))
        writer = asyncio.create_task(self._writer(client))
        expirer = asyncio.create_task(self._expire_streams(client))
        log.info("client %s connected", client.peer)
        try:
            async for msg in ws:
                self._on_message(client, msg)
        except Exception as e:  # connection errors end this client only
            log.debug("client %s: %s", client.peer, e)
        finally:
            self.clients.discard(client)
            if client.subs:
                self._subscribed -= 1
            for key in [k for k, c in self._owners.items() if c is client]:
                del self._owners[key]
                self._streams.pop(key, None)  # its chunked lines get no more text: abandoned in time
            for chunk in client.session.close():  # its lines keep the audio they got
                self._audio_chunk(client, chunk)
            writer.cancel()
            expirer.cancel()
            log.info("client %s left (sent %d, dropped %d frames)", client.peer, client.sent, client.dropped)

    def _on_message(self, client: Client, msg: str | bytes) -> None:
        try:
            cmd = client.session.receive(msg, time.monotonic())
        except proto.ProtocolError as e:
            client.push_control(e.event())
            return
        if isinstance(cmd, proto.Say):
            self._say(client, cmd)
        elif isinstance(cmd, proto.Chunk):
            self._chunk(client, cmd)
        elif isinstance(cmd, proto.Interrupt):
            dropped = self.avatars[cmd.avatar].interrupt()
            client.push_control(proto.event({"type": "interrupted", "avatar": cmd.avatar,
                                             "dropped": dropped}))
        elif isinstance(cmd, proto.Subscribe):
            if not client.subs:
                self._subscribed += 1
            client.subs[cmd.avatar] = cmd.frames
            client.push_control(proto.event({"type": "subscribed", "avatar": cmd.avatar,
                                             "frames": cmd.frames}))
        elif isinstance(cmd, proto.AudioChunk):
            self._audio_chunk(client, cmd)
        elif isinstance(cmd, proto.Start):
            voice = self._voices.get((cmd.avatar, cmd.id))
            if voice is None or voice.client is not client:
                client.push_control(proto.error("unknown_stream", f"start: no line {cmd.id!r} with audio on "
                                                f"avatar {cmd.avatar!r}", cmd.id))
            else:
                voice.live.start(time.perf_counter() - cmd.position)
        elif isinstance(cmd, proto.Unsubscribe):
            had = bool(client.subs)
            if cmd.avatar == proto.ALL:
                client.subs.clear()
            else:
                client.subs.pop(cmd.avatar, None)
            if had and not client.subs:
                self._subscribed -= 1
            client.push_control(proto.event({"type": "unsubscribed", "avatar": cmd.avatar}))

    def _say(self, client: Client, cmd: proto.Say) -> None:
        av = self.avatars[cmd.avatar]
        if cmd.id and (cmd.avatar, cmd.id) in self._owners:
            client.push_control(proto.error("invalid_field", f"id {cmd.id!r} is already in use", cmd.id))
            if cmd.audio is not None and cmd.audio.stream:
                client.session.drop_stream(cmd.id)
            return
        req = LineRequest(text=cmd.text, context=cmd.context, emotion=cmd.emotion, id=cmd.id, heard=cmd.heard)
        plan = None
        if cmd.audio_error is not None:  # bad audio: say so; the line goes on without it
            client.push_control(cmd.audio_error.event())
        voice = None
        if cmd.audio is not None:
            voice = self._voice(client, cmd)
            plan = voice.live
        elif cmd.spoken:  # planned here, on the loop thread: never on the frame clock
            from runtime.animate.speech import SpeechPlan

            words = [{"word": w, "start": a, "end": b} for w, a, b in cmd.words] if cmd.words else None
            try:
                plan = SpeechPlan.from_text(cmd.text, words=words, duration=cmd.duration, start=cmd.start)
            except ValueError as e:
                client.push_control(proto.error("invalid_field", f"speech: {e}", cmd.id or None))
                return
        s = self.cfg.serve
        try:
            line = av.say(req, speech=plan, chunked=cmd.more, chunk_timeout=s.chunk_timeout,
                          max_chars=s.max_turn)  # assigns an id when the client gave none
        except queue.Full:
            client.push_control(proto.error(
                "too_many_lines", f"avatar {cmd.avatar!r} already has {self.cfg.serve.max_lines} lines "
                "waiting; wait for a done or interrupt", cmd.id or None))
            if voice is not None:
                if cmd.audio.stream:
                    client.session.drop_stream(cmd.id)
                voice.drop()
            return
        self._owners[(cmd.avatar, req.id)] = client
        if cmd.more:
            self._streams[(cmd.avatar, req.id)] = line
        if voice is not None:
            self._voices[(cmd.avatar, req.id)] = voice
        client.push_control(proto.event({"type": "ack", "id": req.id, "avatar": cmd.avatar}))

    def _chunk(self, client: Client, cmd: proto.Chunk) -> None:
        """More text of a chunked line: its complete sentences go to the model at once."""
        key = (cmd.avatar, cmd.id)
        line = self._streams.get(key)
        if line is None or self._owners.get(key) is not client:
            client.push_control(proto.error("invalid_field", f"id {cmd.id!r}: no line of that id is taking "
                                            "text (it ended, was interrupted or abandoned, or was refused)",
                                            cmd.id))
            return
        try:
            self.avatars[cmd.avatar].feed(line, cmd.text, final=not cmd.more)
        except ValueError as e:  # abandoned a moment ago, or over max_turn
            client.push_control(proto.error("invalid_field", f"id {cmd.id!r}: {e}", cmd.id))
            return
        if not cmd.more:
            del self._streams[key]

    # -- audio (loop thread) ----------------------------------------------------------------------
    def _voice(self, client: Client, cmd: proto.Say) -> _Voice:
        """The LiveSpeech for a say with audio: inline samples fed at once, a stream's as they come.
        Audio time 0 plays ``start`` seconds after the audio arrives, until a start message says."""
        from runtime.audio import LiveSpeech

        loop = self._lt

        def on_error(msg: str) -> None:  # the worker thread: analysis failed, the queue overflowed
            if not voice.failed:
                voice.failed = True
                loop.call_soon(client.push_control, proto.error("invalid_audio", f"audio: {msg}", cmd.id or None))

        au = self.cfg.audio
        live = LiveSpeech(None, cmd.text, wav=True, lookahead=cmd.start or au.lookahead, on_error=on_error,
                          stall=self.limits.audio_stream_timeout + 5.0, beats=au.beats, strength=au.beat_strength)
        voice = _Voice(client, live, cmd.audio.rate)
        if not cmd.audio.stream:
            voice.feed(cmd.audio.samples, cmd.audio.rate)
            voice.close()
        return voice

    def _audio_chunk(self, client: Client, chunk: proto.AudioChunk) -> None:
        if chunk.error is not None:
            client.push_control(chunk.error.event())
        voice = self._voices.get((chunk.avatar, chunk.id))
        if voice is None or voice.client is not client:
            return  # the line is over (interrupted, done); its late audio is not needed
        try:
            voice.feed(chunk.samples, chunk.rate)
        except Exception as e:  # the analysis has failed: the mouth it had goes on
            if not voice.failed:
                voice.failed = True
                client.push_control(proto.error("invalid_audio", f"audio: {e}", chunk.id))
        if chunk.end:
            voice.close()

    async def _expire_streams(self, client: Client) -> None:
        while True:
            await asyncio.sleep(0.5)
            if client.session.streams:
                for chunk in client.session.expire(time.monotonic()):
                    self._audio_chunk(client, chunk)

    async def _writer(self, client: Client) -> None:
        try:
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.control or client.frames:
                    if client.control:  # replies first: frames may be dropped, replies never
                        await client.ws.send(client.control.popleft())
                        continue
                    item, fmt = client.frames.popleft()
                    await client.ws.send(item.encoded(fmt))
                    client.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("writer for %s ended: %s", client.peer, e)
