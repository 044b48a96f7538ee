"""Audio over serve's real WebSocket on loopback, with the real default model and real voices
(espeak-ng WAV files): a stream of binary chunks played in real time with a start message, inline
WAV, and bad audio (truncated, wrong format, oversized, unknown stream): each a clear error event,
the line goes on, the connection and the other avatar's frames go on untouched."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest

from runtime import channels
from runtime import protocol as proto
from tests.test_protocol_audio import espeak_wav, make_wav, needs_espeak, pcm_of, tone
from tests.test_serve import Conn, make_server

pytestmark = [needs_espeak, pytest.mark.model]
IX = channels.INDEX
TEXT = "Pop the big map, Bob."


@pytest.fixture(scope="module")
def server(config, backend, language):
    srv = make_server(config, backend, language, max_lines=10, say_burst=20, say_rate=5.0,
                      audio_max_chunk=64 << 10, audio_max_seconds=4.0, audio_stream_timeout=3.0)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def voice() -> tuple[np.ndarray, int]:
    """0.6 s of silence, espeak-ng saying TEXT, 0.4 s of silence: float samples and rate."""
    x, rate = pcm_of(espeak_wav(TEXT))
    return np.concatenate([np.zeros(int(0.6 * rate), np.float32), x,
                           np.zeros(int(0.4 * rate), np.float32)]), rate


class Timed(Conn):
    """A client that notes when each frame arrives (perf_counter), to set it against the audio."""

    def __init__(self, srv, **kw) -> None:
        self.arrived: list[float] = []
        super().__init__(srv, **kw)

    def next(self, *types: str, timeout: float = 20.0) -> dict:
        n = len(self.frames)
        try:
            return super().next(*types, timeout=timeout)
        finally:
            now = time.perf_counter()
            self.arrived += [now] * (len(self.frames) - n)

    def drain(self, seconds: float) -> list[dict]:
        """Read everything for ``seconds``; the control messages seen."""
        out, end = [], time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(self.next(timeout=left))
            except TimeoutError:
                break
        return out

    def series(self, avatar: str) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i, f in enumerate(self.frames) if f[0] == avatar]
        return np.array([self.arrived[i] for i in keep]), np.array([self.frames[i][3] for i in keep])


class Watcher:
    """Another client that reads one avatar's binary frames on its own thread, as fast as they come."""

    def __init__(self, srv, avatar: str) -> None:
        self.conn = Conn(srv)
        self.conn.send({"type": "subscribe", "frames": "binary", "avatar": avatar})
        self.conn.next("subscribed")
        self.seqs: list[int] = []
        self.arrived: list[float] = []
        self.values: list[np.ndarray] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                data = self.conn.ws.recv()
                if isinstance(data, bytes):
                    _, seq, _, values = proto.decode_frame_binary(data)
                    self.arrived.append(time.perf_counter())
                    self.seqs.append(seq)
                    self.values.append(values)
        except Exception:  # closed
            return

    def close(self) -> None:
        self.conn.close()
        self._thread.join(2)


def envelope(x: np.ndarray, rate: int, times: np.ndarray, win: float = 0.05) -> np.ndarray:
    """RMS of the audio around each time (seconds of audio time)."""
    out = np.zeros(len(times))
    for k, t in enumerate(times):
        a, b = int((t - win / 2) * rate), int((t + win / 2) * rate)
        if 0 <= a < b <= len(x):
            out[k] = np.sqrt(np.mean(x[a:b] ** 2))
    return out


