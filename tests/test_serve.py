"""keyframeface serve over a real WebSocket on loopback, with the real default model.

Two avatars in one server; the contract messages; every bad input (the connection stays open);
too many lines, rate limit, token, Host and Origin checks; interrupt mid-line with the per-frame
change bounded, both through the server (real model) and on the avatar alone (scripted model).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from runtime import channels
from runtime import protocol as proto
from runtime.animate.idle import EYE_BLINK, EYE_WIDE, MIX
from runtime.avatar import Avatar
from runtime.config import AvatarConfig, IdleConfig, ServeConfig
from runtime.generate.prompt import LineRequest
from runtime.keyframes.language import Language
from runtime.serve import ServeError, Server
from runtime.sinks.fanout import Fanout
from tests.test_avatar import Recorder

IX = channels.INDEX
SMILE = [IX["MouthSmileLeft"], IX["MouthSmileRight"]]
# channels the idle layer never touches: a jump in these can only come from the line / interrupt
QUIET = np.setdiff1d(np.flatnonzero(~MIX.any(axis=1)), np.r_[EYE_BLINK, EYE_WIDE])
JOY = {"text": "She laughs with delight at the wonderful news.", "emotion": "joy"}


def make_server(config, backend, language, **serve):
    cfg = dataclasses.replace(
        config, sinks=[], model=dataclasses.replace(config.model, timeout=60.0),
        avatars=[AvatarConfig("alice"), AvatarConfig("bob")],
        # blinks, saccades, breath and drift only: the capture-like layers (tone, micro-motion,
        # coupling, asymmetry) touch every channel, and these tests read "quiet" channels and rest
        idle=IdleConfig(seed=5, tone=0.0, micro=0.0, coupling=0.0, asymmetry=0.0),
        serve=dataclasses.replace(ServeConfig(), port=0, **serve))
    return Server(cfg, backend, language).start()


@pytest.fixture(scope="module")
def server(config, backend, language):
    srv = make_server(config, backend, language, max_lines=2, say_burst=6, say_rate=0.5)
    yield srv
    srv.close()


class Conn:
    """A test client: JSON control messages and frames kept apart."""

    def __init__(self, srv: Server, query: str = "", **kw) -> None:
        kw.setdefault("close_timeout", 1.0)  # a client full of unread frames cannot see the close reply
        self.ws = connect(f"ws://127.0.0.1:{srv.port}/ws{query}", open_timeout=5, **kw).__enter__()
        self.frames: list[tuple[str, int, float, np.ndarray]] = []
        self.hello = self.next("hello")

    def send(self, obj) -> None:
        self.ws.send(obj if isinstance(obj, str | bytes) else json.dumps(obj))

    def next(self, *types: str, timeout: float = 20.0) -> dict:
        """The next control message (of one of ``types`` if given); frames are kept in .frames."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {types} within {timeout} s")
            data = self.ws.recv(timeout=left)
            if isinstance(data, bytes):
                self.frames.append(proto.decode_frame_binary(data))
                continue
            msg = json.loads(data)
            if msg["type"] == "frame":
                self.frames.append((msg["avatar"], msg["seq"], msg["t"], np.array(msg["values"], np.float32)))
                continue
            if not types or msg["type"] in types:
                return msg

    def until(self, pred, timeout: float = 30.0) -> list[dict]:
        msgs = []
        end = time.monotonic() + timeout
        while not msgs or not pred(msgs[-1]):
            msgs.append(self.next(timeout=end - time.monotonic()))
        return msgs

    def close(self) -> None:
        self.ws.close()


