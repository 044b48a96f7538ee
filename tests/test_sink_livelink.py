import struct

import numpy as np
import pytest

from runtime.sinks.livelink import (
    LiveLinkEncoder,
    PacketError,
    decode_packet,
    encode_packet,
)

DEV = "12345678-1234-1234-1234-123456789abc"  # 36 bytes, like the phone


def sample_values():
    v = np.linspace(0, 1, 61, dtype=np.float32)
    v[52:] = np.linspace(-1, 1, 9)
    return v


def test_byte_layout_field_by_field():
    v = sample_values()
    data = encode_packet(v, DEV, "Face", 1234, 0.25, (60, 1))
    n, m = len(DEV), len("Face")
    assert len(data) == 270 + n + m
    assert data[0] == 6
    assert struct.unpack(">i", data[1:5])[0] == n and data[5:5 + n] == DEV.encode()
    assert struct.unpack(">i", data[5 + n:9 + n])[0] == m and data[9 + n:9 + n + m] == b"Face"
    frame, sub, num, den = struct.unpack(">ifii", data[9 + n + m:25 + n + m])
    assert (frame, sub, num, den) == (1234, 0.25, 60, 1)
    assert data[25 + n + m] == 61
    np.testing.assert_array_equal(np.frombuffer(data[26 + n + m:], ">f4"), v)


def test_own_decoder_roundtrip():
    v = sample_values()
    p = decode_packet(encode_packet(v, "dev", "Subject", 7, 0.5))
    assert (p.device_id, p.subject, p.frame_number, p.subframe, p.rate) == ("dev", "Subject", 7, 0.5, (60, 1))
    np.testing.assert_array_equal(p.values, v)


def test_independent_decoder_pylivelinkface():
    pllf = pytest.importorskip("pylivelinkface")
    v = sample_values()
    data = encode_packet(v, DEV, "Face", 10, 0.0)
    success, face = pllf.PyLiveLinkFace.decode(data)
    assert success
    assert face.name == "Face" and face._frames == 10 and face.fps == 60
    # PyLiveLinkFace keeps its own names; compare the 61 values in order
    np.testing.assert_allclose(np.asarray(face._blend_shapes, dtype=np.float32), v, atol=1e-6)


def test_timecode_fields_from_clock_time():
    enc = LiveLinkEncoder("d", "s", 60.0)
    p = decode_packet(enc.encode(np.zeros(61, np.float32), 3600.0 + 10.5 / 60))
    assert p.frame_number == 216010 and p.subframe == pytest.approx(0.5, abs=1e-3)
    frames = [decode_packet(enc.encode(np.zeros(61, np.float32), n * (1 / 60))).frame_number for n in range(600)]
    assert frames == list(range(600))  # float time never repeats or skips a frame number


@pytest.mark.parametrize("mutate", [
    lambda d: bytes([5]) + d[1:],  # wrong version
    lambda d: d[:-3],  # truncated
    lambda d: d[:-245] + bytes([60]) + d[-244:],  # wrong count
])
def test_malformed_packets_are_rejected(mutate):
    data = encode_packet(np.zeros(61, np.float32), "d", "s", 0, 0.0)
    with pytest.raises(PacketError):
        decode_packet(mutate(data))


def test_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="61"):
        encode_packet(np.zeros(60, np.float32), "d", "s", 0, 0.0)
