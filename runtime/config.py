"""config.toml -> typed settings. Every default lives here and, commented, in config.toml.

Unknown keys and wrong types are errors that name the key (``model.threads: expected int, got
'two'``), never a traceback from deep inside the runtime.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from runtime.keyframes.language import DEFAULT_ALIASES, DEFAULT_PRESETS


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"  # a known model name or a path to a .gguf
    quant: str = "auto"  # weight type it runs in: "auto" (a known model's best type), "" (as shipped), "Q4_0"...
    lora_path: str = "auto"  # GGUF LoRA adapter on top: "auto" = the one shipped for the model, "" = none
    threads: int = 0  # 0 = cores - 1: a core stays free for the frame clock
    context: int = 2048
    max_tokens: int = 96  # per line; bounds a runaway generation
    gpu_layers: int = 0  # layers offloaded to a GPU when llama.cpp was built with one
    timeout: float = 10.0  # seconds a line may generate before it is ended gracefully
    process: bool = True  # run the model in its own process: its Python loop never delays the clock
    batch: int = 8  # lines generated together (one llama_decode per step); more wait for a free slot
    servers: list[str] = field(default_factory=list)  # a pool of completions servers (URLs) instead
    server_slots: int = 1  # lines in flight per server (llama-server --parallel N: N)


@dataclass
class KeyframesConfig:
    max_keyframes: int = 8
    max_items: int = 2
    raw_channels: bool = False  # offer raw ARKit names to the model too
    onset: bool = True  # the runtime writes each clause's first keyframe once the model chose the feeling
    decide_early: float = 2.0  # nats by which hint, emotion words and feeling model agree: no model reading


@dataclass
class FeelingConfig:
    model: str = "auto"  # the feeling model: "auto" = exported_models/feeling.onnx, "" = none, or a path
    weight: float = 2.5  # how much its reading (weight * log p) counts beside the keyframe model's own
    change: float = 0.85  # its confidence in another feeling for a sentence to start a new beat
    blend: float = 0.4  # how much the whole line's reading counts in each beat's (log-linear)
    aside: float = 0.5  # a beat of another feeling than the line's peaks this much below the line's own
    heard_words: int = 4  # what was heard is read for replies of at most this many words; 0 = never
    reading: float = 0.0  # how much the keyframe model's own reading counts in speech (stage directions: 1)


@dataclass
class AnimationConfig:
    fps: float = 60.0
    attack: float = 0.2  # seconds from the current face to the line's first keyframe
    release: float = 0.6  # seconds from the last keyframe back to rest
    interpolator: str = "spline"  # "spline" or "learned"
    spin_ms: float = 1.5  # the clock spins this long before each deadline for even pacing
    lead_ms: float = 4.0  # frames are made this long before their deadline and sent on it (0 = at it)
    realtime: int = 10  # SCHED_FIFO priority of the clock thread where allowed (0 = normal scheduling)


@dataclass
class LiveLinkConfig:
    device_id: str = "6b657966-7261-6d65-6661-636500000001"  # 36 bytes, like the phone's UUID
    subject: str = "KeyframeFace"


@dataclass
class VmcConfig:
    head: bool = True  # send head rotation as /VMC/Ext/Bone/Pos "Head"
    head_position: list[float] = field(default_factory=lambda: [0.0, 0.06, 0.0])  # neck->head, metres


@dataclass
class VrchatConfig:
    prefix: str = ""  # put before each default parameter name, e.g. "FT/"
    names: dict[str, str] = field(default_factory=dict)  # ARKit channel -> parameter; {} = 52 shapes
    bundle: bool = False  # pack the messages into OSC bundles instead of one datagram each


@dataclass
class OscConfig:
    address: str = "/keyframeface/frame"  # one message of 61 floats per frame at this address
    template: str = ""  # or one address per channel, e.g. "/face/{name}" ({name}, {camel}, {index})
    bundle: bool = True  # per-channel messages in bundles (<= 1500 bytes) rather than one each


@dataclass
class WebSocketConfig:
    format: str = "json"  # "json" or "binary"; a client may pick with ?format= or a subscribe message
    queue: int = 8  # frames buffered per client; a slow client loses its own oldest frames


@dataclass
class VtubeStudioConfig:
    token_path: str = "~/.config/keyframeface/vtubestudio-token.json"
    plugin_name: str = "KeyframeFace"
    plugin_developer: str = "KeyframeFace Runtime"
    custom: list[str] = field(default_factory=list)  # ARKit channels as custom parameters; ["all"] = 52
    prefix: str = ""  # put before custom parameter names
    gains: dict[str, float] = field(default_factory=dict)  # parameter -> factor, e.g. FaceAngleX = -1
    mode: str = "set"  # "set" owns a parameter; "add" shares it with other plugins
    keepalive: float = 0.5  # resend the last values after this many seconds without a frame


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback only; any other address needs a token
    port: int = 8765
    token: str = ""  # clients present it as ?token= or "Authorization: Bearer ..."; "" = none
    origins: list[str] = field(default_factory=list)  # more browser origins allowed on /ws
    max_message: int = 16384  # bytes of one client message
    max_text: int = 500  # characters of one line
    say_rate: float = 2.0  # lines per second per client, sustained
    say_burst: int = 5  # lines a client may send at once
    max_lines: int = 8  # lines waiting per avatar before "too_many_lines"
    frame_queue: int = 8  # frames buffered per subscriber; a slow one loses its own oldest
    interrupt_blend: float = 0.15  # seconds from the interrupted face to rest
    max_turn: int = 2000  # characters of a line sent in chunks ("more": true), all chunks together
    chunk_timeout: float = 5.0  # seconds a chunked line waits for its next chunk; then it is abandoned
    # audio in a say (inline base64 WAV, or announced and streamed as binary chunks): limits per line
    audio_max_message: int = 4194304  # bytes of a say carrying inline (base64) WAV; others: max_message
    audio_max_chunk: int = 262144  # bytes of one binary audio chunk
    audio_max_bytes: int = 16777216  # bytes of audio of one line, inline or streamed
    audio_max_seconds: float = 120.0  # seconds of audio of one line
    audio_streams: int = 4  # audio streams one client may have open at once
    audio_stream_timeout: float = 10.0  # seconds without a chunk before an open stream is ended


@dataclass
class IdleConfig:
    enabled: bool = True  # blinks, saccades, breathing and head drift between and under lines
    blinks: bool = True
    saccades: bool = True
    breathing: bool = True
    drift: bool = True
    seed: int = -1  # -1: a different face each run; >= 0: the same idle motion every run
    gaze_degrees: float = 6.9  # spread of gaze targets (yaw; pitch 2/3 of it), measured from capture
    drift_degrees: float = 1.5  # typical head drift (yaw; pitch and roll smaller)
    breaths_per_minute: float = 15.0
    gaze_intent: bool = True  # while talking: look away as a thought starts, back at the listener as it ends
    asymmetry: float = 1.0  # left/right gain and timing differences: 1 = as measured, 0 = a symmetric rig
    tone: float = 1.0  # the resting tone of a real face (EyeSquint ~0.14...): 0 = rest is all zeros
    micro: float = 0.7  # micro-motion of holds (1 = the measured size): 0 = frame-perfect stillness
    coupling: float = 0.4  # neighbour channels brought along as in capture (cheek squint -> nose, ...): 0 = off


@dataclass
class AudioConfig:
    max_seconds: float = 600.0  # a voice file (say/render --audio) longer than this is refused
    max_bytes: int = 268435456  # ... and so is one bigger than this (256 MiB)
    lookahead: float = 0.0  # streaming: seconds from a chunk's arrival to when it plays, if not told
    beats: bool = True  # stressed syllables lift the brows and nod the head a little; blinks at phrase ends
    beat_strength: float = 1.0  # scale of those gestures (1 = subtle)


@dataclass
class AvatarConfig:
    name: str = "default"
    sinks: list[str] = field(default_factory=list)  # this avatar's own sinks (URLs)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    keyframes: KeyframesConfig = field(default_factory=KeyframesConfig)
    feeling: FeelingConfig = field(default_factory=FeelingConfig)
    animation: AnimationConfig = field(default_factory=AnimationConfig)
    livelink: LiveLinkConfig = field(default_factory=LiveLinkConfig)
    vmc: VmcConfig = field(default_factory=VmcConfig)
    vrchat: VrchatConfig = field(default_factory=VrchatConfig)
    osc: OscConfig = field(default_factory=OscConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    vtubestudio: VtubeStudioConfig = field(default_factory=VtubeStudioConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    idle: IdleConfig = field(default_factory=IdleConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    avatars: list[AvatarConfig] = field(default_factory=list)  # serve: [] = one "default" avatar
    sinks: list[str] = field(default_factory=list)
    presets: dict[str, dict[str, float]] = field(default_factory=lambda: {
        k: dict(v) for k, v in DEFAULT_PRESETS.items()})
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))


def _check(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(typ, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = get_args(typ)
        return [_check(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _, item = get_args(typ)
        return {k: _check(v, item, f"{key}.{k}") for k, v in value.items()}
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ in (str, bool) and not isinstance(value, typ):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in hints:
            raise ConfigError(f"{key}: unknown setting (known: {', '.join(hints)})")
        kwargs[k] = _check(v, hints[k], key)
    return cls(**kwargs)


# llama.cpp weight types model.quant may name (its LLAMA_FTYPE_MOSTLY_* names that need no imatrix)
QUANTS = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_S",
          "Q5_K_M", "Q6_K")


def load(path: str | Path | None = None) -> Config:
    """Read a config.toml (missing keys take their defaults); no path = all defaults."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg = _build(Config, data)
    if cfg.model.quant.strip().upper() not in ("AUTO", "", *QUANTS):
        raise ConfigError(f"model.quant: unknown weight type {cfg.model.quant!r} "
                          f"(\"auto\", \"\" or one of {', '.join(QUANTS)})")
    a = cfg.animation
    frame_ms = 1000.0 / a.fps if a.fps > 0 else float("inf")  # (fps itself is not checked here)
    if not 0 <= a.lead_ms < frame_ms:  # a frame is made within the period before its deadline
        raise ConfigError(f"animation.lead_ms: {a.lead_ms} must be at least 0 and under one frame "
                          f"({frame_ms:.1f} ms at {a.fps:g} fps)")
    if not 0 <= a.realtime <= 99:  # Linux's SCHED_FIFO priorities
        raise ConfigError(f"animation.realtime: {a.realtime} must be from 0 to 99 (0: off)")
    feel = cfg.feeling
    if not 0 <= feel.blend <= 1:  # a share of the whole line's reading (beats.Rules)
        raise ConfigError(f"feeling.blend: {feel.blend} must be from 0 to 1")
    if not 0 <= feel.aside <= 1:  # intensity is 0..1
        raise ConfigError(f"feeling.aside: {feel.aside} must be from 0 to 1")
    if data.get("presets") is not None:  # user presets extend the defaults
        cfg.presets = {**Config().presets, **cfg.presets}
    if data.get("aliases") is not None:
        cfg.aliases = {**Config().aliases, **cfg.aliases}
    return cfg