def test_streamed_chunks_in_real_time_drive_the_mouth_on_the_audio_clock(server, voice):
    x, rate = voice
    alice = Watcher(server, "alice")
    c = Timed(server)
    c.send({"type": "say", "id": "st-1", "avatar": "alice", "text": TEXT,
            "audio": {"format": "pcm", "rate": rate, "channels": 1, "sample": "s16le"}})
    assert c.next("ack")["id"] == "st-1"
    pcm = (x * 32767).astype("<i2").tobytes()
    step = int(0.04 * rate) * 2  # 40 ms chunks, sent as a TTS engine hands them out
    t0 = time.perf_counter()
    for k, a in enumerate(range(0, len(pcm), step)):
        c.ws.send(proto.audio_chunk("st-1", pcm[a:a + step]))
        if k == 5:  # the client's player has buffered 0.2 s and starts playing now
            c.send({"type": "start", "id": "st-1"})
            t_play = time.perf_counter()
        c.drain(max(0.0, t0 + (k + 1) * 0.04 - time.perf_counter()))
    c.send({"type": "audio_end", "id": "st-1"})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "st-1", timeout=120)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    assert msgs[-1] == {"type": "done", "id": "st-1", "avatar": "alice"}
    alice.close()
    at, f = np.array(alice.arrived), np.array(alice.values)
    audio_t = at - t_play
    during = (audio_t > 0.0) & (audio_t < len(x) / rate)
    jaw = f[during, IX["JawOpen"]]
    env = envelope(x, rate, audio_t[during])
    print(f"\nframes during the audio: {during.sum()}, jaw max {jaw.max():.2f}, "
          f"r(jaw, loudness) = {np.corrcoef(jaw, env)[0, 1]:.2f}")
    assert during.sum() > 0.8 * 60 * len(x) / rate  # the frames went on at the clock's pace
    assert jaw.max() > 0.2  # the voice opened the mouth ...
    quiet = audio_t[during] < 0.45
    assert jaw[quiet].max() < 0.1  # ... not during the leading silence (the audio clock, not arrival)
    assert np.corrcoef(jaw, env)[0, 1] > 0.3  # and it follows the voice's loudness in time
    c.close()


def test_a_burst_of_chunks_faster_than_analysis_loses_nothing(server, voice):
    x, rate = voice  # 3 s of audio in 10 ms chunks, all at once (a TTS engine done with a sentence)
    alice = Watcher(server, "alice")
    c = Timed(server)
    c.send({"type": "say", "id": "burst-1", "avatar": "alice", "text": TEXT,
            "audio": {"format": "pcm", "rate": rate, "sample": "f32le"}})
    c.next("ack")
    raw, step = x.astype("<f4").tobytes(), int(0.01 * rate) * 4
    t0 = time.perf_counter()
    c.send({"type": "start", "id": "burst-1"})
    for a in range(0, len(raw), step):
        c.ws.send(proto.audio_chunk("burst-1", raw[a:a + step]))
    c.send({"type": "audio_end", "id": "burst-1"})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "burst-1", timeout=120)
    ended = time.perf_counter()
    alice.close()
    assert len(raw) // step > 256  # more chunks than the analysis queue holds
    assert not [m for m in msgs if m["type"] == "error"], msgs
    assert ended - t0 >= len(x) / rate - 0.6  # the line lasted until its last word (then 0.4 s of silence)
    at, jaw = np.array(alice.arrived), np.array(alice.values)[:, IX["JawOpen"]]
    tail = (at > t0 + len(x) / rate - 0.8) & (at < t0 + len(x) / rate - 0.4)  # "... Bob.": the last chunks
    assert jaw[(at > t0) & (at < ended)].max() > 0.2 and jaw[tail].max() > 0.1
    c.close()


def test_a_late_start_message_holds_the_mouth_until_playback(server, voice):
    x, rate = voice  # speech from 0.6 s of audio time
    wav = make_wav(x, rate)
    alice = Watcher(server, "alice")
    c = Timed(server)
    c.send({"type": "say", "id": "late-1", "avatar": "alice", "text": TEXT,
            "audio": base64.b64encode(wav).decode(), "start": 5.0})  # "I will play it in 5 s" ...
    said = time.perf_counter()
    assert c.next("ack")["id"] == "late-1"
    time.sleep(1.0)
    c.send({"type": "start", "id": "late-1", "position": 0.0})  # ... no: playback starts now
    started = time.perf_counter()
    c.until(lambda m: m["type"] == "done" and m["id"] == "late-1", timeout=120)
    alice.close()
    at, jaw = np.array(alice.arrived), np.array(alice.values)[:, IX["JawOpen"]]
    span = (at > said) & (at < started + len(x) / rate)
    r_start = np.corrcoef(jaw[span], envelope(x, rate, at[span] - started))[0, 1]
    r_said = np.corrcoef(jaw[span], envelope(x, rate, at[span] - said))[0, 1]  # had it played at once
    print(f"\nr(jaw, loudness) on the start's clock {r_start:.2f}, on the say's {r_said:.2f}")
    assert r_start > 0.3 and r_start > r_said + 0.2  # the mouth follows the start message's clock
    c.close()


