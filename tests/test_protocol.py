"""The control protocol without sockets: every bad input gets its code, good input its command."""

import json
import math

import numpy as np
import pytest

from runtime import channels
from runtime import protocol as proto
from runtime.sinks.websocket import decode_binary


def session(**kw):
    return proto.Session(["alice", "bob"], proto.Limits(**kw))


def code_of(s, data, now=0.0):
    with pytest.raises(proto.ProtocolError) as e:
        s.receive(data, now)
    ev = json.loads(e.value.event())
    assert ev["type"] == "error" and ev["message"]
    return ev["code"]


def test_say_minimal_and_full():
    s = session()
    cmd = s.receive('{"type":"say","text":"  Hello there. "}', 0.0)
    assert cmd == proto.Say(text="Hello there.", avatar="alice")
    cmd = s.receive(json.dumps({"type": "say", "text": "Hi", "id": "line-7", "context": "a bar",
                                "emotion": "nervous", "avatar": "bob"}).encode(), 0.0)
    assert cmd == proto.Say(text="Hi", avatar="bob", id="line-7", context="a bar", emotion="nervous")


def test_interrupt_subscribe_unsubscribe():
    s = session()
    assert s.receive('{"type":"interrupt"}', 0) == proto.Interrupt("alice")
    assert s.receive('{"type":"interrupt","avatar":"bob"}', 0) == proto.Interrupt("bob")
    assert s.receive('{"type":"subscribe"}', 0) == proto.Subscribe("alice", "json")
    assert s.receive('{"type":"subscribe","frames":"binary","avatar":"*"}', 0) == proto.Subscribe("*", "binary")
    assert s.receive('{"type":"unsubscribe","avatar":"bob"}', 0) == proto.Unsubscribe("bob")


