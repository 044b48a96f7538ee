"""``keyframeface serve``: avatars that act out lines sent over a WebSocket, and the overlay page.

One process holds every avatar of ``config.toml`` (each with its own sinks and idle layer), one
frame clock that ticks them all, and one asyncio loop in its own thread that serves:

* ``GET /`` (and the page's few static files): the overlay, read into memory at start-up from a
  fixed list, so nothing a client sends names a file;
* ``/ws``: the control API of :mod:`runtime.protocol` (say, interrupt, subscribe).

Threads meet only through non-blocking hand-offs: avatar events (generator and clock threads) reach
the loop with ``call_soon_threadsafe``; frames go through an in-process sink that appends to a
bounded inbox and wakes the loop once per batch. Each client has a control queue (acks, events,
errors: never dropped) and a bounded frame queue that drops its own oldest frames, written by its
own task, so a slow client falls behind alone.

One model backend is shared by all avatars: a llama.cpp context per avatar would multiply memory
and, on a small CPU, make both lines slower than taking turns (the backend's lock serialises
them). An interrupt cancels only its own avatar's generation, which frees the model at once.

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
                                   say_rate=s.say_rate, say_burst=s.say_burst)
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
                fanout = Fanout([_Tap(self, spec.name), *sinks])
                self.fanouts.append(fanout)
                self.avatars[spec.name] = Avatar(
                    spec.name, self.backend, self.language, fanout, fps=a.fps, attack=a.attack,
                    release=a.release, interpolator=assemble.interpolator(cfg),
                    timeout=cfg.model.timeout, max_lines=cfg.serve.max_lines,
                    on_event=self._event_from_thread, idle=self._idle_for(i),
                    interrupt_blend=cfg.serve.interrupt_blend)
            from websockets.asyncio.server import serve

            try:
                self._lt.start(lambda: serve(
                    self._handler, self.host, self.port, process_request=self._http, compression=None,
                    max_size=HARD_MAX_MESSAGE, write_limit=SEND_BUFFER, close_timeout=1.0,
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
        self.clock = FrameClock(a.fps, self._tick, spin_s=a.spin_ms / 1000.0).start()
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
            writer.cancel()
            log.info("client %s left (sent %d, dropped %d frames)", client.peer, client.sent, client.dropped)

    def _on_message(self, client: Client, msg: str | bytes) -> None:
        try:
            cmd = client.session.receive(msg, time.monotonic())
        except proto.ProtocolError as e:
            client.push_control(e.event())
            return
        if isinstance(cmd, proto.Say):
            self._say(client, cmd)
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
            return
        req = LineRequest(text=cmd.text, context=cmd.context, emotion=cmd.emotion, id=cmd.id)
        plan = None
        if cmd.spoken:  # planned here, on the loop thread: never on the frame clock
            from runtime.animate.speech import SpeechPlan

            words = [{"word": w, "start": a, "end": b} for w, a, b in cmd.words] if cmd.words else None
            try:
                plan = SpeechPlan.from_text(cmd.text, words=words, duration=cmd.duration, start=cmd.start)
            except ValueError as e:
                client.push_control(proto.error("invalid_field", f"speech: {e}", cmd.id or None))
                return
        try:
            av.say(req, speech=plan)  # assigns an id when the client gave none
        except queue.Full:
            client.push_control(proto.error(
                "too_many_lines", f"avatar {cmd.avatar!r} already has {self.cfg.serve.max_lines} lines "
                "waiting; wait for a done or interrupt", cmd.id or None))
            return
        self._owners[(cmd.avatar, req.id)] = client
        client.push_control(proto.event({"type": "ack", "id": req.id, "avatar": cmd.avatar}))

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