def test_inline_wav_line(server):
    wav = espeak_wav("Maybe my mum made a map.")
    c = Timed(server)
    c.send({"type": "subscribe", "frames": "json", "avatar": "bob"})
    c.next("subscribed")
    c.send({"type": "say", "id": "in-1", "avatar": "bob", "text": "Maybe my mum made a map.",
            "audio": base64.b64encode(wav).decode()})
    assert c.next("ack")["id"] == "in-1"
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "in-1", timeout=120)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    _, f = c.series("bob")
    gap = f[:, IX["JawOpen"]] - f[:, IX["MouthClose"]]
    assert gap.max() > 0.15
    c.close()


def test_bad_audio_is_an_error_the_line_goes_on_and_the_other_avatar_is_untouched(server):
    bob = Watcher(server, "bob")
    c = Timed(server)
    t_begin = time.perf_counter()
    good = make_wav(tone(0.5, 16000), 16000)
    cases = [  # (say's audio, binary chunks, expected code, words in the message)
        (base64.b64encode(good[:3000]).decode(), [], "invalid_audio", "truncated"),
        (base64.b64encode(make_wav(tone(0.3, 8000), 8000, fmt="mulaw")).decode(), [], "invalid_audio", "mu-law"),
        ({"format": "wav"}, [make_wav(tone(0.3, 16000), 16000, fmt="mulaw")], "invalid_audio", "mu-law"),
        ({"format": "pcm", "rate": 16000}, [bytes(70 << 10)], "audio_too_big", "chunk"),
        ({"format": "pcm", "rate": 16000}, [bytes(32 << 10)] * 5, "audio_too_big", "4 s"),
        ({"format": "wav"}, [good[:2000], b"END"], "invalid_audio", "truncated"),
        ({"format": "flac"}, [], "invalid_audio", "audio.format"),
    ]
    for k, (audio, chunks, code, words) in enumerate(cases):
        line = f"bad-{k}"
        c.send({"type": "say", "id": line, "avatar": "alice", "text": "Hmm.", "audio": audio})
        for data in chunks:
            if data == b"END":
                c.send({"type": "audio_end", "id": line})
            else:
                c.ws.send(proto.audio_chunk(line, data))
        msgs: list[dict] = []
        while not (any(m["type"] == "error" for m in msgs) and any(m["type"] == "ack" for m in msgs)):
            msgs.append(c.next("error", "ack", timeout=30))  # the line is acked: it goes on
        (err,) = [m for m in msgs if m["type"] == "error"]
        assert err["code"] == code and words in err["message"] and err["id"] == line, (k, err)
        assert [m["id"] for m in msgs if m["type"] == "ack"] == [line]
        if chunks and chunks[-1] != b"END":
            c.ws.send(proto.audio_chunk(line, bytes(100)))  # late chunks of a failed stream: no error each
            c.send({"type": "audio_end", "id": line})
    c.ws.send(proto.audio_chunk("never-said", bytes(10)))
    assert c.next("error")["code"] == "unknown_stream"
    c.send({"type": "interrupt", "avatar": "alice"})
    seen = c.drain(1.0)
    assert not [m for m in seen if m["type"] == "error"], seen
    bob.close()
    seconds = time.perf_counter() - t_begin
    seqs, gaps = np.array(bob.seqs), np.diff(bob.arrived)
    print(f"\nbob: {len(seqs)} frames in {seconds:.1f} s, longest gap {gaps.max() * 1000:.0f} ms")
    assert len(seqs) > 0.8 * 60 * seconds  # bob's frames went on at the clock's pace all along ...
    assert (np.diff(seqs) >= 1).all() and np.diff(seqs).max() <= 8  # ... in order, none lost for long
    c.send({"type": "say", "id": "after", "avatar": "bob", "text": "All good.", "talk": True})
    c.until(lambda m: m["type"] == "done" and m["id"] == "after", timeout=120)  # the connection works
    c.close()