@pytest.mark.parametrize("data, code", [
    ("{not json", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('"say"', "invalid_message"),
    ('{"text": "hi"}', "missing_field"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": 5}', "unknown_type"),
    ('{"type": "say"}', "missing_field"),
    ('{"type": "say", "text": ""}', "invalid_field"),
    ('{"type": "say", "text": "   "}', "invalid_field"),
    ('{"type": "say", "text": 42}', "invalid_field"),
    ('{"type": "say", "text": ["a"]}', "invalid_field"),
    ('{"type": "say", "text": "hi", "id": 7}', "invalid_field"),
    ('{"type": "say", "text": "hi", "id": "../../etc/passwd"}', "invalid_field"),
    ('{"type": "say", "text": "hi", "id": ""}', "invalid_field"),
    ('{"type": "say", "text": "hi\\u0000there"}', "invalid_field"),
    ('{"type": "say", "text": "hi", "emotion": null}', "invalid_field"),
    ('{"type": "say", "text": "hi", "avatar": "carol"}', "unknown_avatar"),
    ('{"type": "say", "text": "hi", "avatar": "*"}', "unknown_avatar"),
    ('{"type": "say", "text": "hi", "avatar": 1}', "invalid_field"),
    ('{"type": "say", "text": "hi", "path": "/etc/passwd"}', "unknown_field"),
    ('{"type": "subscribe", "frames": "xml"}', "invalid_field"),
    ('{"type": "interrupt", "avatar": "nobody"}', "unknown_avatar"),
])
def test_bad_inputs(data, code):
    assert code_of(session(), data) == code


def test_size_limits():
    s = session(max_message=1000, max_text=50)
    assert code_of(s, json.dumps({"type": "say", "text": "a" * 2000})) == "message_too_big"
    assert code_of(s, b"x" * 1001) == "message_too_big"
    # multi-byte characters count as bytes
    assert code_of(s, json.dumps({"type": "say", "text": "é" * 600}, ensure_ascii=False)) == "message_too_big"
    assert code_of(s, json.dumps({"type": "say", "text": "a" * 51})) == "invalid_field"
    assert s.receive(json.dumps({"type": "say", "text": "a" * 50}), 0).text == "a" * 50


def test_error_keeps_the_id():
    s = session()
    with pytest.raises(proto.ProtocolError) as e:
        s.receive('{"type": "say", "text": 3, "id": "x1"}', 0)
    assert json.loads(e.value.event())["id"] == "x1"


def test_say_rate_limit_burst_then_rate():
    s = session(say_rate=2.0, say_burst=3)
    say = '{"type": "say", "text": "hi"}'
    for _ in range(3):
        s.receive(say, 10.0)
    assert code_of(s, say, 10.0) == "rate_limited"
    assert code_of(s, say, 10.2) == "rate_limited"  # 0.4 of a token back
    s.receive(say, 10.6)  # 1.2 tokens by now
    assert code_of(s, say, 10.6) == "rate_limited"
    s.receive(say, 100.0)  # refilled, but only up to the burst
    s.receive(say, 100.0)
    s.receive(say, 100.0)
    assert code_of(s, say, 100.0) == "rate_limited"
    # other messages are not limited
    for _ in range(20):
        s.receive('{"type":"interrupt"}', 100.0)


def test_binary_frame_round_trip_and_sink_compatible():
    frame = np.linspace(-1, 1, channels.COUNT, dtype=np.float32)
    data = proto.frame_binary("bob", frame, 2**32 + 5, 12.5)
    assert len(data) == proto.BINARY_FRAME + 3
    name, seq, t, values = proto.decode_frame_binary(data)
    assert (name, seq, t) == ("bob", 5, 12.5)
    np.testing.assert_array_equal(values, frame)
    # the first 256 bytes are the WebSocket sink's layout: its decoder reads them unchanged
    seq2, t2, values2 = decode_binary(data[:proto.BINARY_FRAME])
    assert (seq2, t2) == (5, 12.5)
    np.testing.assert_array_equal(values2, frame)
    with pytest.raises(ValueError):
        proto.decode_frame_binary(data[:100])


def test_json_frame_and_events():
    frame = np.zeros(channels.COUNT, dtype=np.float32)
    frame[channels.INDEX["MouthSmileLeft"]] = 0.123456789
    msg = json.loads(proto.frame_json("alice", frame, 3, 0.05))
    assert msg["type"] == "frame" and msg["avatar"] == "alice" and msg["seq"] == 3
    assert len(msg["values"]) == channels.COUNT
    assert msg["values"][channels.INDEX["MouthSmileLeft"]] == pytest.approx(0.12346)
    ev = json.loads(proto.event({"type": "keyframe", "id": "a", "t": math.nan, "values": {"x": math.inf}}))
    assert ev["t"] is None and ev["values"]["x"] is None
    hello = json.loads(proto.hello(["alice"], 60.0, proto.Limits()))
    assert hello["channels"] == list(channels.NAMES) and hello["avatars"] == ["alice"]


def test_say_speech_fields():
    s = session(say_burst=20)
    words = [{"word": "hello", "start": 0.0, "end": 0.3}, {"word": "bob", "start": 0.35, "end": 0.6}]
    cmd = s.receive(json.dumps({"type": "say", "text": "Hello Bob", "words": words, "start": 0.2}), 0.0)
    assert cmd.words == (("hello", 0.0, 0.3), ("bob", 0.35, 0.6)) and cmd.start == 0.2 and cmd.spoken
    cmd = s.receive(json.dumps({"type": "say", "text": "Hi", "duration": 1.5}), 0.0)
    assert cmd.duration == 1.5 and cmd.words is None and cmd.spoken
    assert not s.receive('{"type": "say", "text": "Hi"}', 0.0).spoken
    for bad in ({"words": [{"word": "a", "start": 1.0, "end": 0.5}]}, {"words": "hello"},
                {"words": [{"word": "a"}]}, {"duration": -1}, {"duration": "long"}, {"start": float("nan")},
                {"talk": "yes"}):
        msg = json.dumps({"type": "say", "text": "Hi", **bad}, allow_nan=True)
        assert code_of(s, msg) == "invalid_field", bad
