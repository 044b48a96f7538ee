"""VMC sink against two parsers the project did not write: vmcp (the VMC protocol package, over
osc4py3; AGPL, test-only) and python-osc's dispatcher."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from runtime import channels
from runtime.sinks import SinkError, open_sink
from runtime.sinks.vmc import VmcEncoder, VmcSink, head_quaternion
from tests.sink_peers import OscPeer, wait_until


def sample_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.random(channels.COUNT).astype(np.float32)
    f[channels.SHAPES:] = rng.uniform(-0.2, 0.2, channels.COUNT - channels.SHAPES)
    return f


# --- rotation convention, checked against rotation matrices built independently ------------------

def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@pytest.mark.parametrize("ypr", [(0.1, 0.0, 0.0), (0.0, -0.07, 0.0), (0.0, 0.0, 0.05), (0.12, -0.05, 0.08)])
def test_head_quaternion_is_unity_euler_zxy(ypr):
    yaw, pitch, roll = ypr
    q = head_quaternion(yaw, pitch, roll)
    assert abs(sum(c * c for c in q) - 1) < 1e-9
    # Unity's Quaternion.Euler(x, y, z): rotate about Z, then X, then Y (R = Ry Rx Rz)
    expected = _ry(-yaw * math.pi) @ _rx(pitch * math.pi) @ _rz(-roll * math.pi)
    np.testing.assert_allclose(_matrix(q), expected, atol=1e-12)


def test_head_rotation_directions_in_unity_space():
    forward, up = np.array([0, 0, 1.0]), np.array([0, 1.0, 0])  # a VRM avatar faces +Z, its right is +X
    # HeadYaw > 0: the subject turns to their own left, so the avatar's nose goes toward -X
    assert (_matrix(head_quaternion(0.1, 0, 0)) @ forward)[0] < -0.1
    # HeadPitch > 0: looking down, so the nose goes toward -Y
    assert (_matrix(head_quaternion(0, 0.1, 0)) @ forward)[1] < -0.1
    # HeadRoll > 0: the top of the head tilts toward the subject's right shoulder (+X)
    assert (_matrix(head_quaternion(0, 0, 0.1)) @ up)[0] > 0.1


# --- the packets ---------------------------------------------------------------------------------

def test_bundles_fit_1500_bytes_and_carry_everything_in_order():
    from pythonosc.osc_packet import OscPacket

    frame = sample_frame()
    datagrams = VmcEncoder().encode(frame, 2.5)
    assert len(datagrams) == 2 and all(len(d) <= 1500 for d in datagrams)
    msgs = [(m.message.address, m.message.params) for d in datagrams for m in OscPacket(d).messages]
    assert all(d.startswith(b"#bundle\x00") for d in datagrams)
    addrs = [a for a, _ in msgs]
    assert addrs[-1] == "/VMC/Ext/Blend/Apply" and addrs.count("/VMC/Ext/Blend/Apply") == 1
    blends = [p for a, p in msgs if a == "/VMC/Ext/Blend/Val"]
    assert [p[0] for p in blends] == list(channels.NAMES[:52])  # PascalCase perfect-sync names
    np.testing.assert_allclose([p[1] for p in blends], frame[:52], rtol=0, atol=0)
    assert ("/VMC/Ext/OK", [1]) in msgs
    assert [p for a, p in msgs if a == "/VMC/Ext/T"] == [[0.0]]  # seconds since the sink's first frame
    (bone,) = [p for a, p in msgs if a == "/VMC/Ext/Bone/Pos"]
    assert bone[0] == "Head"
    np.testing.assert_allclose(bone[4:], head_quaternion(*frame[52:55].tolist()), atol=1e-6)


def _vmc_time(datagrams: list[bytes]) -> float:
    from pythonosc.osc_packet import OscPacket

    (t,) = [m.message.params[0] for d in datagrams for m in OscPacket(d).messages
            if m.message.address == "/VMC/Ext/T"]
    return t


@pytest.mark.parametrize("day_seconds", [0.0, 41_000.0, 86_000.0])
def test_time_tells_every_frame_apart_at_any_time_of_day(day_seconds):
    # the runtime hands sinks the time of day (Live Link timecode); a float32 of ~80,000 s steps by
    # 8 ms, so sent as is, consecutive 60 fps frames would share or skip /VMC/Ext/T values
    enc, frame = VmcEncoder(), sample_frame()
    sent = [_vmc_time(enc.encode(frame, day_seconds + n / 60)) for n in range(600)]
    assert [round(t * 60) for t in sent] == list(range(600))
    # the time of day going back (midnight) restarts the count instead of sending negative times
    assert _vmc_time(enc.encode(frame, day_seconds - 1.0)) == 0.0


def test_encoder_rejects_a_wrong_frame():
    with pytest.raises(ValueError):
        VmcEncoder().encode(np.zeros(52, np.float32), 0.0)


def test_vmcp_receives_a_stream():
    """vmcp's receiver (osc4py3 underneath) decodes every message of every frame."""
    from vmcp.events import (
        BlendShapeApplyEvent,
        BlendShapeEvent,
        BoneTransformEvent,
        RelativeTimeEvent,
        StateEvent,
    )
    from vmcp.facades import on_receive
    from vmcp.osc import OSC
    from vmcp.osc.backend.osc4py3 import as_eventloop as backend
    from vmcp.typing import ModelState

    from tests.conftest import free_udp_port

    port = free_udp_port()
    events: list = []
    frames = [sample_frame(i) for i in range(5)]
    with OSC(backend) as osc:
        receiver = osc.create_receiver("127.0.0.1", port, "vmc-test").open()
        for ev in (BlendShapeEvent, BlendShapeApplyEvent, BoneTransformEvent, StateEvent, RelativeTimeEvent):
            on_receive(receiver, ev, events.append)
        sink = VmcSink("127.0.0.1", port)
        try:
            for i, f in enumerate(frames):
                sink.send(f, i, i / 60)
                time.sleep(0.005)
            end = time.monotonic() + 3
            while time.monotonic() < end and sum(isinstance(e, BlendShapeApplyEvent) for e in events) < 5:
                osc.run()
                time.sleep(0.005)
        finally:
            sink.close()
    applies = [i for i, e in enumerate(events) if isinstance(e, BlendShapeApplyEvent)]
    assert len(applies) == 5
    start = 0
    for n, end in enumerate(applies):  # each frame: the 52 values, then Apply
        chunk = events[start:end]
        start = end + 1
        blends = {e.key: e.value for e in chunk if isinstance(e, BlendShapeEvent)}
        assert list(blends) == list(channels.NAMES[:52])
        np.testing.assert_allclose(list(blends.values()), frames[n][:52], atol=1e-7)
        (head,) = [e for e in chunk if isinstance(e, BoneTransformEvent)]
        assert head.joint.value == "Head"
        q = head.rotation
        np.testing.assert_allclose((q.x, q.y, q.z, q.w), head_quaternion(*frames[n][52:55].tolist()), atol=1e-6)
        assert [e.model_state for e in chunk if isinstance(e, StateEvent)] == [ModelState.LOADED]
        assert [e.delta for e in chunk if isinstance(e, RelativeTimeEvent)] == [pytest.approx(n / 60)]


