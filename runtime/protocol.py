"""The serve control protocol, sans I/O: messages in -> validated commands or errors; events -> text.

No sockets and no clock here: :class:`Session` (one per connection) takes the raw message and the
current time and returns a command or raises :class:`ProtocolError`, whose :meth:`event` is the
error message to send back. The connection stays open after any error.

Client -> server (JSON objects; only the fields shown are accepted)::

    {"type": "say", "text": "...", "id": "...", "context": "...", "emotion": "...", "avatar": "...",
     "words": [{"word": "hi", "start": 0.0, "end": 0.3}, ...], "duration": s, "start": s, "talk": true}
        (words/duration/start/talk: the mouth speaks the line; words are a TTS engine's timings)
        "heard": "..." (what was just said to the character); "more": true (text follows in chunks)
    {"type": "say", "id": "...", "text": "...", "more": true | false}
        (a further chunk of a line sent with "more": true; "more": false ends it)
    {"type": "interrupt", "avatar": "..."}
    {"type": "subscribe", "frames": "json" | "binary", "avatar": "..." | "*"}
    {"type": "unsubscribe", "avatar": "..." | "*"}

Server -> client::

    {"type": "hello", "channels": [61 names], "fps": 60, "avatars": [...], "limits": {...}}
    {"type": "ack", "id": ..., "avatar": ...}                 at once for every accepted say
    {"type": "keyframe", "id": ..., "avatar": ..., "t": s, "values": {...}}
    {"type": "frame", "avatar": ..., "seq": n, "t": s, "values": [61 floats]}     (subscribers)
    {"type": "done", "id": ..., "avatar": ...[, "interrupted": true][, "abandoned": true][, "error": "..."]}
    {"type": "interrupted", "avatar": ..., "dropped": [ids]}
    {"type": "subscribed", "avatar": ..., "frames": ...}
    {"type": "error", "code": "...", "message": "..."[, "id": ...]}

Binary frames are the WebSocket sink's 256-byte layout (little-endian uint32 seq, float64 t,
61 x float32, so ``new Float32Array(buf, 12, 61)`` reads the values) followed by the avatar's name
in UTF-8. Error codes: ``invalid_json``, ``invalid_message`` (not an object), ``unknown_type``,
``missing_field``, ``unknown_field``, ``invalid_field``, ``message_too_big``, ``unknown_avatar``,
``rate_limited``, ``too_many_lines`` (the last raised by the server, the rest here).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

from runtime import channels

ERROR_CODES = ("invalid_json", "invalid_message", "unknown_type", "missing_field", "unknown_field",
               "invalid_field", "message_too_big", "unknown_avatar", "rate_limited", "too_many_lines")
FRAME_FORMATS = ("json", "binary")
ALL = "*"
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")  # ids and avatar names: safe in logs and file names
_HEAD = struct.Struct("<Id")
_LE_F32 = np.dtype("<f4")
BINARY_FRAME = _HEAD.size + 4 * channels.COUNT  # 256 bytes before the avatar name


@dataclass(frozen=True)
class Limits:
    max_message: int = 16_384  # bytes of one client message
    max_text: int = 500  # characters of a line
    max_context: int = 1_000  # characters of context
    max_emotion: int = 40
    say_rate: float = 2.0  # lines per second per client, sustained
    say_burst: int = 5  # lines a client may send at once
    max_heard: int = 1_000  # characters of what was just said to the character
    max_turn: int = 2_000  # characters of a line sent in chunks, all chunks together
    chunk_timeout: float = 5.0  # seconds a chunked line waits for its next chunk before it is abandoned


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.id = code, message, id

    def event(self) -> str:
        return error(self.code, self.message, self.id)


@dataclass(frozen=True)
class Say:
    text: str
    avatar: str
    id: str = ""
    context: str = ""
    emotion: str = ""
    heard: str = ""  # what was just said to the character
    more: bool = False  # the first chunk of a line: further chunks (Chunk) follow
    words: tuple | None = None  # validated TTS word timings: ((word, start, end), ...)
    duration: float | None = None  # seconds of speech audio, without word timings
    start: float = 0.0  # where the audio starts in the line's time
    talk: bool = False  # speak the text at a natural rate

    @property
    def spoken(self) -> bool:
        return self.talk or self.words is not None or self.duration is not None


@dataclass(frozen=True)
class Chunk:
    """A further piece of a line whose first piece was a Say with ``more``."""

    avatar: str
    id: str
    text: str
    more: bool  # False: the line's last chunk


@dataclass(frozen=True)
class Interrupt:
    avatar: str


@dataclass(frozen=True)
class Subscribe:
    avatar: str  # a name or "*"
    frames: str  # "json" | "binary"


@dataclass(frozen=True)
class Unsubscribe:
    avatar: str


Command = Say | Chunk | Interrupt | Subscribe | Unsubscribe

_FIELDS = {
    "say": ({"text"}, {"type", "text", "id", "context", "emotion", "avatar", "words", "duration", "start",
                       "talk"}),
    "interrupt": (set(), {"type", "avatar", "id"}),
    "subscribe": (set(), {"type", "frames", "avatar"}),
    "unsubscribe": (set(), {"type", "avatar"}),
}
_FIELDS["say"][1].update({"heard", "more"})  # the dialogue fields (what was heard, text in chunks)
_CHUNK_FIELDS = {"type", "id", "avatar", "text", "more"}  # all a further chunk may carry


def _text(msg: dict, key: str, limit: int, *, required: bool = False) -> str:
    value = msg.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError("invalid_field", f"{key}: expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ProtocolError("invalid_field", f"{key}: {len(value)} characters, at most {limit}")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise ProtocolError("invalid_field", f"{key}: control characters are not allowed")
    if required and not value.strip():
        raise ProtocolError("invalid_field", f"{key}: empty")
    return value


validate_text = _text  # a string field checked as serve checks it (keyframes --batch uses it too)


def _flag(msg: dict, key: str) -> bool:
    value = msg.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError("invalid_field", f"{key}: expected true or false, got {value!r}")
    return value


def _seconds(msg: dict, key: str, default: float | None) -> float | None:
    value = msg.get(key, default)
    if value is None or value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 3600:
        raise ProtocolError("invalid_field", f"{key}: expected seconds between 0 and 3600, got {value!r}")
    return float(value)


def _speech_fields(msg: dict) -> dict:
    """The say message's speech fields, validated (word timings by the speech layer's own rules)."""
    out: dict = {"duration": _seconds(msg, "duration", None), "start": _seconds(msg, "start", 0.0)}
    talk = msg.get("talk", False)
    if not isinstance(talk, bool):
        raise ProtocolError("invalid_field", f"talk: expected true or false, got {talk!r}")
    out["talk"] = talk
    if msg.get("words") is not None:
        from runtime.animate.speech import validate_words

        if not isinstance(msg["words"], list) or len(msg["words"]) > 2000:
            raise ProtocolError("invalid_field", "words: expected a list of at most 2000 {word, start, end}")
        try:
            out["words"] = tuple(validate_words(msg["words"]))
        except ValueError as e:
            raise ProtocolError("invalid_field", f"words: {e}") from None
    return out


class Session:
    """One client's side of the protocol: validation, defaults and its say rate limit."""

    def __init__(self, avatars: list[str], limits: Limits | None = None) -> None:
        if not avatars:
            raise ValueError("no avatars")
        self.avatars = list(avatars)
        self.limits = limits or Limits()
        self._tokens = float(self.limits.say_burst)
        self._last: float | None = None
        self._open: dict[tuple[str, str], list] = {}  # chunked lines: (avatar, id) -> [characters, last chunk]

    def _avatar(self, msg: dict, *, allow_all: bool = False) -> str:
        name = msg.get("avatar", self.avatars[0])
        if not isinstance(name, str):
            raise ProtocolError("invalid_field", f"avatar: expected a string, got {type(name).__name__}")
        if name == ALL and allow_all:
            return name
        if name not in self.avatars:
            shown = name if _ID.match(name) else "(invalid name)"
            raise ProtocolError("unknown_avatar", f"no avatar {shown!r}; avatars: {', '.join(self.avatars)}")
        return name

    def _take_token(self, now: float) -> bool:
        lim = self.limits
        if self._last is not None:
            self._tokens = min(float(lim.say_burst), self._tokens + (now - self._last) * lim.say_rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _is_open(self, avatar: str, msg_id: str | None, now: float) -> bool:
        """A chunked line of this id is open (its last chunk came less than chunk_timeout ago)."""
        for key in [k for k, (_, last) in self._open.items() if now - last > self.limits.chunk_timeout]:
            del self._open[key]  # abandoned: the server has ended it too
        return msg_id is not None and (avatar, msg_id) in self._open

    def _open_avatar(self, msg: dict, msg_id: str | None, now: float) -> str | None:
        """A further chunk that names no avatar belongs to the open line of its id, whichever avatar."""
        if "avatar" in msg or msg_id is None:
            return None
        self._is_open("", None, now)  # drop abandoned lines first
        return next((a for a, i in self._open if i == msg_id), None)

    def _chunk(self, msg: dict, avatar: str, msg_id: str, text: str, more: bool, now: float) -> Chunk:
        extra = sorted(msg.keys() - _CHUNK_FIELDS)
        if extra:
            shown = extra[0] if _ID.match(extra[0]) else "(invalid)"
            raise ProtocolError("invalid_field", f"{shown}: only a line's first chunk carries it; further "
                                                 "chunks carry text and more")
        entry = self._open[(avatar, msg_id)]
        if entry[0] + len(text) > self.limits.max_turn:
            raise ProtocolError("invalid_field", f"text: the line would be {entry[0] + len(text)} characters "
                                                 f"over its chunks, at most {self.limits.max_turn}; chunk refused")
        entry[0] += len(text)
        entry[1] = now
        if not more:
            del self._open[(avatar, msg_id)]
        return Chunk(avatar=avatar, id=msg_id, text=text, more=more)

    def receive(self, data: str | bytes, now: float) -> Command:
        """One message -> a command; raises ProtocolError (send ``.event()`` back) for anything else."""
        lim = self.limits
        size = len(data) if isinstance(data, bytes | bytearray) else len(data.encode("utf-8", "replace"))
        if size > lim.max_message:
            raise ProtocolError("message_too_big", f"message is {size} bytes, at most {lim.max_message}")
        try:
            msg = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError("invalid_json", f"not valid JSON: {e}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("invalid_message", "expected a JSON object with a \"type\"")
        kind = msg.get("type")
        if kind is None:
            raise ProtocolError("missing_field", "type: missing")
        if not isinstance(kind, str) or kind not in _FIELDS:
            shown = kind if isinstance(kind, str) and _ID.match(kind) else "(invalid)"
            raise ProtocolError("unknown_type", f"unknown type {shown!r}; known: {', '.join(_FIELDS)}")
        required, allowed = _FIELDS[kind]
        msg_id = msg.get("id")
        if msg_id is not None and not (isinstance(msg_id, str) and _ID.match(msg_id)):
            raise ProtocolError("invalid_field", "id: expected 1-64 characters of A-Z a-z 0-9 _ . : -")
        for key in sorted(required - msg.keys()):
            raise ProtocolError("missing_field", f"{key}: missing", msg_id)
        for key in sorted(msg.keys() - allowed):
            shown = key if _ID.match(key) else "(invalid)"
            raise ProtocolError("unknown_field", f"{kind} has no field {shown!r}", msg_id)
        try:
            if kind == "say":
                more = _flag(msg, "more")
                text = _text(msg, "text", lim.max_text)
                avatar = self._open_avatar(msg, msg_id, now) or self._avatar(msg)
                if self._is_open(avatar, msg_id, now):
                    return self._chunk(msg, avatar, msg_id, text, more, now)
                text = _text(msg, "text", lim.max_text, required=not more)
                context = _text(msg, "context", lim.max_context)
                emotion = _text(msg, "emotion", lim.max_emotion)
                heard = _text(msg, "heard", lim.max_heard)
                if more and not msg_id:
                    raise ProtocolError("missing_field", "id: a line sent in chunks needs an id for its chunks")
                say = Say(text=text if more else text.strip(), avatar=avatar, id=msg_id or "",
                          context=context.strip(), emotion=emotion.strip(), heard=heard.strip(), more=more,
                          **_speech_fields(msg))
                if more and say.spoken:
                    raise ProtocolError("invalid_field", "more: a line sent in chunks cannot be spoken "
                                                         "(its words are not known yet)")
                if not self._take_token(now):
                    raise ProtocolError("rate_limited",
                                        f"at most {lim.say_rate:g} lines per second (burst {lim.say_burst})")
                if more:
                    self._open[(avatar, msg_id)] = [len(text), now]
                return say
            if kind == "interrupt":
                return Interrupt(self._avatar(msg))
            if kind == "subscribe":
                frames = msg.get("frames", "json")
                if frames not in FRAME_FORMATS:
                    raise ProtocolError("invalid_field", f"frames: expected one of {FRAME_FORMATS}")
                return Subscribe(self._avatar(msg, allow_all=True), frames)
            return Unsubscribe(self._avatar(msg, allow_all=True))
        except ProtocolError as e:
            e.id = e.id or msg_id
            raise


# -- server -> client ----------------------------------------------------------------------------
def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error(code: str, message: str, id: str | None = None) -> str:
    out = {"type": "error", "code": code, "message": message}
    if id is not None:
        out["id"] = id
    return _dumps(out)


def event(ev: dict) -> str:
    """An avatar event (keyframe, done, ...) as sent; non-finite numbers become null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return _dumps(clean(ev))


def hello(avatars: list[str], fps: float, limits: Limits) -> str:
    return _dumps({"type": "hello", "channels": list(channels.NAMES), "fps": fps, "avatars": avatars,
                   "binary_layout": "<u32 seq, <f64 t, 61 x <f32, then the avatar name (UTF-8)",
                   "limits": {"max_message": limits.max_message, "max_text": limits.max_text,
                              "say_rate": limits.say_rate, "say_burst": limits.say_burst,
                              "max_turn": limits.max_turn, "chunk_timeout": limits.chunk_timeout}})


def frame_json(avatar: str, frame: np.ndarray, seq: int, t: float) -> str:
    return _dumps({"type": "frame", "avatar": avatar, "seq": seq, "t": round(t, 6),
                   "values": np.round(frame.astype(np.float64), 5).tolist()})


def frame_binary(avatar: str, frame: np.ndarray, seq: int, t: float) -> bytes:
    return _HEAD.pack(seq & 0xFFFFFFFF, t) + frame.astype(_LE_F32).tobytes() + avatar.encode("utf-8")


def decode_frame_binary(data: bytes) -> tuple[str, int, float, np.ndarray]:
    """Inverse of :func:`frame_binary`: (avatar, seq, t, float32[61])."""
    if len(data) < BINARY_FRAME:
        raise ValueError(f"binary frame is {len(data)} bytes, at least {BINARY_FRAME} expected")
    seq, t = _HEAD.unpack_from(data)
    values = np.frombuffer(data, dtype=_LE_F32, count=channels.COUNT, offset=_HEAD.size).astype(np.float32)
    return data[BINARY_FRAME:].decode("utf-8"), seq, t, values
