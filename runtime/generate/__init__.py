"""Text -> keyframes: a backend streams model text, the parser turns completed lines into keys."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from runtime.generate.prompt import LineRequest
from runtime.keyframes.language import Keyframe
from runtime.keyframes.parser import KeyframeParser


class Backend(Protocol):
    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        ...


class Silent:
    """A backend that writes no keyframes: audio without text moves the mouth over the rest pose."""

    def stream(self, req: LineRequest, cancel: threading.Event | None = None) -> Iterator[tuple[str, int]]:
        return iter(())


def stream_keyframes(backend: Backend, parser: KeyframeParser, req: LineRequest,
                     cancel: threading.Event | None = None) -> Iterator[Keyframe]:
    """Keyframes of one line, each yielded the moment its line of text is complete."""
    for piece, tokens in backend.stream(req, cancel):
        yield from parser.feed(piece, tokens)
    yield from parser.close()


__all__ = ["Backend", "LineRequest", "Silent", "stream_keyframes"]
