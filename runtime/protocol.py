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

Audio (docs/SERVE.md): a say's ``"audio"`` is a WAV file in base64 (inline), or announces a stream,
``{"format": "wav" | "pcm", "rate": Hz, "channels": n, "sample": "s16le" | "f32le" | ..., "stream": true}``
(rate/channels/sample for "pcm" only; the say needs an id). The stream's bytes follow as binary
messages, each ``b"KFA1" + u8 len(id) + id (ASCII) + bytes`` (any split, even mid-sample), until
``{"type": "audio_end", "id": "..."}``. ``{"type": "start", "id": "...", "position": s}``: playback
of that line's audio is at ``position`` seconds (default 0) now, so the audio's clock drives the
mouth. Bad audio is an error event (``invalid_audio``, ``audio_too_big``, ``audio_timeout``,
``too_many_streams``, ``unknown_stream``) and the line goes on without the audio's mouth.

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
``rate_limited``, ``too_many_lines`` (the last raised by the server, the rest here), and the audio
codes above.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import re
import struct
from dataclasses import dataclass, replace

import numpy as np

from runtime import channels

ERROR_CODES = ("invalid_json", "invalid_message", "unknown_type", "missing_field", "unknown_field",
               "invalid_field", "message_too_big", "unknown_avatar", "rate_limited", "too_many_lines",
               "invalid_audio", "audio_too_big", "audio_timeout", "too_many_streams", "unknown_stream")
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
    audio_max_message: int = 4 << 20  # bytes of a say carrying inline (base64) WAV
    audio_max_chunk: int = 256 << 10  # bytes of one binary audio chunk
    audio_max_bytes: int = 16 << 20  # bytes of audio of one line
    audio_max_seconds: float = 120.0  # seconds of audio of one line
    audio_streams: int = 4  # streams open at once per client
    audio_stream_timeout: float = 10.0  # seconds without a chunk before a stream is ended


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
    audio: AudioIn | None = None  # the line's voice (inline samples, or a stream announced)
    audio_error: ProtocolError | None = None  # audio given but unusable: send it; the line goes on

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


@dataclass(frozen=True, eq=False)
class AudioIn:
    """A say's audio: the whole of it (inline WAV, decoded), or a stream whose chunks follow."""

    rate: int | None  # Hz; None for a WAV stream until its header has arrived
    samples: np.ndarray | None = None  # float32 mono in [-1, 1]; None: streamed
    format: str = "wav"  # "wav" | "pcm"

    @property
    def stream(self) -> bool:
        return self.samples is None


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Samples for a streamed line; ``end``: the stream is over (audio_end, an error, a timeout)."""

    id: str
    avatar: str
    samples: np.ndarray  # float32 mono, possibly empty
    rate: int | None
    end: bool = False
    error: ProtocolError | None = None  # why the stream ended early; send it, keep the samples so far


@dataclass(frozen=True)
class Start:
    """Playback of line ``id``'s audio is at ``position`` seconds now."""

    avatar: str
    id: str
    position: float = 0.0


Command = Say | Chunk | Interrupt | Subscribe | Unsubscribe | AudioChunk | Start

_FIELDS = {
    "say": ({"text"}, {"type", "text", "id", "context", "emotion", "avatar", "words", "duration", "start",
                       "talk"}),
    "interrupt": (set(), {"type", "avatar", "id"}),
    "subscribe": (set(), {"type", "frames", "avatar"}),
    "unsubscribe": (set(), {"type", "avatar"}),
}
_FIELDS["say"][1].update({"heard", "more"})  # the dialogue fields (what was heard, text in chunks)
_CHUNK_FIELDS = {"type", "id", "avatar", "text", "more"}  # all a further chunk may carry
# audio (kept apart so the say's own fields stay one list)
_FIELDS["say"][1].add("audio")
_FIELDS["audio_end"] = ({"id"}, {"type", "id"})
_FIELDS["start"] = ({"id"}, {"type", "id", "avatar", "position"})
AUDIO_MAGIC = b"KFA1"  # a binary message that starts so is an audio chunk; no JSON text starts with K
_AUDIO_FORMATS = ("wav", "pcm")
_DEAD_STREAMS = 64  # ids of streams ended early whose late chunks are dropped without an error each


