"""End to end with the real default model: the commands a user types, packets on a real socket."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from runtime.sinks.csv import read_take
from runtime.sinks.livelink import decode_packet

from .conftest import free_udp_port

CLI = [sys.executable, "-m", "runtime.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Receiver(threading.Thread):
    """A Live Link receiver on loopback that timestamps every datagram."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.packets: list[tuple[float, bytes]] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            self.packets.append((time.perf_counter(), data))

    def close(self):
        self.stop.set()
        self.join()
        self.sock.close()


@pytest.mark.model
def test_say_streams_live_link_at_60fps_to_a_real_socket():
    port = free_udp_port()
    rx = Receiver(port)
    rx.start()
    try:
        run = subprocess.run([*CLI, "say", "He smiles, then looks surprised.", "--sink",
                              f"livelink://127.0.0.1:{port}"], capture_output=True, text=True,
                             timeout=120, env=ENV)
    finally:
        rx.close()
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stderr.strip().splitlines()[-1])
    assert report["keyframes"] >= 2 and report["error"] is None
    # keyframes stream in before the model finishes
    assert report["first_keyframe_ms"] < report["generation_s"] * 1000

    times = np.array([t for t, _ in rx.packets])
    packets = [decode_packet(d) for _, d in rx.packets]
    assert len(packets) > 60
    frames = np.array([p.frame_number for p in packets])
    assert (np.diff(frames) > 0).all()  # rising frame numbers
    values = np.stack([p.values for p in packets])
    assert values.shape[1] == 61 and values[:, :52].min() >= 0 and values[:, :52].max() <= 1
    assert values.max() > 0.3  # the face moved
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 55 < rate < 65
    # the independent decoder agrees
    pllf = pytest.importorskip("pylivelinkface")
    ok, face = pllf.PyLiveLinkFace.decode(rx.packets[len(rx.packets) // 2][1])
    assert ok and face.name == "KeyframeFace" and face._version & 0xFF == 6
    np.testing.assert_allclose(face._blend_shapes, packets[len(packets) // 2].values, atol=1e-6)


@pytest.mark.model
def test_keyframes_command_prints_the_probe_format():
    run = subprocess.run([*CLI, "keyframes", "She bursts into tears.", "--format", "jsonl"],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 0, run.stderr
    keys = [json.loads(line) for line in run.stdout.splitlines()]
    assert keys and all(set(k) == {"t", "values"} for k in keys)
    ts = [k["t"] for k in keys]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert any(k["values"] for k in keys)


@pytest.mark.model
def test_render_writes_a_take_that_reads_back(tmp_path):
    out = tmp_path / "take.csv"
    run = subprocess.run([*CLI, "render", "A quick wink.", "-o", str(out)], capture_output=True,
                         text=True, timeout=120, env=ENV)
    assert run.returncode == 0, run.stderr
    take = read_take(out)
    assert len(take.values) > 30 and take.valid.all()
    np.testing.assert_allclose(np.diff(take.times), 1 / 60, atol=1e-3)


@pytest.mark.parametrize("args,message", [
    (["say", "hi", "--sink", "carrier-pigeon://x"], "unknown sink scheme"),
    (["say", "hi", "--sink", "livelink://no-such-host.invalid:11111"], "cannot resolve host"),
    (["say", "hi", "--sink", "livelink://127.0.0.1:99999"], "bad port"),
    (["say", "   ", "--sink", "livelink://127.0.0.1:11111"], "empty"),
    (["say", "hi"], "no sink"),
    (["keyframes", "hi", "--model", "/nope.gguf"], "neither a known name"),
    (["keyframes", "hi", "--lora", "/nope.gguf"], "LoRA adapter '/nope.gguf' does not exist"),
])
def test_bad_input_is_one_line_not_a_traceback(args, message):
    run = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in run.stderr


@pytest.mark.model
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_take_is_complete_when_stopped_mid_line(tmp_path, sig):
    import signal

    out = tmp_path / "take.csv"
    # A runner started in the background (`cmd &` in a script) passes SIGINT on as ignored, and
    # Python then keeps ignoring it; give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([*CLI, "say", "She laughs and laughs, then cries for a long time.", "--sink",
                             f"csv:{out}"], stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until frames are being written
        if out.exists() and out.stat().st_size > 20_000:
            break
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=30)
    assert "interrupted" in err
    take = read_take(out)
    lines = out.read_text().splitlines()
    assert len(take.values) == len(lines) - 1 > 20
    assert lines[-1].count(",") == 62  # the last row is whole
    np.testing.assert_allclose(np.diff(take.times), 1 / 60, atol=1e-3)


@pytest.mark.model
def test_render_speaks_supplied_word_timings(tmp_path):
    words = [{"word": "bob", "start": 0.3, "end": 0.6}, {"word": "bought", "start": 0.65, "end": 1.0},
             {"word": "apples", "start": 1.1, "end": 1.6}]
    (tmp_path / "w.json").write_text(json.dumps(words))
    out = tmp_path / "take.csv"
    run = subprocess.run([*CLI, "render", "Bob bought apples.", "--words", str(tmp_path / "w.json"), "-o",
                          str(out)], capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 0, run.stderr
    take = read_take(out)
    from runtime import channels

    gap = take.values[:, channels.INDEX["JawOpen"]] - take.values[:, channels.INDEX["MouthClose"]]
    for w in ("bob", "bought"):  # lips meet within a frame of each b-word's start; first row = time 0
        t = next(x["start"] for x in words if x["word"] == w)
        i = round(t * 60)
        assert gap[i - 1:i + 2].min() <= 0.05
    assert gap[round(0.45 * 60)] >= 0.15  # the open vowel of "bob"
    bad = subprocess.run([*CLI, "render", "x", "--words", str(out), "-o", str(tmp_path / "y.csv")],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert bad.returncode == 2 and "speech:" in bad.stderr and "Traceback" not in bad.stderr
