"""The 61 ARKit channels: canonical order, spellings, left/right pairs, ranges.

The canonical order is Unreal's ``EARFaceBlendShape`` enum, which is also the Live Link Face UDP
order (see PROTOCOLS.md). Every frame in the runtime is a float32 array in this order; names appear
only at the edges (parsing, sinks, CSV), and every module translates through this one table.
"""

from __future__ import annotations

import re

import numpy as np

NAMES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight",
    "EyeLookOutRight", "EyeLookUpRight", "EyeSquintRight", "EyeWideRight", "JawForward",
    "JawLeft", "JawRight", "JawOpen", "MouthClose", "MouthFunnel", "MouthPucker", "MouthLeft",
    "MouthRight", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft",
    "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw",
    "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip

COUNT = len(NAMES)  # 61
SHAPES = 52  # indices [0, 52) are blendshapes in [0, 1]; [52, 61) rotations in [-1, 1] (deg / 180)
assert COUNT == 61

INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

LOW = np.zeros(COUNT, dtype=np.float32)
LOW[SHAPES:] = -1.0
HIGH = np.ones(COUNT, dtype=np.float32)

HEAD = slice(52, 55)  # yaw, pitch, roll
LEFT_EYE = slice(55, 58)
RIGHT_EYE = slice(58, 61)


def camel(name: str) -> str:
    """Apple Swift spelling: ``EyeBlinkLeft`` -> ``eyeBlinkLeft``."""
    return name[0].lower() + name[1:]


def apple_raw(name: str) -> str:
    """Apple's raw ARKit spelling (iFacialMocap): ``EyeBlinkLeft`` -> ``eyeBlink_L``.

    Rotations have no raw ARKit name; they keep their camelCase spelling.
    """
    if INDEX[name] >= SHAPES:
        return camel(name)
    if name.endswith("Left"):
        return camel(name[:-4]) + "_L"
    if name.endswith("Right"):
        return camel(name[:-5]) + "_R"
    return camel(name)


def _key(spelling: str) -> str:
    """Fold every known spelling to one lookup key (case, '_L'/'_R', separators)."""
    s = spelling.strip()
    s = re.sub(r"_L$", "Left", s)
    s = re.sub(r"_R$", "Right", s)
    return re.sub(r"[^a-z0-9]", "", s.lower())


_BY_KEY: dict[str, int] = {_key(n): i for i, n in enumerate(NAMES)}


def lookup(spelling: str) -> int:
    """Index of a channel given any spelling (PascalCase, camelCase, raw ``_L``/``_R``).

    Raises ``KeyError`` with a clear message for an unknown name.
    """
    i = _BY_KEY.get(_key(spelling))
    if i is None:
        raise KeyError(f"unknown ARKit channel {spelling!r}")
    return i


def _pair_of(name: str) -> str | None:
    for a, b in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(a):
            return name[: -len(a)] + b
        if name.startswith(a):  # LeftEyeYaw <-> RightEyeYaw
            return b + name[len(a):]
    return None


# Left/right mirror permutation: frame[MIRROR] swaps every left channel with its right partner.
MIRROR = np.array([INDEX.get(_pair_of(n) or n, i) for i, n in enumerate(NAMES)], dtype=np.intp)
# A left/right mirror also turns yaw and roll the other way: frame[MIRROR] * MIRROR_SIGN.
MIRROR_SIGN = np.array([-1.0 if n.endswith(("Yaw", "Roll")) else 1.0 for n in NAMES], dtype=np.float32)
PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, int(MIRROR[i])) for i in range(COUNT) if MIRROR[i] > i
)

# Symmetric names: "MouthSmile" means both MouthSmileLeft and MouthSmileRight.
SYMMETRIC: dict[str, tuple[int, int]] = {}
for _l, _r in PAIRS:
    _n = NAMES[_l]
    _base = _n[:-4] if _n.endswith("Left") else _n.replace("Left", "", 1)
    SYMMETRIC[_base] = (_l, _r)


def indices(spelling: str) -> tuple[int, ...]:
    """Channels a name addresses: one channel, or both sides for a symmetric name."""
    for base, pair in SYMMETRIC.items():
        if _key(base) == _key(spelling):
            return pair
    return (lookup(spelling),)


def clamp(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Clamp a frame (or a stack of frames, last axis = channels) into each channel's range."""
    return np.clip(frame, LOW, HIGH, out=out)


def zeros(n: int | None = None) -> np.ndarray:
    return np.zeros(COUNT if n is None else (n, COUNT), dtype=np.float32)


def from_dict(values: dict[str, float], *, strict: bool = True) -> np.ndarray:
    """Named values -> canonical frame. Unknown names raise unless ``strict`` is False."""
    frame = zeros()
    for name, v in values.items():
        try:
            idx = indices(name)
        except KeyError:
            if strict:
                raise
            continue
        frame[list(idx)] = v
    return frame


def to_dict(frame: np.ndarray, *, skip_zero: bool = True, digits: int = 4) -> dict[str, float]:
    """Canonical frame -> named values (PascalCase), for the edges of the system."""
    out: dict[str, float] = {}
    for name, v in zip(NAMES, frame.tolist()):
        v = round(v, digits)
        if v != 0.0 or not skip_zero:
            out[name] = v
    return out
