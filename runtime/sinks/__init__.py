"""Sinks: frames out to receivers, addressed by URL (``livelink://host:port``, ``csv:path``, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from runtime.config import OscConfig, VmcConfig, VrchatConfig, VtubeStudioConfig, WebSocketConfig
from runtime.sinks.base import Sink, SinkError


@dataclass
class SinkOptions:
    fps: float = 60.0
    device_id: str = "6b657966-7261-6d65-6661-636500000001"  # 36 bytes, like the phone's UUID
    subject: str = "KeyframeFace"
    vmc: VmcConfig = field(default_factory=VmcConfig)
    vrchat: VrchatConfig = field(default_factory=VrchatConfig)
    osc: OscConfig = field(default_factory=OscConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    vtubestudio: VtubeStudioConfig = field(default_factory=VtubeStudioConfig)

    @classmethod
    def from_config(cls, cfg) -> SinkOptions:
        """Every sink's options from a loaded :class:`runtime.config.Config`."""
        return cls(fps=cfg.animation.fps, device_id=cfg.livelink.device_id, subject=cfg.livelink.subject,
                   vmc=cfg.vmc, vrchat=cfg.vrchat, osc=cfg.osc, websocket=cfg.websocket,
                   vtubestudio=cfg.vtubestudio)


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
    if scheme in _NETWORK:
        return _open_network(scheme, url, host, port, parse_qs(parts.query), opts)
    raise SinkError(f"{url!r}: unknown sink scheme {scheme!r} (known: livelink, csv, {', '.join(_NETWORK)})")


# scheme -> (default host, default port, example); port None = the URL must name one
_NETWORK = {
    "vmc": ("", 39539, "vmc://127.0.0.1:39539"),
    "vrchat": ("127.0.0.1", 9000, "vrchat://127.0.0.1:9000"),
    "osc": ("", None, "osc://127.0.0.1:8000"),
    "ws": ("127.0.0.1", 8765, "ws://127.0.0.1:8765"),
    "vts": ("localhost", 8001, "vts://localhost:8001"),
}


def _open_network(scheme: str, url: str, host: str | None, port: int | None, query: dict[str, list[str]],
                  opts: SinkOptions) -> Sink:
    default_host, default_port, example = _NETWORK[scheme]
    host = host or default_host
    port = port if port is not None else default_port
    if not host or port is None:
        raise SinkError(f"{url!r}: needs a host and port, like {example}")
    if scheme == "vmc":
        from runtime.sinks.vmc import VmcSink

        pos = opts.vmc.head_position
        if len(pos) != 3:
            raise SinkError(f"{url!r}: vmc.head_position needs 3 numbers (x, y, z metres), got {pos}")
        return VmcSink(host, port, head=opts.vmc.head, head_position=(pos[0], pos[1], pos[2]))
    if scheme == "vrchat":
        from runtime.sinks.vrchat import VrchatSink

        v = opts.vrchat
        return VrchatSink(host, port, names=v.names or None, prefix=v.prefix, bundle=v.bundle)
    if scheme == "osc":
        from runtime.sinks.osc import OscSink

        o = opts.osc
        return OscSink(host, port, address=o.address, template=o.template, bundle=o.bundle)
    if scheme == "ws":
        from runtime.sinks.websocket import WebSocketSink

        w = opts.websocket
        fmt = query.get("format", [w.format])[0]
        return WebSocketSink(host, port, fps=opts.fps, queue_size=w.queue, default_format=fmt)
    from runtime.sinks.vtubestudio import VtsSink

    t = opts.vtubestudio
    return VtsSink(host, port, token_path=t.token_path, plugin_name=t.plugin_name,
                   plugin_developer=t.plugin_developer, custom=t.custom, prefix=t.prefix, gains=t.gains,
                   mode=t.mode, keepalive=t.keepalive)


__all__ = ["Sink", "SinkError", "SinkOptions", "open_sink"]
