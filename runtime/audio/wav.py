"""Audio bytes -> float32 mono samples: WAV files, raw PCM chunks, resampling. Pure functions and
a small incremental decoder, no I/O beyond reading a path.

Accepted: any sample rate (8-192 kHz), any number of channels (averaged to mono; mono and stereo
are the common cases), integer PCM of 8, 16, 24 or 32 bits and IEEE float of 32 or 64 bits, plain
or WAVE_FORMAT_EXTENSIBLE. Anything else raises :class:`AudioError` with a message that names the
problem ("not a WAV file", "truncated: ...", "compressed WAV (format 0x0055, MP3) is not supported").
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """Audio that cannot be used; the message says why. The line goes on without a mouth."""


MIN_RATE, MAX_RATE = 8000, 192000
_FORMATS = {1: "pcm", 3: "float", 0xFFFE: "extensible"}
_NAMES = {2: "ADPCM", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x31: "GSM", 0x55: "MP3", 0x50: "MPEG"}
SAMPLE_FORMATS = ("s16le", "s32le", "f32le", "u8")  # raw PCM chunks (:class:`PcmDecoder`)


def _fmt_name(tag: int) -> str:
    return f"format 0x{tag:04x}" + (f", {_NAMES[tag]}" if tag in _NAMES else "")


def parse_header(data: bytes | memoryview) -> tuple[dict, int, int | None]:
    """Parse a RIFF/WAVE header: ``(fmt, data_offset, data_bytes)``. ``data_bytes`` is None when
    the header says "unknown length" (0, or 0x7FFF0000 and more, as streaming writers do). Raises
    :class:`AudioError`; raises it with ``incomplete=True`` set when more bytes could fix it."""
    b = bytes(data[:12])
    if len(b) < 12:
        raise _incomplete("truncated: fewer than 12 bytes, not even a WAV header")
    if b[:4] not in (b"RIFF", b"RF64") or b[8:12] != b"WAVE":
        head = b[:4]
        hint = {b"OggS": " (Ogg)", b"fLaC": " (FLAC)", b"ID3\x03": " (MP3)", b"ID3\x04": " (MP3)"}.get(head, "")
        raise AudioError(f"not a WAV file{hint}: it starts with {head!r}, not b'RIFF'...b'WAVE'")
    pos, fmt = 12, None
    n = len(data)
    while True:
        if pos + 8 > n:
            raise _incomplete("truncated: the WAV header ends before its data chunk")
        cid, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if cid == b"fmt ":
            if body + min(size, 16) > n:
                raise _incomplete("truncated inside the WAV 'fmt ' chunk")
            if size < 16:
                raise AudioError(f"bad WAV 'fmt ' chunk: {size} bytes, need at least 16")
            tag, ch, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE:
                if size < 40 or body + 40 > n:
                    raise AudioError("bad WAV: WAVE_FORMAT_EXTENSIBLE without its 40-byte 'fmt ' chunk")
                bits_valid, = struct.unpack_from("<H", data, body + 18)
                tag = struct.unpack_from("<H", data, body + 24)[0]  # the sub-format GUID's first two bytes
                bits = bits or bits_valid
            fmt = {"tag": tag, "channels": ch, "rate": rate, "align": align, "bits": bits}
            _check_fmt(fmt)
        elif cid == b"data":
            if fmt is None:
                raise AudioError("bad WAV: the data chunk comes before the 'fmt ' chunk")
            # 0, 0xFFFFFFFF and espeak-ng --stdout's 0x7FFFF000 all mean "until the stream ends"
            return fmt, body, (None if size == 0 or size >= 0x7FFF0000 else size)
        pos = body + size + (size & 1)


def _incomplete(msg: str) -> AudioError:
    e = AudioError(msg)
    e.incomplete = True  # type: ignore[attr-defined]
    return e


def _check_fmt(fmt: dict) -> None:
    tag, bits, ch, rate = fmt["tag"], fmt["bits"], fmt["channels"], fmt["rate"]
    if tag not in (1, 3):
        raise AudioError(f"compressed WAV ({_fmt_name(tag)}) is not supported: use PCM or float")
    if tag == 1 and bits not in (8, 16, 24, 32):
        raise AudioError(f"{bits}-bit PCM WAV is not supported (8, 16, 24 or 32 bits)")
    if tag == 3 and bits not in (32, 64):
        raise AudioError(f"{bits}-bit float WAV is not supported (32 or 64 bits)")
    if ch < 1:
        raise AudioError("bad WAV: 0 channels")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if fmt["align"] != ch * bits // 8:
        fmt["align"] = ch * bits // 8  # some writers get block_align wrong; the sample size decides


def _to_float(raw: bytes | memoryview, fmt: dict) -> np.ndarray:
    """Interleaved sample bytes -> float32 mono in [-1, 1]."""
    tag, bits, ch = fmt["tag"], fmt["bits"], fmt["channels"]
    if tag == 3:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    elif bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1, dtype=np.float32)
    return x


def read_wav(source: bytes | bytearray | memoryview | str | Path, *, max_bytes: int | None = None,
             max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """A WAV file (path) or its bytes -> ``(float32 mono samples in [-1, 1], sample rate)``.

    ``max_bytes`` / ``max_seconds``: limits (oversized audio is an :class:`AudioError`, checked
    before decoding). Truncated data (the header promises more than the file has) is an error too."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise AudioError(f"{path}: {size} bytes is over the limit of {max_bytes}")
            data = path.read_bytes()
        except OSError as e:
            raise AudioError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            return read_wav(data, max_bytes=max_bytes, max_seconds=max_seconds)
        except AudioError as e:
            raise AudioError(f"{path}: {e}") from None
    data = memoryview(source).cast("B") if not isinstance(source, bytes) else source
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError(f"{len(data)} bytes of audio is over the limit of {max_bytes}")
    fmt, off, size = parse_header(data)
    avail = len(data) - off
    if size is None:
        size = avail - avail % fmt["align"]
    elif size > avail:
        raise AudioError(f"truncated: the data chunk says {size} bytes, the file holds {avail}")
    if size % fmt["align"]:
        size -= size % fmt["align"]
    seconds = size / fmt["align"] / fmt["rate"]
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{seconds:.1f} s of audio is over the limit of {max_seconds:g} s")
    return _to_float(data[off: off + size], fmt), fmt["rate"]


