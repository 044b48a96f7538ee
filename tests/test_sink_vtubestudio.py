"""VTube Studio sink against ``FakeVTubeStudio`` (tests/sink_peers.py): a loopback WebSocket server
that stands in for VTube Studio's plugin API as its README documents it (token flow, token
rejection, error 454, parameters lost after one second without data)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from runtime import channels
from runtime.config import VtubeStudioConfig
from runtime.sinks import SinkError, SinkOptions, open_sink
from runtime.sinks.vtubestudio import TokenStore, VtsSink, build_mapping
from tests.sink_peers import FakeVTubeStudio, wait_until


def frame(jaw: float = 0.3) -> np.ndarray:
    f = channels.zeros()
    f[channels.INDEX["JawOpen"]] = jaw
    f[channels.INDEX["EyeBlinkLeft"]] = 0.25
    f[channels.INDEX["MouthSmileLeft"]] = f[channels.INDEX["MouthSmileRight"]] = 1.0
    f[channels.INDEX["HeadYaw"]] = 0.1
    f[channels.INDEX["HeadPitch"]] = 0.05
    return f


@pytest.fixture
def vts():
    server = FakeVTubeStudio().start()
    yield server
    server.stop()


def make_sink(server: FakeVTubeStudio, tmp_path, **kw) -> VtsSink:
    kw.setdefault("backoff", (0.05, 0.4))
    return VtsSink("127.0.0.1", server.port, token_path=str(tmp_path / "token.json"), **kw)


def stream(sink: VtsSink, seconds: float, fps: float = 60.0, start: int = 0) -> int:
    n = int(seconds * fps)
    for i in range(start, start + n):
        sink.send(frame(0.3 + 0.001 * (i % 100)), i, i / fps)
        time.sleep(1 / fps)
    return start + n


def test_default_mapping_formulas():
    m = build_mapping()
    v = dict(zip(m.names, m.values(frame(0.4)).tolist()))
    assert v["MouthOpen"] == pytest.approx(0.4)
    assert v["EyeOpenLeft"] == pytest.approx(0.75) and v["EyeOpenRight"] == pytest.approx(1.0)
    assert v["MouthSmile"] == pytest.approx(1.0)  # both corners fully up; 0.5 is neutral
    assert v["FaceAngleX"] == pytest.approx(18.0) and v["FaceAngleY"] == pytest.approx(-9.0)
    assert v["Brows"] == pytest.approx(0.5)
    assert set(m.names) >= {"FaceAngleZ", "MouthX", "BrowLeftY", "BrowRightY", "EyeLeftX", "EyeLeftY",
                            "EyeRightX", "EyeRightY", "CheekPuff", "TongueOut"}
    flipped = build_mapping(gains={"FaceAngleX": -1.0})
    assert dict(zip(flipped.names, flipped.values(frame()).tolist()))["FaceAngleX"] == pytest.approx(-18.0)


def test_inject_message_is_the_documented_json_even_for_bad_input():
    m = build_mapping(["all"])
    f = frame()
    f[3] = np.nan
    msg = json.loads(m.inject(m.values(f), "set", "kf-7"))
    assert msg["apiName"] == "VTubeStudioPublicAPI" and msg["apiVersion"] == "1.0"
    assert msg["requestID"] == "kf-7" and msg["messageType"] == "InjectParameterDataRequest"
    assert msg["data"]["faceFound"] is True and msg["data"]["mode"] == "set"
    params = msg["data"]["parameterValues"]
    assert [p["id"] for p in params] == m.names
    np.testing.assert_allclose([p["value"] for p in params], np.nan_to_num(m.values(f)), atol=1e-5)


def test_custom_parameters():
    m = build_mapping(["all"])
    assert len(m.custom) == 50  # 52 shapes; CheekPuff and TongueOut are VTube Studio defaults already
    assert "JawOpen" in m.custom and "CheekPuff" not in m.custom
    m = build_mapping(["jawOpen", "HeadYaw"], prefix="KF")
    assert m.custom == ["KFJawOpen", "KFHeadYaw"]
    assert dict(zip(m.names, m.values(frame()).tolist()))["KFHeadYaw"] == pytest.approx(18.0)
    with pytest.raises(ValueError):
        build_mapping(["NotAShape"])


def test_token_flow_stream_and_persisted_token(vts, tmp_path):
    sink = make_sink(vts, tmp_path, custom=["JawOpen", "MouthPucker"])
    try:
        assert sink.connected.wait(5)
        stream(sink, 0.5)
        assert wait_until(lambda: vts.values.get("JawOpen") is not None)
    finally:
        sink.close()
    assert vts.token_requests == 1 and vts.auth_requests == [True]
    saved = json.loads((tmp_path / "token.json").read_text())
    assert saved["authenticationToken"] in vts.tokens and saved["pluginName"] == "KeyframeFace"
    assert (tmp_path / "token.json").stat().st_mode & 0o077 == 0  # private to the user
    assert set(vts.custom) == {"JawOpen", "MouthPucker"}
    assert vts.values["MouthOpen"] == pytest.approx(vts.values["JawOpen"], abs=1e-4)
    assert vts.values["EyeOpenLeft"] == pytest.approx(0.75)
    assert vts.injects >= 20 and not vts.errors_sent
    # next run: the stored token is used, the user is not asked again
    sink = make_sink(vts, tmp_path)
    try:
        assert sink.connected.wait(5)
    finally:
        sink.close()
    assert vts.token_requests == 1 and vts.auth_requests == [True, True]


def test_rejected_token_is_requested_again(vts, tmp_path):
    TokenStore(tmp_path / "token.json", "KeyframeFace", "KeyframeFace Runtime").save("revoked-token")
    sink = make_sink(vts, tmp_path)
    try:
        assert sink.connected.wait(5)
    finally:
        sink.close()
    assert vts.auth_requests == [False, True] and vts.token_requests == 1
    assert json.loads((tmp_path / "token.json").read_text())["authenticationToken"] in vts.tokens


def test_denied_access_is_reported_and_retried(tmp_path, caplog):
    server = FakeVTubeStudio(approve=False).start()
    try:
        with caplog.at_level(logging.ERROR, logger="runtime.sinks.vtubestudio"):
            sink = make_sink(server, tmp_path)
            try:
                assert wait_until(lambda: server.token_requests >= 2, 5)  # retried after backoff
                assert not sink.connected.is_set()
                sink.send(frame(), 0, 0.0)  # never blocks or raises while unauthenticated
            finally:
                sink.close()
    finally:
        server.stop()
    assert any("denied" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "token.json").exists()


def test_parameters_never_expire_even_when_frames_pause(vts, tmp_path):
    sink = make_sink(vts, tmp_path)
    try:
        assert sink.connected.wait(5)
        stream(sink, 0.3)
        time.sleep(2.5)  # the frame clock pauses: the sink must keep the parameters alive
        assert vts.lost == []
        assert {"MouthOpen", "FaceAngleX", "EyeOpenLeft"} <= set(vts.last_set)
    finally:
        sink.close()
    assert wait_until(lambda: len(vts.lost) > 0, 3)  # and the fake does expire them once we stop


def test_error_454_is_reported_once_and_recovers(vts, tmp_path, caplog):
    vts.other_plugin_owns.add("MouthSmile")
    with caplog.at_level(logging.INFO, logger="runtime.sinks.vtubestudio"):
        sink = make_sink(vts, tmp_path)
        try:
            assert sink.connected.wait(5)
            n = stream(sink, 0.4)
            assert wait_until(lambda: sink.errors.get(454, 0) >= 5)
            vts.other_plugin_owns.clear()  # the other plugin quits
            stream(sink, 0.3, start=n)
            assert wait_until(lambda: "MouthSmile" in vts.last_set)
        finally:
            sink.close()
    msgs = [r.getMessage() for r in caplog.records]
    conflict = [m for m in msgs if "error 454" in m]  # not "454": the port may contain it
    assert len(conflict) == 1 and "another VTube Studio plugin" in conflict[0] and "MouthSmile" in conflict[0]
    assert any("accepts our parameters again" in m for m in msgs)


def test_add_mode_shares_parameters(vts, tmp_path):
    vts.other_plugin_owns.add("MouthSmile")
    sink = make_sink(vts, tmp_path, mode="add")
    try:
        assert sink.connected.wait(5)
        stream(sink, 0.2)
        assert wait_until(lambda: "MouthSmile" in vts.last_set)
    finally:
        sink.close()
    assert 454 not in vts.errors_sent


def test_vts_restart_reconnects_with_backoff_and_same_token(vts, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="runtime.sinks.vtubestudio"):
        sink = make_sink(vts, tmp_path)
        try:
            assert sink.connected.wait(5)
            n = stream(sink, 0.2)
            vts.stop()  # VTube Studio quits
            assert wait_until(lambda: not sink.connected.is_set(), 3)
            t0 = time.monotonic()
            n = stream(sink, 0.6, start=n)  # frames keep coming; send never blocks
            assert time.monotonic() - t0 < 1.5
            injects_before = vts.injects
            vts.start()  # and comes back on the same port
            assert sink.connected.wait(5)
            stream(sink, 0.2, start=n)
            assert wait_until(lambda: vts.injects > injects_before)
        finally:
            sink.close()
    assert vts.token_requests == 1 and vts.auth_requests == [True, True]
    assert vts.connections >= 2
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1  # logged once per change of state, not once per retry


def test_unreachable_at_start_never_blocks(tmp_path):
    from tests.conftest import free_udp_port

    sink = VtsSink("127.0.0.1", free_udp_port(), token_path=str(tmp_path / "t.json"), backoff=(0.05, 0.2))
    try:
        t0 = time.perf_counter()
        for i in range(100):
            sink.send(frame(), i, i / 60)
        assert time.perf_counter() - t0 < 0.05
        assert not sink.connected.is_set()
    finally:
        sink.close()
    assert not sink.thread.is_alive()


def test_url_and_config_errors(tmp_path):
    opts = SinkOptions(vtubestudio=VtubeStudioConfig(token_path=str(tmp_path / "t.json"), custom=["Nope"]))
    with pytest.raises(SinkError) as e:
        open_sink("vts://localhost:8001", opts)
    assert "\n" not in str(e.value) and "Nope" in str(e.value)
    with pytest.raises(SinkError):
        open_sink("vts://localhost:8001", SinkOptions(vtubestudio=VtubeStudioConfig(mode="replace")))
    good = SinkOptions(vtubestudio=VtubeStudioConfig(token_path=str(tmp_path / "t.json")))
    for url, why in (("vts://no-such-host.invalid:8001", "resolve"), ("vts://localhost:port", "port")):
        with pytest.raises(SinkError, match=why) as e:
            open_sink(url, good)
        assert "\n" not in str(e.value)
    sink = open_sink("vts://", SinkOptions(vtubestudio=VtubeStudioConfig(token_path=str(tmp_path / "t.json"))))
    try:
        assert sink.label == "vts://localhost:8001"
    finally:
        sink.close()
