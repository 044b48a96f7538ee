"""VMC protocol (OSC over UDP): VSeeFace, VNyan, Warudo, VMagicMirror, EVMC4U and friends.

Per frame, in order, packed into bundles of at most 1500 bytes (two at 60 fps):
``/VMC/Ext/OK 1``, ``/VMC/Ext/T t``, ``/VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw``, the 52
``/VMC/Ext/Blend/Val name value`` ("perfect sync" PascalCase ARKit names) and
``/VMC/Ext/Blend/Apply`` last, so a receiver applies a complete set.

Head rotation convention (documented because receivers cannot tell us if we get it wrong):
our channels follow ARKit's right-handed face frame, angles in degrees / 180: HeadYaw > 0 turns
toward the subject's own left, HeadPitch > 0 looks down, HeadRoll > 0 tilts the top of the head
toward the subject's right shoulder. Unity is left-handed (X right, Y up, Z forward; a VRM avatar
faces +Z), so the same motion of the avatar is Unity's ``Quaternion.Euler(pitch, -yaw, -roll)`` in
degrees (rotation about Z, then X, then Y), which is what :func:`head_quaternion` returns as
(x, y, z, w). The Head bone position is the neck-to-head offset in metres: EVMC4U applies bone
positions by default, so send your avatar's offset (``vmc.head_position``) or the head may sit on
the neck.
"""

from __future__ import annotations

import math

import numpy as np

from runtime import channels
from runtime.sinks.base import UdpSink
from runtime.sinks.osc import MTU_BUNDLE, Element, Packet, Slot, bundles, message

DEFAULT_PORT = 39539  # "Marionette" receivers (VSeeFace, VNyan, Warudo); Performer helpers use 39540
DEFAULT_HEAD_POSITION = (0.0, 0.06, 0.0)

# slot layout of the per-frame value vector
_T = 0
_POS = slice(1, 4)
_QUAT = slice(4, 8)
_SHAPES = slice(8, 8 + channels.SHAPES)
_SLOTS = 8 + channels.SHAPES


def head_quaternion(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """Head channels (degrees / 180) -> Unity quaternion (x, y, z, w) = Quaternion.Euler(p, -y, -r)."""
    # half angles in radians: value * 180 degrees = value * pi radians
    hx, hy, hz = pitch * math.pi / 2, -yaw * math.pi / 2, -roll * math.pi / 2
    sx, cx = math.sin(hx), math.cos(hx)
    sy, cy = math.sin(hy), math.cos(hy)
    sz, cz = math.sin(hz), math.cos(hz)
    # q = qY * qX * qZ (Unity applies Z, then X, then Y)
    return (cy * sx * cz + sy * cx * sz,
            sy * cx * cz - cy * sx * sz,
            cy * cx * sz - sy * sx * cz,
            cy * cx * cz + sy * sx * sz)


def frame_messages(head: bool = True) -> list[Element]:
    """The messages of one frame, in send order, with slots into the value vector."""
    msgs = [message("/VMC/Ext/OK", 1), message("/VMC/Ext/T", Slot(_T))]
    if head:
        msgs.append(message("/VMC/Ext/Bone/Pos", "Head", *[Slot(i) for i in range(1, 8)]))
    msgs += [message("/VMC/Ext/Blend/Val", channels.NAMES[i], Slot(_SHAPES.start + i))
             for i in range(channels.SHAPES)]
    msgs.append(message("/VMC/Ext/Blend/Apply"))
    return msgs


class VmcEncoder:
    """Frame -> bundles. The bundle layout is fixed, so each frame only fills float slots."""

    def __init__(self, head: bool = True, head_position: tuple[float, float, float] = DEFAULT_HEAD_POSITION,
                 limit: int = MTU_BUNDLE) -> None:
        self.packets: list[Packet] = bundles(frame_messages(head), limit)
        self.values = np.zeros(_SLOTS, dtype=np.float32)
        self.values[_POS] = head_position
        self.t0: float | None = None

    def encode(self, frame: np.ndarray, t: float) -> list[bytes]:
        if frame.shape != (channels.COUNT,):
            raise ValueError(f"expected {channels.COUNT} values, got shape {frame.shape}")
        v = self.values
        # /VMC/Ext/T is a float32 (senders use Unity's Time.time, seconds since start): the caller's
        # time of day (~86,400 s) would leave it 8 ms steps, coarser than half a frame, so send the
        # seconds since this encoder's first frame (restarting if the time goes back, e.g. at midnight)
        if self.t0 is None or t < self.t0:
            self.t0 = t
        v[_T] = t - self.t0
        yaw, pitch, roll = frame[channels.HEAD].tolist()
        v[_QUAT] = head_quaternion(yaw, pitch, roll)
        v[_SHAPES] = frame[:channels.SHAPES]
        return [p.render(v) for p in self.packets]


class VmcSink(UdpSink):
    scheme = "vmc"
    default_port = DEFAULT_PORT

    def __init__(self, host: str, port: int, *, head: bool = True,
                 head_position: tuple[float, float, float] = DEFAULT_HEAD_POSITION) -> None:
        super().__init__(host, port)
        self.encoder = VmcEncoder(head, head_position)

    def encode(self, frame: np.ndarray, number: int, t: float) -> list[bytes]:
        return self.encoder.encode(frame, t)
