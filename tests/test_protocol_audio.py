"""Audio in the control protocol, without sockets: inline WAV, announced streams and their binary
chunks, audio_end, start; every bad input gets its code and the line goes on without the audio."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest

from runtime import protocol as proto

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


def espeak_wav(text: str = "Pop the big map, Bob.", rate_wpm: int = 175) -> bytes:
    """A real voice: espeak-ng's WAV file (22050 Hz, mono, 16-bit PCM)."""
    return subprocess.run(["espeak-ng", "-s", str(rate_wpm), "--stdout", text], check=True,
                          capture_output=True, timeout=30).stdout


def fix_stdout_wav(data: bytes) -> bytes:
    """espeak-ng --stdout cannot seek back, so its header says 0xFFFFFFFF bytes: give the real sizes."""
    fmt_end = data.index(b"data") + 8
    n = len(data) - fmt_end
    return (b"RIFF" + struct.pack("<I", len(data) - 8) + data[8:fmt_end - 4] + struct.pack("<I", n)
            + data[fmt_end:])


def pcm_of(wav: bytes) -> tuple[np.ndarray, int]:
    """The float samples and rate of a 16-bit mono WAV (the test's own reader, not the runtime's)."""
    i = wav.index(b"data")
    rate = struct.unpack_from("<I", wav, 24)[0]
    return np.frombuffer(wav[i + 8:], "<i2").astype(np.float32) / 32768.0, rate


def make_wav(x: np.ndarray, rate: int, *, channels: int = 1, fmt: str = "s16") -> bytes:
    """Samples (frames x channels or mono) -> WAV bytes in 16-bit PCM, 32-bit float, or another tag."""
    x = np.asarray(x, np.float32)
    if channels > 1 and x.ndim == 1:
        x = np.repeat(x[:, None], channels, axis=1)
    if fmt == "f32":
        tag, bits, raw = 3, 32, x.astype("<f4").tobytes()
    elif fmt == "u8":
        tag, bits, raw = 1, 8, (x * 127 + 128).astype(np.uint8).tobytes()
    elif fmt == "mulaw":
        tag, bits, raw = 7, 8, (x * 127 + 128).astype(np.uint8).tobytes()
    else:
        tag, bits, raw = 1, 16, (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    align = channels * bits // 8
    head = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(raw), b"WAVE", b"fmt ", 16, tag, channels, rate,
                       rate * align, align, bits, b"data", len(raw))
    return head + raw


