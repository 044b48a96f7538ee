"""VRChat OSC: ``/avatar/parameters/<Name>`` floats to VRChat's OSC input (UDP 9000).

Which parameters an avatar has is up to its creator, so the names are a map from our channels to
VRChat parameter names (``vrchat.names``; default: the 52 ARKit shapes under their PascalCase names,
with an optional ``vrchat.prefix`` such as ``"FT/"``). VRChat ignores parameters an avatar lacks.

VRChat shares float parameters with other players at 1/127 steps, so resending a value that moved
less than half a step is wasted traffic: a parameter goes out when it moved at least ``threshold``
since it was last sent, and every parameter is refreshed once per ``refresh`` seconds anyway (a
receiver that restarted, or an avatar that was swapped, gets every value back within a second).
Messages go out one per datagram, the form every VRChat version accepts; ``bundle = true`` packs
them into bundles instead.
"""

from __future__ import annotations

import struct

import numpy as np

from runtime import channels
from runtime.sinks.base import SinkError, UdpSink
from runtime.sinks.osc import BUNDLE_HEAD, MTU_BUNDLE, Slot, message

DEFAULT_PORT = 9000
STEP = 1.0 / 127.0  # VRChat's network resolution for floats
_BE_F32 = np.dtype(">f4")


def default_names(prefix: str = "") -> dict[str, str]:
    return {name: prefix + name for name in channels.NAMES[:channels.SHAPES]}


def resolve_names(names: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    """Channel-name map (any ARKit spelling) -> (channel indices, parameter names)."""
    idx: list[int] = []
    params: list[str] = []
    for ours, theirs in names.items():
        try:
            i = channels.lookup(ours)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        if not theirs or any(c in theirs for c in " #*,?[]{}"):
            raise ValueError(f"bad VRChat parameter name {theirs!r} for {ours}")
        idx.append(i)
        params.append(theirs)
    if not idx:
        raise ValueError("no parameters to send: the name map is empty")
    return np.array(idx, dtype=np.intp), params


class VrchatEncoder:
    """Frame -> the datagrams for the parameters that changed (or are due for a refresh)."""

    def __init__(self, names: dict[str, str] | None = None, *, threshold: float = STEP / 2,
                 refresh: float = 1.0, bundle: bool = False, limit: int = MTU_BUNDLE) -> None:
        self.index, self.params = resolve_names(names if names is not None else default_names())
        self.messages = [message(f"/avatar/parameters/{p}", Slot(k)) for k, p in enumerate(self.params)]
        # each message ends with its one float: keep the bytes before it, append 4 per frame
        self.prefixes = [m.data[:-4] for m in self.messages]
        self.sized = [struct.pack(">i", len(m.data)) + m.data[:-4] for m in self.messages]  # in a bundle
        self.bundle = bundle
        self.limit = limit
        self.threshold = threshold
        self.refresh = refresh
        self.last = np.full(len(self.params), np.nan, dtype=np.float32)  # last value sent
        self.last_refresh = -np.inf

    def encode(self, frame: np.ndarray, t: float) -> list[bytes]:
        if frame.shape != (channels.COUNT,):
            raise ValueError(f"expected {channels.COUNT} values, got shape {frame.shape}")
        values = frame[self.index]
        if t - self.last_refresh >= self.refresh or t < self.last_refresh:
            self.last_refresh = t
            due = np.arange(len(values))
        else:
            # NaN in ``last`` (never sent) compares False, so catch it explicitly
            moved = np.abs(values - self.last)
            due = np.flatnonzero((moved >= self.threshold) | np.isnan(moved))
        if due.size == 0:
            return []
        self.last[due] = values[due]
        be = values.astype(_BE_F32).tobytes()
        if not self.bundle:
            pre = self.prefixes
            return [pre[k] + be[4 * k:4 * k + 4] for k in due.tolist()]
        # bundles of at most ``limit`` bytes, messages in order, each prefixed by its size
        out: list[bytes] = []
        parts: list[bytes] = [BUNDLE_HEAD]
        size = len(BUNDLE_HEAD)
        for k in due.tolist():
            el = self.sized[k]
            if size + len(el) + 4 > self.limit:
                out.append(b"".join(parts))
                parts, size = [BUNDLE_HEAD], len(BUNDLE_HEAD)
            parts += (el, be[4 * k:4 * k + 4])
            size += len(el) + 4
        out.append(b"".join(parts))
        return out


class VrchatSink(UdpSink):
    scheme = "vrchat"
    default_port = DEFAULT_PORT

    def __init__(self, host: str, port: int, *, names: dict[str, str] | None = None, prefix: str = "",
                 bundle: bool = False) -> None:
        try:
            self.encoder = VrchatEncoder(names or default_names(prefix), bundle=bundle)
        except ValueError as e:
            raise SinkError(f"vrchat://{host}:{port}: {e}") from None
        super().__init__(host, port)

    def encode(self, frame: np.ndarray, number: int, t: float) -> list[bytes]:
        return self.encoder.encode(frame, t)