def http_get(srv: Server, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


# -- HTTP -------------------------------------------------------------------------------------------
def test_overlay_page_and_static_files(server):
    status, ctype, body = http_get(server, "/")
    assert status == 200 and ctype.startswith("text/html") and b'id="face"' in body
    status, ctype, body = http_get(server, "/overlay.js")
    assert status == 200 and "javascript" in ctype and b"Float32Array" in body
    for path in ("/nope", "/../../../etc/passwd", "/%2e%2e/config.toml", "/web/index.html", "/serve.py"):
        assert http_get(server, path)[0] == 404, path


def test_host_header_must_be_loopback(server):
    assert http_get(server, "/", {"Host": "evil.example:8765"})[0] == 403
    assert http_get(server, "/", {"Host": f"localhost:{server.port}"})[0] == 200


def test_cross_site_origin_is_refused(server):
    with pytest.raises(InvalidStatus) as e:
        Conn(server, origin="http://evil.example")
    assert e.value.response.status_code == 403
    c = Conn(server, origin=f"http://127.0.0.1:{server.port}")  # the page's own origin
    c.close()


# -- the contract -----------------------------------------------------------------------------------
def test_hello(server):
    c = Conn(server)
    assert c.hello["channels"] == list(channels.NAMES)
    assert c.hello["avatars"] == ["alice", "bob"] and c.hello["fps"] == 60.0
    c.close()


def test_say_ack_keyframes_frames_done_on_two_avatars_at_once(server):
    c = Conn(server)
    c.send({"type": "subscribe", "frames": "json", "avatar": "*"})
    assert c.next("subscribed") == {"type": "subscribed", "avatar": "*", "frames": "json"}
    t0 = time.monotonic()
    c.send({"type": "say", "id": "hello-1", "avatar": "alice", **JOY})
    ack = c.next()
    ack_ms = (time.monotonic() - t0) * 1000
    assert ack == {"type": "ack", "id": "hello-1", "avatar": "alice"}
    print(f"\nack after {ack_ms:.1f} ms")
    assert ack_ms < 500  # at once, not after generation
    c.send({"type": "say", "avatar": "bob", "text": "He glares at them, furious.", "emotion": "anger"})
    bob_ack = c.next("ack")
    assert bob_ack["avatar"] == "bob" and bob_ack["id"]  # the server named the line
    msgs = []
    while sum(m["type"] == "done" for m in msgs) < 2:
        msgs.append(c.next(timeout=120))
    for name, line_id in (("alice", "hello-1"), ("bob", bob_ack["id"])):
        mine = [m for m in msgs if m.get("avatar") == name]
        keys = [m for m in mine if m["type"] == "keyframe"]
        assert keys and all(m["id"] == line_id for m in keys)
        assert all(isinstance(m["t"], float | int) and isinstance(m["values"], dict) for m in keys)
        assert mine[-1] == {"type": "done", "id": line_id, "avatar": name}
    by = {name: [f for f in c.frames if f[0] == name] for name in ("alice", "bob")}
    for frames in by.values():
        seqs = np.array([f[1] for f in frames])
        assert len(frames) > 60 and (np.diff(seqs) > 0).all()
        assert all(len(f[3]) == channels.COUNT for f in frames)
    alice = np.array([f[3] for f in by["alice"]])
    bob = np.array([f[3] for f in by["bob"]])
    assert alice[:, SMILE].max() > 0.3  # each avatar acted out its own line
    assert bob[:, [IX["BrowDownLeft"], IX["BrowDownRight"]]].max() > 0.3
    assert bob[:, SMILE].max() < 0.2
    c.close()


BAD = [
    ("{oops", "invalid_json"),
    (b"\x00\xff binary junk", "invalid_json"),
    ("[]", "invalid_message"),
    ('{"type": "sing"}', "unknown_type"),
    ('{"text": "no type"}', "missing_field"),
    ('{"type": "say"}', "missing_field"),
    ('{"type": "say", "text": 12}', "invalid_field"),
    ('{"type": "say", "text": "hi", "avatar": "nobody"}', "unknown_avatar"),
    ('{"type": "say", "text": "hi", "file": "/etc/passwd"}', "unknown_field"),
    ('{"type": "subscribe", "frames": "png"}', "invalid_field"),
    (json.dumps({"type": "say", "text": "x" * 20_000}), "message_too_big"),
]


def test_every_bad_input_gets_an_error_and_the_connection_stays_open(server):
    c = Conn(server)
    for data, code in BAD:
        c.send(data)
        err = c.next()
        assert err["type"] == "error" and err["code"] == code and err["message"], (data[:40], err)
    c.send({"type": "subscribe", "frames": "binary", "avatar": "bob"})
    assert c.next("subscribed")["frames"] == "binary"
    time.sleep(0.3)
    c.ws.send(json.dumps({"type": "unsubscribe", "avatar": "*"}))
    assert c.next("unsubscribed")
    assert any(f[0] == "bob" for f in c.frames)  # still served after eleven errors
    c.close()


def test_too_many_lines_then_interrupt_drops_them(server):
    c = Conn(server)
    ids = []
    for i in range(5):
        c.send({"type": "say", "id": f"q{i}", "avatar": "bob", "text": "He waits, then smiles."})
    replies = [c.next("ack", "error") for _ in range(5)]
    acks = [r["id"] for r in replies if r["type"] == "ack"]
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and all(e["code"] == "too_many_lines" for e in errors)
    assert 2 <= len(acks) <= 3  # one generating + max_lines waiting
    ids = acks
    c.send({"type": "interrupt", "avatar": "bob"})
    dones = {}
    while len(dones) < len(ids):
        m = c.next("done", timeout=120)
        dones[m["id"]] = m
    assert set(dones) == set(ids)
    assert sum(1 for m in dones.values() if m.get("interrupted")) >= len(ids) - 1
    c.close()


def test_say_rate_limit_is_per_client(server):
    c1, c2 = Conn(server), Conn(server)
    codes = []
    for i in range(8):
        c1.send({"type": "say", "id": f"r{i}", "avatar": "alice", "text": "Hm."})
        codes.append(c1.next("ack", "error"))
    limited = [m for m in codes if m["type"] == "error" and m["code"] == "rate_limited"]
    assert len(limited) >= 2  # burst 6
    c2.send({"type": "interrupt", "avatar": "alice"})  # another client is not limited by c1
    assert c2.next("interrupted")["avatar"] == "alice"
    c2.send({"type": "say", "id": "other", "avatar": "alice", "text": "Ok."})
    assert c2.next("ack", "error")["type"] == "ack"
    c2.send({"type": "interrupt", "avatar": "alice"})
    c2.next("done", timeout=120)
    c1.close()
    c2.close()


def test_interrupt_mid_line_blends_without_a_pop(server):
    c = Conn(server)
    c.send({"type": "subscribe", "frames": "binary", "avatar": "alice"})
    c.next("subscribed")
    c.send({"type": "say", "id": "long", "avatar": "alice", **JOY})
    c.next("ack")
    c.next("keyframe", timeout=120)
    # wait until the face is well into the smile, then cut it
    end = time.monotonic() + 10
    while time.monotonic() < end:
        data = c.ws.recv(timeout=5)
        if isinstance(data, bytes):
            c.frames.append(proto.decode_frame_binary(data))
            if c.frames[-1][3][SMILE].max() > 0.4:
                break
    n_before = len(c.frames)
    c.send({"type": "interrupt", "avatar": "alice"})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "long", timeout=30)
    assert any(m["type"] == "interrupted" for m in msgs)
    assert msgs[-1].get("interrupted") is True
    time.sleep(0.5)
    c.send({"type": "unsubscribe", "avatar": "alice"})
    c.next("unsubscribed")
    values = np.array([f[3] for f in c.frames])
    seqs = np.array([f[1] for f in c.frames])
    assert (np.diff(seqs) >= 1).all()
    contiguous = np.diff(seqs) == 1  # compare neighbours only (a dropped frame would double a step)
    steps = np.abs(np.diff(values, axis=0))[contiguous][:, QUIET]
    assert steps.max() < 0.2, steps.max()  # no pop: a full-range change takes >= 5 frames
    after = values[n_before:]
    smile = after[:, SMILE].max(axis=1)
    at_rest = np.flatnonzero(smile < 0.02)
    assert len(at_rest), "the face never got back to rest"
    print(f"\ninterrupt: max per-frame change {steps.max():.3f}, smile {smile[0]:.2f} -> rest "
          f"after {at_rest[0]} frames")
    assert at_rest[0] <= 0.25 * 60 + 3, f"rest after {at_rest[0]} frames"  # ~150 ms blend + latency
    c.close()


