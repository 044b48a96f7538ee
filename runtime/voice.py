"""A voice for the demo: espeak-ng speaks a line to a WAV file and reports when each word starts.

espeak-ng (Debian's ``espeak-ng`` package) is driven through its C library with ctypes, because
only the library reports timing: a WORD event at the audio position where each word starts and a
PHONEME event per sound. Those become the word timings the speech layer aligns the mouth to
(``SpeechPlan.from_text(words=spoken.words)``), the same form a production TTS engine gives.

Optional: nothing else imports this module, and :func:`available` says whether the library is
installed. espeak-ng keeps global state, so calls are serialised with a lock. :func:`play` hands
the WAV to whatever command-line player the machine has.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path

_LIB_NAMES = ("espeak-ng", "espeak")
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_EV_END, _EV_WORD, _EV_PHONEME, _EV_MSG_TERMINATED = 0, 1, 7, 6


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_rate_hz = 0


class VoiceError(RuntimeError):
    pass


def _load() -> ctypes.CDLL:
    global _lib, _rate_hz
    if _lib is None:
        path = next((p for p in map(ctypes.util.find_library, _LIB_NAMES) if p), None)
        if path is None:
            raise VoiceError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, None, _INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise VoiceError(f"espeak-ng failed to initialise (code {rate})")
        _lib, _rate_hz = lib, rate
    return _lib


def available() -> bool:
    try:
        _load()
    except (VoiceError, OSError):
        return False
    return True


@dataclass
class Spoken:
    """One synthesised line: 16-bit mono PCM, its word timings and phoneme onsets (seconds)."""

    pcm: bytes
    sample_rate: int
    words: list[dict] = field(default_factory=list)  # [{"word", "start", "end"}], the TTS form
    phonemes: list[tuple[str, float]] = field(default_factory=list)  # (espeak phoneme, start)

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    def write_wav(self, path: str | Path) -> Path:
        path = Path(path)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(self.pcm)
        return path


def speak(text: str, voice: str = "en-us", wpm: int = 165) -> Spoken:
    """Synthesise ``text``; raises :class:`VoiceError` when espeak-ng is missing or fails."""
    chunks: list[bytes] = []
    events: list[tuple[int, int, int, int, str]] = []  # type, text position, length, ms, phoneme

    def on_audio(wav, n, ev) -> int:  # called by espeak-ng on this thread, during espeak_Synth
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, n * 2))
        i = 0
        while ev[i].type != _EV_END:
            e = ev[i]
            name = e.id.decode("utf-8", "replace") if e.type == _EV_PHONEME else ""
            events.append((e.type, e.text_position, e.length, e.audio_position, name))
            i += 1
        return 0

    with _lock:
        lib = _load()
        callback = _CALLBACK(on_audio)  # kept alive until synthesis returns
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise VoiceError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, int(wpm), 0)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        rc = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if rc != 0:
            raise VoiceError(f"espeak-ng could not speak the line (code {rc})")
        lib.espeak_Synchronize()
        rate = _rate_hz
    spoken = Spoken(b"".join(chunks), rate)
    spoken.phonemes = [(name, ms / 1000) for kind, _, _, ms, name in events if kind == _EV_PHONEME]
    starts: list[tuple[int, int, float]] = []
    for kind, pos, length, ms, _ in events:
        if kind != _EV_WORD:
            continue
        if starts and pos < starts[-1][0] + starts[-1][1]:
            continue  # espeak reads "42" as two words inside one token: keep the token whole
        starts.append((pos, length, ms / 1000))
    pauses = [t for name, t in spoken.phonemes if name.startswith("_")]
    for k, (pos, length, t0) in enumerate(starts):
        nxt = starts[k + 1][2] if k + 1 < len(starts) else spoken.duration
        # the word ends where the next starts, or at a pause (punctuation) between them
        end = min([p for p in pauses if t0 < p < nxt] or [nxt])
        # espeak's length stops at an apostrophe ("I" of "I'm"): take the whole token
        upto = starts[k + 1][0] - 1 if k + 1 < len(starts) else len(text)
        chunk = text[pos - 1: max(upto, pos - 1 + length)].split()
        word = chunk[0].strip(".,!?;:\"()[]{}") if chunk else ""
        if not word:
            continue
        spoken.words.append({"word": word, "start": round(t0, 4), "end": round(max(end, t0), 4)})
    return spoken


# Players tried in order for :func:`play`: ALSA, PulseAudio, PipeWire, SoX, FFmpeg, macOS.
PLAYERS = (("aplay", "-q"), ("paplay",), ("pw-play",), ("play", "-q"),
           ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"), ("afplay",))


def play(path: str | Path) -> subprocess.Popen | None:
    """Start playing a WAV file on the default audio device without waiting; None if no player.

    Start it on the frame that begins the line (the mouth's time 0 plus the plan's ``start``)."""
    for cmd in PLAYERS:
        exe = shutil.which(cmd[0])
        if exe:
            return subprocess.Popen([exe, *cmd[1:], str(path)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return None
