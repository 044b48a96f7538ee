"""Hostile input, generated: zero crashes, and every rejection is a clear error."""

import json
import string
import tomllib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.config import ConfigError, load
from runtime.keyframes.language import Language
from runtime.keyframes.parser import KeyframeParser
from runtime.sinks.csv import TakeError, read_take

LANG = Language()
WORDS = LANG.words + ["JawOpen", "MouthSmile", "HeadYaw", "bogus", ""]
line = st.builds(lambda d, items: f"{d} " + " ".join(f"{w} {lv}" for w, lv in items),
                 st.integers(-5, 300), st.lists(st.tuples(st.sampled_from(WORDS), st.integers(-20, 20)),
                                               max_size=5))
text = st.one_of(st.text(max_size=400), st.lists(line, max_size=12).map("\n".join),
                 st.text(alphabet=string.printable, max_size=400))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text, st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_parser_never_crashes_and_split_does_not_matter(source, cuts):
    def run(pieces):
        p = KeyframeParser(LANG)
        out = []
        for piece in pieces:
            out += p.feed(piece)
        return out + p.close(), p

    whole, p1 = run([source])
    pieces, i = [], 0
    for c in cuts * (len(source) // max(sum(cuts), 1) + 1):
        pieces.append(source[i:i + c])
        i += c
    pieces.append(source[i:])
    split, _ = run(pieces)
    assert [k.t for k in whole] == [k.t for k in split]
    times = [k.t for k in whole]
    assert times == sorted(times) and len(set(times)) == len(times)
    for k in whole:
        assert k.values.shape == (61,) and np.isfinite(k.values).all()
        assert k.values[:52].min() >= 0 and k.values.max() <= 1 and k.values.min() >= -1
    assert all(e.startswith("bad keyframe line") for e in p1.errors)


toml_value = st.recursive(
    st.one_of(st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(string.ascii_letters, min_size=1,
                                                                                 max_size=10), inner, max_size=3)),
    max_leaves=8)
sections = st.sampled_from(["model", "keyframes", "animation", "livelink", "presets", "aliases", "sinks", "bogus"])
keys = st.sampled_from(["name", "threads", "fps", "attack", "max_items", "joy", "subject", "x", "timeout"])


def _toml(data: dict) -> str:
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if v == v and abs(v) != float("inf") else "0"
        if isinstance(v, str):
            return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return "{" + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + "}"

    return "\n".join(f"[{s}]\n" + "\n".join(f'"{k}" = {val(v)}' for k, v in kv.items()) for s, kv in data.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(sections, st.dictionaries(keys, toml_value, max_size=3), max_size=4))
def test_config_loading_never_crashes(tmp_path, data):
    p = tmp_path / "c.toml"
    p.write_text(_toml(data))
    try:
        tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError:
        pass
    try:
        load(p)
    except ConfigError as e:
        assert str(e)  # a message that names the problem


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=80), st.just("00:00:01:02.000,61," + ",".join(["0.5"] * 61)),
                          st.just("00:00:01:04.000,0" + "," * 61)), max_size=8),
       st.booleans())
def test_csv_reader_never_crashes(tmp_path, rows, header):
    from runtime.sinks.csv import HEADER

    p = tmp_path / "t.csv"
    p.write_text((HEADER + "\n" if header else "") + "\n".join(rows))
    try:
        take = read_take(p)
    except TakeError as e:
        assert str(p) in str(e)
    else:
        assert take.values.shape[1] == 61


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
message = st.one_of(
    st.binary(max_size=300), st.text(max_size=300),
    json_value.map(lambda v: json.dumps(v)),
    st.fixed_dictionaries({"type": st.sampled_from(["say", "interrupt", "subscribe", "unsubscribe", "x"])},
                          optional={"text": json_value, "avatar": json_value, "id": json_value, "frames": json_value,
                                    "words": json_value, "duration": json_value, "start": json_value,
                                    "talk": json_value, "context": json_value, "emotion": json_value}
                          ).map(lambda d: json.dumps(d)))


@settings(max_examples=600, deadline=None)
@given(st.lists(message, min_size=1, max_size=5))
def test_control_protocol_never_crashes(messages):
    from runtime import protocol as proto

    s = proto.Session(["alice", "bob"], proto.Limits(say_burst=100))
    for m in messages:
        try:
            cmd = s.receive(m, 0.0)
        except proto.ProtocolError as e:
            event = json.loads(e.event())
            assert event["type"] == "error" and event["code"] in proto.ERROR_CODES and event["message"]
        else:
            assert isinstance(cmd, proto.Say | proto.Interrupt | proto.Subscribe | proto.Unsubscribe)