def test_a_slow_subscriber_loses_its_own_frames_only(server):
    import socket

    slow = Conn(server, max_queue=1)
    slow.ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send({"type": "subscribe", "frames": "json", "avatar": "*"})
    fast = Conn(server)
    fast.send({"type": "subscribe", "frames": "binary", "avatar": "alice"})
    fast.next("subscribed")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:  # the slow client reads nothing meanwhile
        data = fast.ws.recv(timeout=1)
        if isinstance(data, bytes):
            fast.frames.append(proto.decode_frame_binary(data))
    rate = len(fast.frames) / (time.monotonic() - t0)
    port = slow.ws.local_address[1]
    server_side = next(c for c in server.clients if c.ws.remote_address[1] == port)
    print(f"\nfast client {rate:.1f} frames/s while the slow one dropped {server_side.dropped}")
    assert rate > 50
    assert server_side.dropped > 0 and len(server_side.frames) <= server.cfg.serve.frame_queue
    slow.close()
    fast.close()


# -- security -------------------------------------------------------------------------------------
def test_non_loopback_host_needs_a_token(config, backend, language):
    cfg = dataclasses.replace(config, serve=dataclasses.replace(ServeConfig(), host="0.0.0.0", port=0))
    with pytest.raises(ServeError, match="token"):
        Server(cfg, backend, language)