def test_stream_timeout_and_disconnect_end_the_line(server):
    watcher = Timed(server)
    watcher.send({"type": "subscribe", "frames": "json", "avatar": "alice"})
    watcher.next("subscribed")
    c = Timed(server)
    c.send({"type": "say", "id": "to-1", "avatar": "alice", "text": "Well.", "audio": {"format": "wav"}})
    c.next("ack")
    c.ws.send(proto.audio_chunk("to-1", make_wav(tone(0.2, 16000), 16000)))
    err = c.next("error", timeout=15)  # no audio_end, no chunk for 3 s
    assert err["code"] == "audio_timeout" and err["id"] == "to-1"
    c.until(lambda m: m["type"] == "done" and m["id"] == "to-1", timeout=120)
    c.send({"type": "say", "id": "dc-1", "avatar": "alice", "text": "Well.", "audio": {"format": "wav"}})
    c.next("ack")
    c.ws.send(proto.audio_chunk("dc-1", make_wav(tone(0.2, 16000), 16000)[:1000]))
    c.close()  # gone mid-stream: the line ends with the audio it had
    watcher.until(lambda m: m["type"] == "done" and m["id"] == "dc-1", timeout=120)
    watcher.close()


def test_interrupt_mid_stream_drops_its_late_chunks_quietly(server, voice):
    x, rate = voice
    c = Timed(server)
    c.send({"type": "say", "id": "cut-1", "avatar": "alice", "text": TEXT,
            "audio": {"format": "pcm", "rate": rate, "sample": "f32le"}})
    c.next("ack")
    raw = x.astype("<f4").tobytes()
    c.ws.send(proto.audio_chunk("cut-1", raw[: len(raw) // 3]))
    c.send({"type": "interrupt", "avatar": "alice"})
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "cut-1", timeout=30)
    assert msgs[-1].get("interrupted") is True
    c.ws.send(proto.audio_chunk("cut-1", raw[len(raw) // 3:]))
    c.send({"type": "audio_end", "id": "cut-1"})
    c.send({"type": "start", "id": "cut-1"})
    seen = c.drain(0.5)
    assert [m["code"] for m in seen if m["type"] == "error"] == ["unknown_stream"]  # the start only
    c.close()


def test_inline_wav_over_a_mebibyte_passes_the_socket(server):
    x = tone(3.3, 48000, 180.0) * np.hanning(int(3.3 * 48000)).astype(np.float32)
    wav = make_wav(x, 48000, channels=2, fmt="f32")  # 48 kHz stereo float: 1.27 MB, 1.7 MB in base64
    c = Conn(server)
    msg = json.dumps({"type": "say", "id": "big-1", "avatar": "bob", "text": "Aaah.",
                      "audio": base64.b64encode(wav).decode()})
    assert len(msg) > 1 << 20 and len(wav) > 1 << 20
    c.send(msg)
    msgs = c.until(lambda m: m["type"] == "done" and m["id"] == "big-1", timeout=120)
    assert [m["type"] for m in msgs if m["type"] in ("ack", "error")] == ["ack"]
    c.close()


def test_hello_has_the_audio_limits(server):
    c = Conn(server)
    assert c.hello["limits"]["audio_max_chunk"] == 64 << 10 and c.hello["limits"]["audio_max_seconds"] == 4.0
    c.close()


def test_json_in_a_binary_message_still_works(server):
    c = Conn(server)
    c.send(json.dumps({"type": "subscribe", "avatar": "bob"}).encode())
    assert c.next("subscribed")["avatar"] == "bob"
    c.close()
