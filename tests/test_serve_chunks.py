"""serve with dialogue: `heard`, and a line sent in chunks, over a real WebSocket with the real model.

The backend is the real default model behind a spy that records each request it is asked for, so a
test can see what reached the model (each sentence, with `heard`) and when.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.test_serve import Conn, make_server

pytestmark = pytest.mark.model


class Spy:
    """The real backend; records (time, request) of every request it streams."""

    def __init__(self, inner):
        self.inner = inner
        self.reqs = []

    def stream(self, req, cancel=None):
        self.reqs.append((time.monotonic(), req))
        yield from self.inner.stream(req, cancel)


@pytest.fixture(scope="module")
def spy(backend):
    return Spy(backend)


@pytest.fixture(scope="module")
def server(config, spy, language):
    srv = make_server(config, spy, language, chunk_timeout=1.5, max_turn=300)
    yield srv
    srv.close()


def test_heard_is_validated_and_reaches_the_model(server, spy):
    c = Conn(server)
    c.send({"type": "say", "avatar": "alice", "text": "Okay.", "heard": 42})
    err = c.next("error")
    assert err["code"] == "invalid_field" and err["message"].startswith("heard:")
    c.send({"type": "say", "avatar": "alice", "text": "Okay.", "heard": "x" * 1001})
    assert "at most 1000" in c.next("error")["message"]
    c.send({"type": "say", "avatar": "alice", "id": "h1", "text": "Okay.", "heard": "I'm pregnant."})
    assert c.next("ack")["id"] == "h1"
    c.until(lambda m: m["type"] == "done" and m["id"] == "h1", timeout=120)
    req = [r for _, r in spy.reqs if r.id == "h1"]
    assert req and all(r.heard == "I'm pregnant." and r.text == "Okay." for r in req)
    c.close()


def test_chunked_line_starts_before_its_last_chunk_and_times_continue(server, spy):
    c = Conn(server)
    c.send({"type": "subscribe", "frames": "json", "avatar": "alice"})
    c.next("subscribed")
    c.send({"type": "say", "avatar": "alice", "id": "turn", "text": "Ha! You fell right", "more": True,
            "heard": "Watch this!"})
    assert c.next("ack") == {"type": "ack", "id": "turn", "avatar": "alice"}
    first = c.next("keyframe", timeout=60)  # before any further chunk: "Ha!" was complete
    assert first["id"] == "turn"
    early = [r.text for _, r in spy.reqs if r.id == "turn"]
    assert early[0] == "Ha!"
    c.send({"type": "say", "avatar": "alice", "id": "turn", "text": " in the mud! Wait,", "more": True})
    c.send({"type": "say", "avatar": "alice", "id": "turn", "text": " are you bleeding?", "more": False})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "turn", timeout=120)
    assert msgs[-1] == {"type": "done", "id": "turn", "avatar": "alice"}
    assert not [m for m in msgs if m["type"] == "error"]
    keys = [first] + [m for m in msgs if m["type"] == "keyframe" and m["id"] == "turn"]
    times = [k["t"] for k in keys]
    assert len(keys) >= 4 and all(b > a for a, b in zip(times, times[1:]))  # one timeline
    reqs = [r for _, r in spy.reqs if r.id == "turn"]
    texts = [r.text for r in reqs]
    assert texts == ["Ha!", "You fell right in the mud!", "Wait, are you bleeding?"]
    assert all(r.heard == "Watch this!" for r in reqs)
    assert len(c.frames) > 30 and np.ptp(np.array([f[3] for f in c.frames]), axis=0).max() > 0.2  # it moved
    c.send({"type": "say", "avatar": "alice", "id": "turn", "text": " more", "more": True})
    assert c.next("ack", "error")["type"] == "ack"  # the line is over: the id may start a new one
    c.send({"type": "say", "avatar": "alice", "id": "turn", "text": "", "more": False})
    c.until(lambda m: m["type"] == "done" and m["id"] == "turn", timeout=60)
    c.close()


def test_abandoned_chunked_line_ends_cleanly_and_the_other_avatar_is_unaffected(server):
    c = Conn(server)
    t0 = time.monotonic()
    c.send({"type": "say", "avatar": "alice", "id": "gone", "text": "Hey! And then I", "more": True})
    assert c.next("ack")["id"] == "gone"
    c.send({"type": "say", "avatar": "bob", "id": "b1", "text": "He grins at the good news.",
            "emotion": "joy"})
    msgs = []
    while not {"gone", "b1"} <= {m["id"] for m in msgs if m["type"] == "done"}:
        msgs.append(c.next(timeout=120))
        if msgs[-1]["type"] == "done" and msgs[-1]["id"] == "gone":
            waited = time.monotonic() - t0
    done = {m["id"]: m for m in msgs if m["type"] == "done"}
    assert done["gone"] == {"type": "done", "id": "gone", "avatar": "alice", "abandoned": True}
    assert waited >= 1.5
    assert any(m["type"] == "keyframe" and m["id"] == "gone" for m in msgs)  # "Hey!" was played
    assert done["b1"] == {"type": "done", "id": "b1", "avatar": "bob"}
    assert any(m["type"] == "keyframe" and m["id"] == "b1" for m in msgs)
    # after its done the id is free again: a late chunk is a line of its own
    c.send({"type": "say", "avatar": "alice", "id": "gone", "text": "Fine.", "more": False})
    assert c.next("ack", "error") == {"type": "ack", "id": "gone", "avatar": "alice"}
    c.until(lambda m: m["type"] == "done" and m["id"] == "gone", timeout=60)
    c.close()


def test_chunks_after_an_interrupt_are_refused_and_limits_hold(server):
    c = Conn(server)
    c.send({"type": "say", "avatar": "bob", "id": "cut", "text": "Ha! Wait", "more": True})
    c.next("ack")
    c.next("keyframe", timeout=60)
    c.send({"type": "interrupt", "avatar": "bob"})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "cut", timeout=30)
    assert msgs[-1].get("interrupted") is True
    c.send({"type": "say", "avatar": "bob", "id": "cut", "text": " what?", "more": True})
    err = c.next("error")
    assert err["code"] == "invalid_field" and err["id"] == "cut" and "no line" in err["message"]
    c.send({"type": "say", "avatar": "bob", "id": "big", "text": "Hm", "more": True})
    c.next("ack")
    c.send(json.dumps({"type": "say", "avatar": "bob", "id": "big", "text": "y" * 299, "more": True}))
    err = c.next("error")
    assert err["code"] == "invalid_field" and "at most 300" in err["message"]
    c.send({"type": "say", "avatar": "bob", "id": "big", "text": ".", "more": False})
    c.until(lambda m: m["type"] == "done" and m["id"] == "big", timeout=60)
    c.close()
