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


# -- heard, and a line sent in chunks ----------------------------------------------------------------
def test_heard_is_a_validated_string_field():
    s = session()
    cmd = s.receive(json.dumps({"type": "say", "text": "Okay.", "heard": "  I'm pregnant. "}), 0.0)
    assert cmd.heard == "I'm pregnant." and cmd.text == "Okay."
    for bad, why in ((5, "expected a string"), (["a"], "expected a string"), ("x" * 1001, "at most 1000"),
                     ("a\x00b", "control characters")):
        with pytest.raises(proto.ProtocolError) as e:
            s.receive(json.dumps({"type": "say", "text": "Okay.", "heard": bad}), 0.0)
        assert e.value.code == "invalid_field" and e.value.message.startswith("heard:") and why in e.value.message


def test_chunks_of_one_line_take_one_rate_token_and_end_with_more_false():
    s = session(say_burst=1, say_rate=0.001)
    first = s.receive('{"type":"say","id":"x","text":"Hey! You","more":true,"heard":"Hi."}', 0.0)
    assert first == proto.Say(text="Hey! You", avatar="alice", id="x", heard="Hi.", more=True)
    for i in range(20):  # a chat model's tokens: no rate limit on the chunks of an open line
        assert s.receive(json.dumps({"type": "say", "id": "x", "text": f" w{i}", "more": True}), 0.1) == \
            proto.Chunk("alice", "x", f" w{i}", True)
    assert s.receive('{"type":"say","id":"x","text":"","more":false}', 0.2) == proto.Chunk("alice", "x", "", False)
    assert code_of(s, '{"type":"say","id":"x","text":"again"}', 0.3) == "rate_limited"  # a new line now


def test_chunk_rules():
    s = session(max_turn=20, chunk_timeout=5.0)
    assert code_of(s, '{"type":"say","text":"no id","more":true}') == "missing_field"
    assert code_of(s, '{"type":"say","id":"m","text":"x","more":"yes"}') == "invalid_field"
    assert code_of(s, '{"type":"say","id":"w","text":"Hi","more":true,"talk":true}') == "invalid_field"
    s.receive('{"type":"say","id":"a","text":"","more":true}', 0.0)  # an empty first chunk opens it
    assert code_of(s, '{"type":"say","id":"a","text":" more","emotion":"joy","more":true}', 1.0) == "invalid_field"
    s.receive('{"type":"say","id":"a","text":"0123456789","more":true}', 1.0)
    assert code_of(s, '{"type":"say","id":"a","text":"0123456789X","more":true}', 2.0) == "invalid_field"
    assert isinstance(s.receive('{"type":"say","id":"a","text":"0123456789","more":true}', 2.0), proto.Chunk)
    s.receive('{"type":"say","id":"c","avatar":"bob","text":"Hi","more":true}', 2.0)
    assert s.receive('{"type":"say","id":"c","text":"!","more":false}', 2.0) == proto.Chunk("bob", "c", "!", False)
    # another avatar's line of the same id is another line
    assert isinstance(s.receive('{"type":"say","id":"a","avatar":"bob","text":"Hi"}', 2.0), proto.Say)
    # silent longer than chunk_timeout: that line is gone, the id starts a new one
    assert isinstance(s.receive('{"type":"say","id":"a","text":"New.","more":true}', 7.5), proto.Say)
    assert code_of(s, '{"type":"say","id":"b","text":"   "}', 8.0) == "invalid_field"  # whole lines need text
