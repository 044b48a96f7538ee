"""Sinks: frames out to receivers, addressed by URL (``livelink://host:port``, ``csv:path``, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime.sinks.base import Sink, SinkError


@dataclass
class SinkOptions:
    fps: float = 60.0
    device_id: str = "6b657966-7261-6d65-6661-636500000001"  # 36 bytes, like the phone's UUID
    subject: str = "KeyframeFace"


def open_sink(url: str, opts: SinkOptions | None = None) -> Sink:
    """Open the sink a URL names; raises :class:`SinkError` with a one-line reason."""
    opts = opts or SinkOptions()
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "csv":
        from runtime.sinks.csv import CsvSink

        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise SinkError(f"{url!r}: csv sink needs a path, like csv:take.csv")
        return CsvSink(path, opts.fps)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise SinkError(f"{url!r}: bad port") from None
    host = parts.hostname
    if scheme == "livelink":
        from runtime.sinks.livelink import DEFAULT_PORT, LiveLinkSink

        if not host:
            raise SinkError(f"{url!r}: no host, like livelink://127.0.0.1:{DEFAULT_PORT}")
        return LiveLinkSink(host, port or DEFAULT_PORT, device_id=opts.device_id,
                            subject=opts.subject, fps=opts.fps)
    raise SinkError(f"{url!r}: unknown sink scheme {scheme!r} (known: livelink, csv)")


__all__ = ["Sink", "SinkError", "SinkOptions", "open_sink"]
