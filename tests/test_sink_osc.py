"""Generic OSC sink and the OSC encoder, decoded by python-osc (the parser most OSC tools' Python
examples use) over real loopback UDP."""

from __future__ import annotations

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from runtime import channels
from runtime.config import OscConfig
from runtime.sinks import SinkError, SinkOptions, open_sink
from runtime.sinks.osc import OscEncoder, Slot, bundles, message, osc_string
from tests.sink_peers import OscPeer, wait_until


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, channels.COUNT).astype(np.float32)


def test_messages_match_python_osc_builder_byte_for_byte():
    for address, args in [("/a", (1, 2.5, "hi")), ("/VMC/Ext/Blend/Val", ("EyeBlinkLeft", 0.25)),
                          ("/VMC/Ext/Blend/Apply", ()), ("/x/yz", (True, False, -7))]:
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a, "f" if isinstance(a, float) else None)
        assert message(address, *args).data == b.build().dgram


def test_osc_string_padding():
    assert osc_string("") == b"\x00\x00\x00\x00"
    assert osc_string("abc") == b"abc\x00"
    assert osc_string("abcd") == b"abcd\x00\x00\x00\x00"


def test_slots_fill_per_frame_and_bundles_split_in_order():
    msgs = [message(f"/ch/{i:03d}", Slot(i)) for i in range(100)]
    packets = bundles(msgs, limit=400)
    assert len(packets) > 1 and all(p.size <= 400 for p in packets)
    values = np.arange(100, dtype=np.float32) / 7
    seen = []
    for p in packets:
        b = OscBundle(p.render(values))
        seen += [(m.address, m.params[0]) for m in b]
    assert [a for a, _ in seen] == [f"/ch/{i:03d}" for i in range(100)]
    np.testing.assert_array_equal(np.array([v for _, v in seen], np.float32), values)
    with pytest.raises(ValueError):
        bundles([message("/" + "x" * 500, 1.0)], limit=400)
    with pytest.raises(ValueError):
        message("no-slash", 1)


def test_one_message_of_61_floats():
    (data,) = OscEncoder().encode(frame())
    m = OscMessage(data)
    assert m.address == "/keyframeface/frame" and len(m.params) == 61
    np.testing.assert_array_equal(np.array(m.params, np.float32), frame())


def test_template_one_address_per_channel():
    data = OscEncoder(template="/face/{camel}").encode(frame())
    got = [(m.address, m.params[0]) for d in data for m in OscBundle(d)]
    assert [a for a, _ in got] == ["/face/" + channels.camel(n) for n in channels.NAMES]
    np.testing.assert_array_equal(np.array([v for _, v in got], np.float32), frame())
    singles = OscEncoder(template="/ch/{index}", bundle=False).encode(frame())
    assert len(singles) == 61 and OscMessage(singles[60]).address == "/ch/60"
    with pytest.raises(ValueError):
        OscEncoder(template="/face/{nope}")


def test_stream_over_udp_and_url():
    peer = OscPeer().start()
    opts = SinkOptions(osc=OscConfig(template="/face/{name}"))
    sink = open_sink(f"osc://127.0.0.1:{peer.port}", opts)
    try:
        for i in range(20):
            sink.send(frame(i), i, i / 60)
        assert wait_until(lambda: len(peer.messages) == 20 * 61)
    finally:
        sink.close()
        peer.stop()
    assert not peer.bad and all(len(d) <= 1500 for d in peer.datagrams)
    got = np.array([a[0] for _, a in peer.messages], np.float32).reshape(20, 61)
    np.testing.assert_array_equal(got, np.stack([frame(i) for i in range(20)]))


def test_bad_urls():
    for url, opts in [("osc://127.0.0.1", None), ("osc://127.0.0.1:9000", SinkOptions(osc=OscConfig(address="x")))]:
        with pytest.raises(SinkError) as e:
            open_sink(url, opts)
        assert "\n" not in str(e.value)
