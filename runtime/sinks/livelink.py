"""Live Link Face UDP (version 6): the packet Unreal's Live Link Face source and MetaHumans read.

Pure codec (``encode_packet`` / ``decode_packet``: values in, bytes out and back, no sockets) and a
thin non-blocking UDP transport. Byte layout: ../shared/PROTOCOLS.md; every field big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from runtime import channels
from runtime.sinks.base import UdpSink

VERSION = 6
DEFAULT_PORT = 11111
_BE_F32 = np.dtype(">f4")


def _header(device_id: str, subject: str) -> bytes:
    dev = device_id.encode("utf-8")
    sub = subject.encode("utf-8")
    return struct.pack(">Bi", VERSION, len(dev)) + dev + struct.pack(">i", len(sub)) + sub


def encode_packet(values: np.ndarray, device_id: str, subject: str, frame_number: int,
                  subframe: float, rate: tuple[int, int] = (60, 1)) -> bytes:
    """One Live Link Face datagram: 270 + len(device_id) + len(subject) bytes."""
    return _header(device_id, subject) + _body(values, frame_number, subframe, rate)


def _body(values: np.ndarray, frame_number: int, subframe: float, rate: tuple[int, int]) -> bytes:
    if values.shape != (channels.COUNT,):
        raise ValueError(f"expected {channels.COUNT} values, got shape {values.shape}")
    return (struct.pack(">ifiiB", frame_number, subframe, rate[0], rate[1], channels.COUNT)
            + values.astype(_BE_F32).tobytes())


@dataclass
class LiveLinkPacket:
    device_id: str
    subject: str
    frame_number: int
    subframe: float
    rate: tuple[int, int]
    values: np.ndarray  # float32[61], canonical order


class PacketError(ValueError):
    pass


def decode_packet(data: bytes) -> LiveLinkPacket:
    """Parse a datagram; raises :class:`PacketError` where Unreal would silently drop it."""
    try:
        if data[0] != VERSION:
            raise PacketError(f"version {data[0]}, expected {VERSION}")
        (n,) = struct.unpack_from(">i", data, 1)
        dev = data[5:5 + n].decode("utf-8")
        (m,) = struct.unpack_from(">i", data, 5 + n)
        sub = data[9 + n:9 + n + m].decode("utf-8")
        frame, subframe, num, den, count = struct.unpack_from(">ifiiB", data, 9 + n + m)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise PacketError(f"truncated or malformed packet: {e}") from None
    if count != channels.COUNT:
        raise PacketError(f"value count {count}, expected {channels.COUNT}")
    start = 26 + n + m
    if len(data) != start + 4 * count:
        raise PacketError(f"packet is {len(data)} bytes, expected {start + 4 * count}")
    values = np.frombuffer(data, dtype=_BE_F32, count=count, offset=start).astype(np.float32)
    return LiveLinkPacket(dev, sub, frame, subframe, (num, den), values)


class LiveLinkEncoder:
    """Per-sink encoder: the header bytes are built once, each frame only packs its body."""

    def __init__(self, device_id: str, subject: str, fps: float) -> None:
        self.header = _header(device_id, subject)
        self.fps = fps
        self.rate = (int(round(fps)), 1)

    def encode(self, values: np.ndarray, t: float) -> bytes:
        # frame = floor(t * fps), subframe = frac(t * fps): Unreal's Timecode mode reads these
        x = t * self.fps
        frame = int(x + 1e-6)  # n * (1/60) * 60 can land a hair below n
        return self.header + _body(values, frame, max(x - frame, 0.0), self.rate)


class LiveLinkSink(UdpSink):
    scheme = "livelink"
    default_port = DEFAULT_PORT

    def __init__(self, host: str, port: int, *, device_id: str, subject: str, fps: float) -> None:
        super().__init__(host, port)
        self.encoder = LiveLinkEncoder(device_id, subject, fps)

    def encode(self, frame: np.ndarray, number: int, t: float) -> list[bytes]:
        return [self.encoder.encode(frame, t)]