def test_token_is_required_when_set(config, backend, language):
    srv = make_server(config, backend, language, token="s3cret-token")
    try:
        for query in ("", "?token=wrong"):
            with pytest.raises(InvalidStatus) as e:
                Conn(srv, query)
            assert e.value.response.status_code == 401
        assert http_get(srv, "/")[0] == 401
        assert http_get(srv, "/?token=s3cret-token")[0] == 200
        Conn(srv, "?token=s3cret-token").close()
        Conn(srv, additional_headers={"Authorization": "Bearer s3cret-token"}).close()
    finally:
        srv.close()


# -- interrupt on the avatar alone (scripted model, every channel) ----------------------------------
class ByLine:
    """A scripted model: line "one" writes its keys at once, "slow" waits to be cancelled."""

    def stream(self, req, cancel=None):
        if req.text == "slow":
            while not cancel.wait(0.01):
                pass
            return
        yield from [("2 joy 9\n", 1), ("3 surprise 9\n", 1), ("9 anger 9\n", 1)][:3 if req.text == "one" else 1]


def test_avatar_interrupt_blends_every_channel_and_next_line_starts_from_there():
    sink = Recorder()
    events = []
    av = Avatar("a", ByLine(), Language(), Fanout([sink]), on_event=events.append, interrupt_blend=0.15)
    for text in ("one", "slow", "queued"):
        av.say(LineRequest(text, id=text))
    for i in range(40):  # 0.67 s: well into line one's keys
        av.tick(i, i / 60)
        time.sleep(1 / 240)
    assert av.current is not None and av.current.req.id == "one"
    dropped = av.interrupt()
    assert dropped == ["queued"]  # "one" plays, "slow" is generating: both cancelled, not queued
    for i in range(40, 70):
        av.tick(i, i / 60)
    av.say(LineRequest("next", id="next"))
    n = 69
    deadline = time.monotonic() + 5
    while not av.idle and time.monotonic() < deadline:
        n += 1
        av.tick(n, n / 60)
        time.sleep(1 / 600)
    frames = np.array(sink.frames)
    steps = np.abs(np.diff(frames, axis=0))
    assert steps.max() < 0.17, steps.max()  # smoothstep over 9 frames: <= 1.5/9 of the change
    assert np.abs(frames[39] - Language().rest).max() > 0.5  # the face was far from rest
    assert np.abs(frames[40 + 9] - Language().rest).max() < 1e-6  # at rest 150 ms later
    assert frames[70:, SMILE].max() > 0.5  # the next line plays from there
    done = [(e["id"], e.get("interrupted", False)) for e in events if e["type"] == "done"]
    assert sorted(done[:3]) == [("one", True), ("queued", True), ("slow", True)]
    assert done[3:] == [("next", False)]
    av.close()


def test_say_with_word_timings_moves_the_mouth_and_bad_timings_are_refused(server):
    c = Conn(server)
    c.send({"type": "subscribe", "frames": "json", "avatar": "alice"})
    c.next("subscribed")
    c.send({"type": "say", "avatar": "alice", "text": "wrong", "words": [{"word": "a", "start": 2, "end": 1}]})
    err = c.next("error")
    assert err["code"] == "invalid_field" and "words" in err["message"]
    words = [{"word": w, "start": 0.1 + 0.45 * i, "end": 0.5 + 0.45 * i}
             for i, w in enumerate(["bob", "bought", "a", "big", "balloon"])]
    c.send({"type": "say", "avatar": "alice", "id": "talk-1", "text": "Bob bought a big balloon.", "words": words})
    assert c.next("ack")["id"] == "talk-1"
    c.until(lambda m: m["type"] == "done" and m["id"] == "talk-1", timeout=120)
    f = np.array([x[3] for x in c.frames if x[0] == "alice"])
    gap = f[:, IX["JawOpen"]] - f[:, IX["MouthClose"]]
    open_ = np.flatnonzero(gap >= 0.15)
    assert len(open_) > 10  # the mouth opened ...
    inside = gap[open_[0]:open_[-1]]
    closings = np.flatnonzero((inside[1:] <= 0.05) & (inside[:-1] > 0.05))
    assert len(closings) >= 3  # ... and closed again on the b's between the vowels
    c.close()