def tone(seconds: float, rate: int, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def session(**kw) -> proto.Session:
    kw.setdefault("say_burst", 50)
    return proto.Session(["alice", "bob"], proto.Limits(**kw))


def say(s: proto.Session, audio, now: float = 0.0, **fields) -> proto.Say:
    fields.setdefault("id", "l1")
    return s.receive(json.dumps({"type": "say", "text": "Hello there.", "audio": audio, **fields}), now)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- inline WAV -------------------------------------------------------------------------------------
@needs_espeak
def test_inline_espeak_wav_is_decoded():
    wav = fix_stdout_wav(espeak_wav())
    ref, rate = pcm_of(wav)
    cmd = say(session(), b64(wav))
    assert cmd.audio_error is None and not cmd.audio.stream
    assert cmd.audio.rate == rate == 22050
    np.testing.assert_allclose(cmd.audio.samples, ref, atol=1e-6)


@needs_espeak
def test_inline_wav_piped_from_a_tts_engine_has_no_real_length():
    raw = espeak_wav()  # --stdout: the header's lengths are placeholders (0x7ffff000)
    cmd = say(session(), b64(raw))
    assert cmd.audio_error is None
    np.testing.assert_allclose(cmd.audio.samples, pcm_of(raw)[0], atol=1e-6)


@pytest.mark.parametrize("rate, channels, fmt", [(8000, 1, "s16"), (44100, 2, "s16"), (48000, 1, "f32"),
                                                 (96000, 2, "f32")])
def test_inline_any_rate_mono_or_stereo_pcm16_or_float(rate, channels, fmt):
    x = tone(0.5, rate)
    cmd = say(session(), b64(make_wav(x, rate, channels=channels, fmt=fmt)))
    assert cmd.audio_error is None and cmd.audio.rate == rate
    np.testing.assert_allclose(cmd.audio.samples, x, atol=1e-4)  # stereo averaged to the same mono


@pytest.mark.parametrize("data, code, words", [
    (b"not base64 at all!!", "invalid_audio", "base64"),
    (b64(b"OggS" + bytes(60)), "invalid_audio", "not a WAV"),
    (b64(make_wav(tone(0.2, 16000), 16000)[:30]), "invalid_audio", "truncated"),
    (b64(make_wav(tone(0.2, 16000), 16000)[:2000]), "invalid_audio", "truncated"),
    (b64(make_wav(tone(0.2, 16000), 16000, fmt="mulaw")), "invalid_audio", "mu-law"),
    (b64(make_wav(tone(0.2, 4000), 4000)), "invalid_audio", "4000 Hz"),
    (b64(make_wav(tone(3.0, 16000), 16000)), "audio_too_big", "2 s"),
    (5, "invalid_audio", "base64 WAV string"),
])
def test_bad_inline_audio_is_an_error_and_the_line_goes_on(data, code, words):
    s = session(audio_max_seconds=2.0)
    audio = data.decode() if isinstance(data, bytes) else data
    cmd = say(s, audio)
    assert isinstance(cmd, proto.Say) and cmd.text == "Hello there." and cmd.audio is None
    ev = json.loads(cmd.audio_error.event())
    assert ev["code"] == code and words in ev["message"] and ev["id"] == "l1", ev


def test_inline_size_limits():
    s = session(max_message=1000, audio_max_message=20_000, audio_max_bytes=10_000)
    small = b64(make_wav(tone(0.1, 16000), 16000))  # 3.2 kB: over max_message, fine with audio
    assert say(s, small).audio.rate == 16000
    # over max_message without inline audio is still too big
    pad = json.dumps({"type": "say", "text": "hi", "context": "x" * 990, "audio": {"format": "wav"}, "id": "z"})
    assert len(pad) > 1000
    with pytest.raises(proto.ProtocolError) as e:
        s.receive(pad, 0)
    assert e.value.code == "message_too_big"
    with pytest.raises(proto.ProtocolError) as e:  # over audio_max_message
        say(s, "A" * 20_001)
    assert e.value.code == "message_too_big"
    cmd = say(s, b64(make_wav(tone(0.4, 16000), 16000)))  # 12.8 kB decoded > audio_max_bytes
    assert cmd.audio is None and cmd.audio_error.code == "audio_too_big"


# -- streams ----------------------------------------------------------------------------------------
def feed(s: proto.Session, id: str, data: bytes, parts: int, now: float = 0.0) -> list[proto.AudioChunk]:
    cuts = np.linspace(0, len(data), parts + 1).astype(int)
    return [s.receive(proto.audio_chunk(id, data[a:b]), now) for a, b in zip(cuts[:-1], cuts[1:])]


@needs_espeak
def test_wav_stream_split_anywhere_gives_the_same_samples():
    raw = espeak_wav("Maybe baby, bubble pop.")  # the header says "unknown length", as a streaming writer does
    ref, rate = pcm_of(raw)
    s = session()
    cmd = say(s, {"format": "wav", "stream": True}, id="w1")
    assert cmd.audio.stream and cmd.audio_error is None and s.streams == ["w1"]
    chunks = feed(s, "w1", raw, 37)  # 37 pieces: the header and samples are split mid-way
    assert all(c.id == "w1" and c.avatar == "alice" and not c.end for c in chunks)
    assert chunks[-1].rate == rate
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), ref, atol=1e-6)
    end = s.receive('{"type":"audio_end","id":"w1"}', 1.0)
    assert end.end and end.error is None and s.streams == []