def test_python_osc_dispatcher_receives_a_stream():
    peer = OscPeer().start()
    sink = VmcSink("127.0.0.1", peer.port, head_position=(0.0, 0.08, 0.01))
    try:
        frames = [sample_frame(i) for i in range(30)]
        for i, f in enumerate(frames):
            sink.send(f, i, i / 60)
        assert wait_until(lambda: len(peer.values("/VMC/Ext/Blend/Apply")) == 30)
    finally:
        sink.close()
        peer.stop()
    assert not peer.bad
    assert sink.sent == 30 and sink.dropped == 0
    vals = peer.values("/VMC/Ext/Blend/Val")
    assert len(vals) == 30 * 52
    got = np.array([v[1] for v in vals], dtype=np.float32).reshape(30, 52)
    np.testing.assert_array_equal(got, np.stack(frames)[:, :52])
    bones = peer.values("/VMC/Ext/Bone/Pos")
    np.testing.assert_allclose(bones[0][1:4], (0.0, 0.08, 0.01), atol=1e-7)


def test_head_off_and_url_defaults():
    sink = open_sink("vmc://127.0.0.1")
    try:
        assert sink.label == "vmc://127.0.0.1:39539"
    finally:
        sink.close()
    from pythonosc.osc_packet import OscPacket

    datagrams = VmcEncoder(head=False).encode(sample_frame(), 0.0)
    addrs = [m.message.address for d in datagrams for m in OscPacket(d).messages]
    assert "/VMC/Ext/Bone/Pos" not in addrs and addrs[-1] == "/VMC/Ext/Blend/Apply"


def test_bad_urls_are_one_line_errors():
    for url in ("vmc://no-such-host.invalid:39539", "vmc://127.0.0.1:notaport"):
        with pytest.raises(SinkError) as e:
            open_sink(url)
        assert "\n" not in str(e.value)
