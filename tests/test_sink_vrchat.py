"""VRChat OSC sink, received by python-osc's dispatcher standing in for VRChat's OSC input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage

from runtime import channels
from runtime.config import VrchatConfig
from runtime.sinks import SinkError, SinkOptions, open_sink
from runtime.sinks.vrchat import STEP, VrchatEncoder
from tests.sink_peers import OscPeer, wait_until


def shapes(v: float) -> np.ndarray:
    f = channels.zeros()
    f[:channels.SHAPES] = v
    return f


def decode(datagrams: list[bytes]) -> dict[str, float]:
    out = {}
    for d in datagrams:
        m = OscMessage(d)
        assert len(m.params) == 1 and isinstance(m.params[0], float)
        out[m.address] = m.params[0]
    return out


def test_default_map_sends_52_shapes_then_only_changes_then_refreshes():
    enc = VrchatEncoder()
    first = decode(enc.encode(shapes(0.5), 0.0))
    assert sorted(first) == sorted(f"/avatar/parameters/{n}" for n in channels.NAMES[:52])
    assert enc.encode(shapes(0.5), 1 / 60) == []  # nothing moved
    f = shapes(0.5)
    f[channels.INDEX["JawOpen"]] = 0.5 + STEP  # a full VRChat step: sent
    f[channels.INDEX["EyeBlinkLeft"]] = 0.5 + STEP / 4  # below half a step: not worth sending
    assert decode(enc.encode(f, 2 / 60)) == {"/avatar/parameters/JawOpen": pytest.approx(0.5 + STEP)}
    assert len(enc.encode(f, 1.01)) == 52  # the once-a-second refresh


def test_name_map_and_prefix():
    enc = VrchatEncoder({"jawOpen": "FT/v2/JawOpen", "eyeBlink_L": "EyeLidLeft", "HeadYaw": "HeadYaw"})
    f = channels.zeros()
    f[channels.INDEX["JawOpen"]], f[channels.INDEX["EyeBlinkLeft"]], f[channels.INDEX["HeadYaw"]] = 0.7, 0.2, -0.1
    assert decode(enc.encode(f, 0.0)) == {"/avatar/parameters/FT/v2/JawOpen": pytest.approx(0.7),
                                          "/avatar/parameters/EyeLidLeft": pytest.approx(0.2),
                                          "/avatar/parameters/HeadYaw": pytest.approx(-0.1)}
    sink = open_sink("vrchat://127.0.0.1:9000", SinkOptions(vrchat=VrchatConfig(prefix="FT/")))
    try:
        assert "FT/JawOpen" in sink.encoder.params
    finally:
        sink.close()


def test_stream_to_a_receiver():
    peer = OscPeer().start()
    sink = open_sink(f"vrchat://127.0.0.1:{peer.port}")
    try:
        values = np.linspace(0, 1, 10)
        for i, v in enumerate(values):
            sink.send(shapes(float(v)), i, i / 60)
            time.sleep(1 / 60)  # paced like the clock: 52 datagrams a frame, not 520 in one burst
        assert wait_until(lambda: len(peer.values("/avatar/parameters/JawOpen")) == 10)
    finally:
        sink.close()
        peer.stop()
    assert not peer.bad
    np.testing.assert_allclose([a[0] for a in peer.values("/avatar/parameters/JawOpen")], values, atol=1e-7)
    assert len(peer.messages) == 52 * 10


def test_bundle_mode():
    from pythonosc.osc_bundle import OscBundle

    data = VrchatEncoder(bundle=True).encode(shapes(0.3), 0.0)
    assert len(data) >= 2 and all(len(d) <= 1500 for d in data)
    assert sum(OscBundle(d).num_contents for d in data) == 52


def test_bad_name_map_is_a_one_line_error():
    for names in ({"NotAChannel": "X"}, {"JawOpen": "has space"}):
        with pytest.raises(SinkError) as e:
            open_sink("vrchat://127.0.0.1:9000", SinkOptions(vrchat=VrchatConfig(names=names)))
        assert "\n" not in str(e.value)