def test_pcm_stream_float_stereo_and_odd_splits():
    rate, x = 48000, tone(0.3, 48000)
    raw = np.repeat(x[:, None], 2, axis=1).astype("<f4").tobytes()
    s = session()
    cmd = say(s, {"format": "pcm", "rate": rate, "channels": 2, "sample": "f32le"}, id="p1", avatar="bob")
    assert cmd.audio.rate == rate and cmd.audio.format == "pcm"
    chunks = feed(s, "p1", raw, 13)  # mid-sample splits: the partial sample waits for the next chunk
    assert {c.avatar for c in chunks} == {"bob"}
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), x, atol=1e-6)
    assert s.receive('{"type":"audio_end","id":"p1"}', 0).error is None


@pytest.mark.parametrize("audio, fields, code, words", [
    ({"format": "wav"}, {"id": None}, "invalid_audio", "needs an id"),
    ({"format": "mp3"}, {}, "invalid_audio", "audio.format"),
    ({"format": "pcm"}, {}, "invalid_audio", "audio.rate"),
    ({"format": "pcm", "rate": 16000, "sample": "s8"}, {}, "invalid_audio", "sample format"),
    ({"format": "pcm", "rate": 16000, "channels": 0}, {}, "invalid_audio", "channels"),
    ({"format": "pcm", "rate": 1000}, {}, "invalid_audio", "1000 Hz"),
    ({"format": "wav", "rate": 16000}, {}, "invalid_audio", "'rate'"),
    ({"format": "wav", "stream": False}, {}, "invalid_audio", "inline"),
])
def test_bad_announcements(audio, fields, code, words):
    s = session()
    msg = {"type": "say", "text": "Hi.", "id": "a1", "audio": audio, **fields}
    cmd = s.receive(json.dumps({k: v for k, v in msg.items() if v is not None}), 0)
    assert cmd.text == "Hi." and cmd.audio is None and s.streams == []
    assert cmd.audio_error.code == code and words in cmd.audio_error.message, cmd.audio_error.message


def test_wrong_format_stream_ends_with_an_error_and_late_chunks_are_dropped():
    s = session()
    say(s, {"format": "wav"}, id="m1")
    bad = make_wav(tone(0.2, 16000), 16000, fmt="mulaw")
    first = s.receive(proto.audio_chunk("m1", bad[:500]), 0)
    assert first.end and first.error.code == "invalid_audio" and "mu-law" in first.error.message
    assert json.loads(first.error.event())["id"] == "m1" and s.streams == []
    assert s.receive(proto.audio_chunk("m1", bad[500:]), 0) is None  # no error per late chunk
    assert s.receive('{"type":"audio_end","id":"m1"}', 0) is None