class PcmDecoder:
    """Incremental: byte chunks (any split, even mid-sample) -> float32 mono samples.

    Either raw PCM in a declared ``sample_format`` (:data:`SAMPLE_FORMATS`) with ``rate`` and
    ``channels``, or, with ``wav=True``, a WAV stream: its header first (in one chunk or spread
    over several), then data; the header sets the format (``rate`` is then read from it)."""

    def __init__(self, rate: int = 16000, channels: int = 1, sample_format: str = "s16le", *,
                 wav: bool = False) -> None:
        self._buf = b""
        self.fmt: dict | None = None
        self._remaining: int | None = None  # data bytes the WAV header promised, still to come
        if not wav:
            if sample_format not in SAMPLE_FORMATS:
                raise AudioError(f"unknown sample format {sample_format!r} (known: {', '.join(SAMPLE_FORMATS)})")
            if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
                raise AudioError(f"channels must be 1-8, not {channels!r}")
            bits = {"s16le": 16, "s32le": 32, "f32le": 32, "u8": 8}[sample_format]
            self.fmt = {"tag": 3 if sample_format == "f32le" else 1, "channels": channels, "rate": rate,
                        "bits": bits, "align": channels * bits // 8}
            _check_fmt(self.fmt)

    @property
    def rate(self) -> int | None:
        return self.fmt["rate"] if self.fmt else None

    def feed(self, chunk: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode what can be decoded; keep a partial sample or header for the next chunk."""
        self._buf += bytes(chunk)
        if self.fmt is None:
            try:
                fmt, off, size = parse_header(self._buf)
            except AudioError as e:
                if getattr(e, "incomplete", False) and len(self._buf) < 65536:
                    return np.zeros(0, np.float32)
                raise
            self.fmt, self._remaining = fmt, size
            self._buf = self._buf[off:]
        usable = len(self._buf) - len(self._buf) % self.fmt["align"]
        if self._remaining is not None:
            usable = min(usable, self._remaining)
            self._remaining -= usable
        raw, self._buf = self._buf[:usable], self._buf[usable:]
        if self._remaining == 0:
            self._buf = b""  # bytes after the data chunk (LIST, id3) are not audio
        return _to_float(raw, self.fmt)

    def close(self) -> None:
        """Raise :class:`AudioError` if the stream ended mid-header or mid-sample."""
        if self.fmt is None:
            raise AudioError("truncated: the audio ended inside its WAV header")
        if self._remaining:
            raise AudioError(f"truncated: the WAV data chunk is {self._remaining} bytes short")


class Resampler:
    """Streaming :func:`resample`: chunks in, the same samples out as resampling the whole at once
    (windowed-sinc low-pass when downsampling, so 48 kHz sibilants do not alias into the band the
    recogniser listens to, then linear interpolation). Output lags input by half the filter (under
    1 ms) until :meth:`flush`. Plenty for speech features; not for music."""

    def __init__(self, src: int, dst: int) -> None:
        self.src, self.dst = src, dst
        self.h: np.ndarray | None = None
        half = 0
        if dst < src:
            cutoff = 0.45 * dst / src  # cycles per input sample
            taps = 2 * int(np.ceil(4 / cutoff)) + 1
            k = np.arange(taps) - taps // 2
            h = 2 * cutoff * np.sinc(2 * cutoff * k) * np.hamming(taps)
            self.h = (h / h.sum()).astype(np.float32)
            half = taps // 2
        self._half = half
        self._hist = np.zeros(half, np.float32)  # raw input the filter still needs (zeros before the start)
        self._fb = np.zeros(0, np.float32)  # filtered input not yet passed by the output
        self._fb0 = 0  # global input index of _fb[0]
        self._n_in = 0
        self._n_out = 0

    def _filter(self, x: np.ndarray) -> np.ndarray:
        if self.h is None:
            return x
        z = np.concatenate([self._hist, x])
        if len(z) < len(self.h):
            self._hist = z
            return np.zeros(0, np.float32)
        self._hist = z[len(z) - (len(self.h) - 1):]
        return np.convolve(z, self.h, mode="valid").astype(np.float32)

    def _emit(self, limit: int, final: bool) -> np.ndarray:
        """Output samples whose input positions the filtered buffer covers (all up to ``limit``)."""
        ratio = self.src / self.dst
        avail = self._fb0 + len(self._fb)  # filtered input samples known
        if final:
            k1 = limit
        else:  # position p needs samples floor(p) and floor(p) + 1
            k1 = min(limit, int(np.floor((avail - 2) / ratio)) + 1) if avail >= 2 else 0
        if k1 <= self._n_out or not len(self._fb):
            return np.zeros(0, np.float32)
        pos = np.arange(self._n_out, k1, dtype=np.float64) * ratio
        y = np.interp(pos, self._fb0 + np.arange(len(self._fb)), self._fb).astype(np.float32)
        self._n_out = k1
        drop = min(max(int(np.floor(k1 * ratio)) - self._fb0 - 1, 0), len(self._fb) - 1)
        self._fb, self._fb0 = self._fb[drop:], self._fb0 + drop
        return y

    def feed(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        self._n_in += len(x)
        if self.src == self.dst:
            self._n_out += len(x)
            return x.copy()
        self._fb = np.concatenate([self._fb, self._filter(x)])
        return self._emit(int(round(self._n_in * self.dst / self.src)), final=False)

    def flush(self) -> np.ndarray:
        """The rest, once the input has ended."""
        if self.src == self.dst:
            return np.zeros(0, np.float32)
        if self.h is not None:  # the zeros after the end that 'same' filtering assumes
            n = self._n_in
            self._fb = np.concatenate([self._fb, self._filter(np.zeros(self._half, np.float32))])
            self._fb = self._fb[: max(n - self._fb0, 0)]
        return self._emit(int(round(self._n_in * self.dst / self.src)), final=True)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """float32 samples from ``src`` Hz to ``dst`` Hz (see :class:`Resampler`)."""
    x = np.asarray(x, dtype=np.float32)
    if src == dst or not len(x):
        return x.copy()
    r = Resampler(src, dst)
    return np.concatenate([r.feed(x), r.flush()])


def to_pcm16(x: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> 16-bit little-endian PCM bytes (what PocketSphinx reads)."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def write_wav(path: str | Path, x: np.ndarray, rate: int) -> Path:
    """float32 mono -> a 16-bit PCM WAV file."""
    pcm = to_pcm16(x)
    path = Path(path)
    head = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, rate,
                       rate * 2, 2, 16, b"data", len(pcm))
    path.write_bytes(head + pcm)
    return path