def audio_chunk(id: str, data: bytes) -> bytes:
    """A binary audio chunk for stream ``id`` (the client's side of the framing)."""
    if not _ID.match(id):
        raise ValueError("id: expected 1-64 characters of A-Z a-z 0-9 _ . : -")
    raw = id.encode("ascii")
    return AUDIO_MAGIC + bytes([len(raw)]) + raw + bytes(data)


@dataclass
class _Stream:
    avatar: str
    decoder: object  # runtime.audio.wav.PcmDecoder
    last: float  # time of the last chunk (for the timeout)
    bytes: int = 0
    samples: int = 0
    head: bytes = b""  # a WAV stream's first bytes, until its header is read
    open_length: bool = False  # the WAV header gave no real length: any end is a fine end


# A writer that cannot seek back (a TTS engine piping to stdout) puts a placeholder length in
# the header: espeak-ng --stdout writes 0x7ffff000, others 0 or 0xffffffff.
_PLACEHOLDER = 0x7FFF0000


def _open_length(size: int | None) -> bool:
    return size is None or size >= _PLACEHOLDER


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A whole WAV -> (samples, rate); a placeholder length means "up to the end of the bytes"."""
    from runtime.audio.wav import PcmDecoder, parse_header, read_wav

    try:
        _, _, size = parse_header(data)
    except ValueError:
        size = 0  # read_wav names the problem
    if size is not None and size >= _PLACEHOLDER:
        dec = PcmDecoder(wav=True)
        return dec.feed(data), dec.rate
    return read_wav(data)


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
        self._streams: dict[str, _Stream] = {}
        self._dead: collections.OrderedDict[str, None] = collections.OrderedDict()

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

    def receive(self, data: str | bytes, now: float) -> Command | None:
        """One message -> a command (None: nothing to do, e.g. a late chunk of a stream already
        ended with an error); raises ProtocolError (send ``.event()`` back) for anything else."""
        lim = self.limits
        if isinstance(data, bytes | bytearray | memoryview) and bytes(data[:4]) == AUDIO_MAGIC:
            return self._audio_chunk_in(bytes(data), now)
        size = len(data) if isinstance(data, bytes | bytearray) else len(data.encode("utf-8", "replace"))
        big = max(lim.max_message, lim.audio_max_message)
        if size > big:
            raise ProtocolError("message_too_big", f"message is {size} bytes, at most {lim.max_message} "
                                f"({big} for a say with inline audio)")
        try:
            msg = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            if size > lim.max_message:
                raise ProtocolError("message_too_big", f"message is {size} bytes, at most {lim.max_message}") \
                    from None
            raise ProtocolError("invalid_json", f"not valid JSON: {e}") from None
        if size > lim.max_message and not (isinstance(msg, dict) and msg.get("type") == "say"
                                           and isinstance(msg.get("audio"), str)):
            raise ProtocolError("message_too_big", f"message is {size} bytes, at most {lim.max_message} "
                                f"(a say with inline audio: {big})")
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
                if more and (say.spoken or msg.get("audio") is not None):
                    raise ProtocolError("invalid_field", "more: a line sent in chunks cannot be spoken "
                                                         "(its words are not known yet)")
                if not self._take_token(now):
                    raise ProtocolError("rate_limited",
                                        f"at most {lim.say_rate:g} lines per second (burst {lim.say_burst})")
                if more:
                    self._open[(avatar, msg_id)] = [len(text), now]
                return self._with_audio(say, msg, now)
            if kind == "interrupt":
                return Interrupt(self._avatar(msg))
            if kind == "subscribe":
                frames = msg.get("frames", "json")
                if frames not in FRAME_FORMATS:
                    raise ProtocolError("invalid_field", f"frames: expected one of {FRAME_FORMATS}")
                return Subscribe(self._avatar(msg, allow_all=True), frames)
            if kind == "audio_end":
                return self._audio_end(msg_id, now)
            if kind == "start":
                if msg_id in self._dead:  # its audio was refused: the line has no audio clock
                    return None
                return Start(self._avatar(msg), msg_id, _seconds(msg, "position", 0.0))
            return Unsubscribe(self._avatar(msg, allow_all=True))
        except ProtocolError as e:
            e.id = e.id or msg_id
            raise


    # -- audio ----------------------------------------------------------------------------------
    def _with_audio(self, say: Say, msg: dict, now: float) -> Say:
        """The say with its audio decoded or its stream opened; bad audio -> ``audio_error`` set
        and no audio: the line still goes on."""
        if "audio" not in msg:
            return say
        try:
            return replace(say, audio=self._audio(msg["audio"], say, now))
        except ProtocolError as e:
            e.id = e.id or say.id or None
            if say.id:
                self._kill(say.id)
            return replace(say, audio_error=e)

    def _audio(self, value: object, say: Say, now: float) -> AudioIn:
        from runtime.audio.wav import AudioError, PcmDecoder

        lim = self.limits
        if isinstance(value, str):
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ProtocolError("invalid_audio", f"audio: not valid base64 ({e})") from None
            if len(data) > lim.audio_max_bytes:
                raise ProtocolError("audio_too_big", f"audio: {len(data)} bytes, at most {lim.audio_max_bytes}")
            try:
                samples, rate = _read_wav(data)
            except AudioError as e:
                raise ProtocolError("invalid_audio", f"audio: {e}") from None
            seconds = len(samples) / rate
            if seconds > lim.audio_max_seconds:
                raise ProtocolError("audio_too_big", f"audio: {seconds:.1f} s, at most {lim.audio_max_seconds:g} s")
            return AudioIn(rate=rate, samples=samples, format="wav")
        if not isinstance(value, dict):
            raise ProtocolError("invalid_audio", "audio: expected a base64 WAV string or a stream announcement "
                                "{\"format\": \"wav\"|\"pcm\", ...}")
        fmt = value.get("format", "wav")
        known = {"format", "stream"} | ({"rate", "channels", "sample"} if fmt == "pcm" else set())
        extra = sorted(k for k in value if k not in known)
        if fmt not in _AUDIO_FORMATS:
            raise ProtocolError("invalid_audio", f"audio.format: expected one of {_AUDIO_FORMATS}, got {fmt!r}")
        if extra:
            shown = extra[0] if isinstance(extra[0], str) and _ID.match(extra[0]) else "(invalid)"
            raise ProtocolError("invalid_audio", f"audio: no field {shown!r} for format {fmt!r} "
                                "(a WAV stream's header gives rate, channels and sample)")
        if value.get("stream", True) is not True:
            raise ProtocolError("invalid_audio", "audio.stream: an announcement streams; send whole WAV "
                                "files inline as a base64 string")
        if not say.id:
            raise ProtocolError("invalid_audio", "audio: a say that streams audio needs an id (its chunks carry it)")
        if say.id in self._streams:
            raise ProtocolError("invalid_audio", f"audio: stream {say.id!r} is already open")
        if len(self._streams) >= lim.audio_streams:
            raise ProtocolError("too_many_streams", f"audio: {lim.audio_streams} streams are open; "
                                "end one (audio_end) first")
        rate = None
        if fmt == "pcm":
            rate, ch, sample = value.get("rate"), value.get("channels", 1), value.get("sample", "s16le")
            if isinstance(rate, bool) or not isinstance(rate, int):
                raise ProtocolError("invalid_audio", f"audio.rate: expected an integer in Hz, got {rate!r}")
            try:
                decoder = PcmDecoder(rate, ch, sample)
            except AudioError as e:
                raise ProtocolError("invalid_audio", f"audio: {e}") from None
        else:
            decoder = PcmDecoder(wav=True)
        self._streams[say.id] = _Stream(say.avatar, decoder, now)
        self._dead.pop(say.id, None)
        return AudioIn(rate=rate, samples=None, format=fmt)

    def _kill(self, id: str) -> None:
        self._streams.pop(id, None)
        self._dead[id] = None
        while len(self._dead) > _DEAD_STREAMS:
            self._dead.popitem(last=False)

    def _fail(self, id: str, st: _Stream, code: str, message: str,
              samples: np.ndarray | None = None) -> AudioChunk:
        self._kill(id)
        return AudioChunk(id, st.avatar, samples if samples is not None else np.zeros(0, np.float32),
                          st.decoder.rate, end=True, error=ProtocolError(code, message, id))

    def _audio_chunk_in(self, data: bytes, now: float) -> AudioChunk | None:
        from runtime.audio.wav import AudioError, parse_header

        lim = self.limits
        n = data[4] if len(data) > 4 else 0
        try:
            id = data[5:5 + n].decode("ascii") if len(data) >= 5 + n else ""
        except UnicodeDecodeError:
            id = ""
        if not n or not _ID.match(id):
            raise ProtocolError("invalid_message", "audio chunk: expected b'KFA1', a length byte, the line's id "
                                "(1-64 characters of A-Z a-z 0-9 _ . : -), then the audio bytes")
        st = self._streams.get(id)
        if st is None:
            if id in self._dead:
                return None
            raise ProtocolError("unknown_stream", f"audio chunk for {id!r}: no open stream (announce it in a say "
                                "with \"audio\": {\"format\": ...})", id)
        payload = memoryview(data)[5 + n:]
        if len(data) > lim.audio_max_chunk:
            return self._fail(id, st, "audio_too_big", f"audio chunk is {len(data)} bytes, at most "
                              f"{lim.audio_max_chunk}; the stream ends here")
        st.bytes += len(payload)
        st.last = now
        if st.bytes > lim.audio_max_bytes:
            return self._fail(id, st, "audio_too_big", f"audio: over {lim.audio_max_bytes} bytes; the stream ends here")
        wav_head = st.decoder.rate is None  # a WAV stream still waiting for its header
        try:
            if wav_head:
                st.head += bytes(payload)
            samples = st.decoder.feed(payload)
            if wav_head and st.decoder.rate is not None:
                st.open_length, st.head = _open_length(parse_header(st.head)[2]), b""
        except AudioError as e:
            return self._fail(id, st, "invalid_audio", f"audio: {e}; the stream ends here")
        rate = st.decoder.rate
        if rate and (st.samples + len(samples)) / rate > lim.audio_max_seconds:
            keep = max(0, int(lim.audio_max_seconds * rate) - st.samples)
            return self._fail(id, st, "audio_too_big", f"audio: over {lim.audio_max_seconds:g} s; the stream "
                              "ends here", samples[:keep])
        st.samples += len(samples)
        return AudioChunk(id, st.avatar, samples, rate)

    def _audio_end(self, id: str, now: float) -> AudioChunk | None:
        from runtime.audio.wav import AudioError

        st = self._streams.pop(id, None)
        if st is None:
            if id in self._dead:
                self._dead.pop(id, None)
                return None
            raise ProtocolError("unknown_stream", f"audio_end for {id!r}: no open stream", id)
        try:
            if not (st.open_length and st.decoder.rate is not None):
                st.decoder.close()
        except AudioError as e:
            return self._fail(id, st, "invalid_audio", f"audio: {e}")
        return AudioChunk(id, st.avatar, np.zeros(0, np.float32), st.decoder.rate, end=True)

    def expire(self, now: float) -> list[AudioChunk]:
        """End the streams that had no chunk for ``audio_stream_timeout`` seconds (call it now and then)."""
        t = self.limits.audio_stream_timeout
        return [self._fail(id, st, "audio_timeout", f"audio: no chunk for {t:g} s; the stream ends here")
                for id, st in list(self._streams.items()) if now - st.last > t]

    def kill_stream(self, id: str) -> None:
        """The line is over (interrupted, done): its late chunks and audio_end are dropped quietly."""
        if id in self._streams or id in self._dead:
            self._kill(id)

    def drop_stream(self, id: str) -> None:
        """The server refused the say that opened it (its id is then free again)."""
        self._streams.pop(id, None)

    def close(self) -> list[AudioChunk]:
        """The connection is gone: end every open stream (the lines keep the audio they have)."""
        out = [AudioChunk(id, st.avatar, np.zeros(0, np.float32), st.decoder.rate, end=True)
               for id, st in self._streams.items()]
        self._streams.clear()
        return out

    @property
    def streams(self) -> list[str]:
        return list(self._streams)


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
                              "max_turn": limits.max_turn, "chunk_timeout": limits.chunk_timeout,
                              **audio_limits(limits)}})


def audio_limits(limits: Limits) -> dict:
    return {"audio_max_message": limits.audio_max_message, "audio_max_chunk": limits.audio_max_chunk,
            "audio_max_bytes": limits.audio_max_bytes, "audio_max_seconds": limits.audio_max_seconds,
            "audio_streams": limits.audio_streams}


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