def test_truncated_stream_is_an_error_at_audio_end():
    s = session()
    say(s, {"format": "wav"}, id="t1")
    wav = make_wav(tone(0.5, 16000), 16000)
    chunks = feed(s, "t1", wav[: len(wav) // 2], 3)
    assert sum(len(c.samples) for c in chunks) > 0
    end = s.receive('{"type":"audio_end","id":"t1"}', 0)
    assert end.end and end.error.code == "invalid_audio" and "truncated" in end.error.message
    say(s, {"format": "wav"}, id="t2")
    end = s.receive('{"type":"audio_end","id":"t2"}', 0)  # not even a header
    assert end.error.code == "invalid_audio" and "header" in end.error.message


def test_stream_limits_seconds_bytes_chunk_and_count():
    s = session(audio_max_seconds=1.0, audio_max_chunk=10_000, audio_streams=2, audio_max_bytes=200_000)
    say(s, {"format": "pcm", "rate": 16000}, id="s1")
    raw = (tone(1.5, 16000) * 32767).astype("<i2").tobytes()
    out = feed(s, "s1", raw, 6)  # 8000 bytes (0.25 s) each
    assert sum(len(c.samples) for c in out[:5]) == 16000  # cut at exactly 1 s
    assert out[4].end and out[4].error.code == "audio_too_big" and out[5] is None
    assert all(c is None for c in feed(s, "s1", raw[:4000], 1))
    say(s, {"format": "pcm", "rate": 16000}, id="s2")
    big = s.receive(proto.audio_chunk("s2", bytes(10_000)), 0)
    assert big.end and big.error.code == "audio_too_big" and "chunk" in big.error.message
    say(s, {"format": "pcm", "rate": 16000}, id="s3")
    say(s, {"format": "pcm", "rate": 16000}, id="s4")
    cmd = say(s, {"format": "pcm", "rate": 16000}, id="s5")
    assert cmd.audio is None and cmd.audio_error.code == "too_many_streams"
    cmd = say(s, {"format": "pcm", "rate": 16000}, id="s3")
    assert cmd.audio is None and "already open" in cmd.audio_error.message
    s2 = session(audio_max_bytes=1000)
    say(s2, {"format": "pcm", "rate": 16000}, id="b1")
    assert not s2.receive(proto.audio_chunk("b1", bytes(900)), 0).end
    over = s2.receive(proto.audio_chunk("b1", bytes(200)), 0)
    assert over.end and over.error.code == "audio_too_big"


def test_timeout_close_and_drop():
    s = session(audio_stream_timeout=5.0)
    say(s, {"format": "wav"}, id="x1", now=0.0)
    say(s, {"format": "wav"}, id="x2", now=0.0)
    s.receive(proto.audio_chunk("x2", make_wav(tone(0.1, 16000), 16000)[:100]), 4.0)
    assert s.expire(4.9) == []
    (gone,) = s.expire(5.5)
    assert gone.id == "x1" and gone.end and gone.error.code == "audio_timeout"
    (left,) = s.close()
    assert left.id == "x2" and left.end and left.error is None and s.streams == []
    say(s, {"format": "wav"}, id="x3")
    s.drop_stream("x3")
    assert s.streams == [] and say(s, {"format": "wav"}, id="x3").audio.stream


@pytest.mark.parametrize("data, code", [
    (b"KFA1", "invalid_message"),
    (b"KFA1\x00abc", "invalid_message"),
    (b"KFA1\x09../../etc", "invalid_message"),
    (b"KFA1\x05l\xffxyz", "invalid_message"),
    (proto.audio_chunk("nobody", b"\x00\x00"), "unknown_stream"),
    (b"KFA2\x02l1\x00\x00", "invalid_json"),  # not the magic: parsed as JSON, as before
])
def test_bad_chunks(data, code):
    s = session()
    say(s, {"format": "wav"}, id="l1")
    with pytest.raises(proto.ProtocolError) as e:
        s.receive(data, 0)
    assert e.value.code == code and e.value.message
    assert s.streams == ["l1"]  # the open stream is untouched


def test_audio_end_and_start_messages():
    s = session()
    with pytest.raises(proto.ProtocolError) as e:
        s.receive('{"type":"audio_end","id":"nope"}', 0)
    assert e.value.code == "unknown_stream" and e.value.id == "nope"
    with pytest.raises(proto.ProtocolError) as e:
        s.receive('{"type":"audio_end"}', 0)
    assert e.value.code == "missing_field"
    assert s.receive('{"type":"start","id":"l9"}', 0) == proto.Start("alice", "l9", 0.0)
    assert s.receive('{"type":"start","id":"l9","avatar":"bob","position":0.25}', 0) == proto.Start("bob", "l9", 0.25)
    for bad, code in (('{"type":"start","id":"l9","position":-1}', "invalid_field"),
                      ('{"type":"start","id":"l9","avatar":"carol"}', "unknown_avatar"),
                      ('{"type":"start"}', "missing_field")):
        with pytest.raises(proto.ProtocolError) as e:
            s.receive(bad, 0)
        assert e.value.code == code


def test_hello_states_the_audio_limits():
    hello = json.loads(proto.hello(["alice"], 60.0, proto.Limits(audio_max_seconds=30.0)))
    assert hello["limits"]["audio_max_seconds"] == 30.0 and hello["limits"]["audio_max_chunk"] == 256 << 10


def test_audio_chunk_framing():
    data = proto.audio_chunk("line-7", b"\x01\x02")
    assert data == b"KFA1\x06line-7\x01\x02"
    with pytest.raises(ValueError):
        proto.audio_chunk("bad id", b"")
