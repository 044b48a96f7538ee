"""OSC 1.0 encoding, fast per-frame packet templates, and the generic ``osc://HOST:PORT`` sink.

The VMC and VRChat sinks build on the same pieces. Per frame only float values change, and a float
has a fixed size in OSC, so every packet is laid out once as a byte template with float slots; a
frame then costs one vectorised byte scatter per packet (no per-channel Python loop, no
re-encoding of addresses or type tags).

Encoding (OSC 1.0): strings are ASCII + NUL padded to a multiple of 4 bytes, int32 and float32 are
big-endian, a bundle is ``#bundle\\0`` + an 8-byte time tag + elements each prefixed by its int32
size. Receivers that must not see IP fragmentation want bundles of at most ~1500 bytes, so long
frames are split into several bundles with their order kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from runtime import channels
from runtime.sinks.base import SinkError, UdpSink

IMMEDIATELY = struct.pack(">Q", 1)  # the OSC time tag meaning "now"
BUNDLE_HEAD = b"#bundle\x00" + IMMEDIATELY  # 16 bytes
MTU_BUNDLE = 1500  # largest bundle we send (VSeeFace's author asks for <= 1500 bytes)
_BE_F32 = np.dtype(">f4")


def osc_string(s: str) -> bytes:
    data = s.encode("utf-8") + b"\x00"
    return data + b"\x00" * (-len(data) % 4)


class Slot(int):
    """Placeholder argument: a float32 filled per frame from slot ``int(self)`` of a value vector."""


@dataclass
class Element:
    """One encoded OSC message, with the byte offsets of its float slots."""

    data: bytes
    slots: list[tuple[int, int]] = field(default_factory=list)  # (byte offset, slot index)


def message(address: str, *args: object) -> Element:
    """Encode a message. ``Slot`` args become per-frame floats; int -> i, float -> f, str -> s, bool -> T/F."""
    if not address.startswith("/"):
        raise ValueError(f"OSC address must start with '/': {address!r}")
    tags = ","
    body = bytearray()
    slots: list[tuple[int, int]] = []
    for a in args:
        if isinstance(a, Slot):
            tags += "f"
            slots.append((len(body), int(a)))
            body += b"\x00\x00\x00\x00"
        elif isinstance(a, bool):
            tags += "T" if a else "F"
        elif isinstance(a, int):
            tags += "i"
            body += struct.pack(">i", a)
        elif isinstance(a, float):
            tags += "f"
            body += struct.pack(">f", a)
        elif isinstance(a, str):
            tags += "s"
            body += osc_string(a)
        else:
            raise TypeError(f"unsupported OSC argument {a!r}")
    head = osc_string(address) + osc_string(tags)
    return Element(head + bytes(body), [(len(head) + off, slot) for off, slot in slots])


class Packet:
    """A datagram template (a message or a bundle) whose float slots are filled per frame."""

    def __init__(self, data: bytes, slots: list[tuple[int, int]]) -> None:
        self.template = np.frombuffer(data, dtype=np.uint8).copy()
        self.size = len(data)
        offsets = np.array([o for o, _ in slots], dtype=np.intp)
        # every float slot covers 4 consecutive bytes: scatter indices (n, 4) flattened
        self.byte_index = (offsets[:, None] + np.arange(4)).ravel()
        self.slot_index = np.array([s for _, s in slots], dtype=np.intp)
        self._buf = self.template.copy()

    def render(self, values: np.ndarray) -> bytes:
        """Bytes of this packet with slot i = ``values[i]`` (float32 big-endian)."""
        if self.slot_index.size:
            self._buf[self.byte_index] = values[self.slot_index].astype(_BE_F32).view(np.uint8)
        return self._buf.tobytes()


def single(element: Element) -> Packet:
    return Packet(element.data, element.slots)


def bundles(elements: list[Element], limit: int = MTU_BUNDLE) -> list[Packet]:
    """Pack messages, in order, into as few bundles of at most ``limit`` bytes as fit."""
    out: list[Packet] = []
    data = bytearray(BUNDLE_HEAD)
    slots: list[tuple[int, int]] = []
    for el in elements:
        need = 4 + len(el.data)
        if len(BUNDLE_HEAD) + need > limit:
            raise ValueError(f"one OSC message of {len(el.data)} bytes does not fit a {limit}-byte bundle")
        if len(data) + need > limit:
            out.append(Packet(bytes(data), slots))
            data, slots = bytearray(BUNDLE_HEAD), []
        base = len(data) + 4
        data += struct.pack(">i", len(el.data)) + el.data
        slots += [(base + off, s) for off, s in el.slots]
    if len(data) > len(BUNDLE_HEAD):
        out.append(Packet(bytes(data), slots))
    return out


# --- generic OSC sink ------------------------------------------------------------------------

DEFAULT_ADDRESS = "/keyframeface/frame"


def channel_address(template: str, index: int) -> str:
    """Fill an address template: ``{name}`` (EyeBlinkLeft), ``{camel}`` (eyeBlinkLeft), ``{index}``."""
    name = channels.NAMES[index]
    try:
        return template.format(name=name, camel=channels.camel(name), index=index)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad OSC address template {template!r}: {e}; use {{name}}, {{camel}} or {{index}}") from None


class OscEncoder:
    """61 floats per frame: one message at ``address``, or one message per channel from a template.

    Per-channel messages go out in bundles (at most ``limit`` bytes each) unless ``bundle`` is off,
    in which case each message is its own datagram (for receivers without bundle support).
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, template: str = "", bundle: bool = True,
                 limit: int = MTU_BUNDLE) -> None:
        if template:
            msgs = [message(channel_address(template, i), Slot(i)) for i in range(channels.COUNT)]
            self.packets = bundles(msgs, limit) if bundle else [single(m) for m in msgs]
        else:
            self.packets = [single(message(address, *[Slot(i) for i in range(channels.COUNT)]))]

    def encode(self, frame: np.ndarray) -> list[bytes]:
        if frame.shape != (channels.COUNT,):
            raise ValueError(f"expected {channels.COUNT} values, got shape {frame.shape}")
        return [p.render(frame) for p in self.packets]


class OscSink(UdpSink):
    scheme = "osc"

    def __init__(self, host: str, port: int, *, address: str = DEFAULT_ADDRESS, template: str = "",
                 bundle: bool = True) -> None:
        try:
            self.encoder = OscEncoder(address, template, bundle)
        except ValueError as e:
            raise SinkError(f"osc://{host}:{port}: {e}") from None
        super().__init__(host, port)

    def encode(self, frame: np.ndarray, number: int, t: float) -> list[bytes]:
        return self.encoder.encode(frame)
