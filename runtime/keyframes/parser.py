"""Incremental keyframe parser: model text in (split anywhere), keyframes out as lines complete.

The grammar already guarantees well-formed lines from a local model; the parser still validates
everything, because a remote backend may have no grammar and a user may type keyframes by hand.
A bad line is reported (logged, counted in ``errors``) and skipped; it never stops the stream.
"""

from __future__ import annotations

import logging
import re

from runtime.keyframes.language import MAX_ITEMS, TIME_UNIT, Keyframe, KeyframeError, Language

log = logging.getLogger(__name__)

_LINE = re.compile(r"^\s*(\d{1,3})((?:\s+[A-Za-z_]+\s+-?\d{1,2})+)\s*$")
_ITEM = re.compile(r"([A-Za-z_]+)\s+(-?\d{1,2})")
MAX_LINE = 200  # characters; a longer line is garbage, not a keyframe


class KeyframeParser:
    """Feed text chunks; get :class:`Keyframe` objects with strictly rising times.

    ``strict=True`` raises :class:`KeyframeError` on a bad line instead of skipping it.
    """

    def __init__(self, language: Language, *, strict: bool = False, max_items: int = MAX_ITEMS):
        self.language = language
        self.strict = strict
        self.max_items = max_items
        self._buf = ""
        self._t = -1.0  # time of the last keyframe, seconds
        self._pending_tokens = 0
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.count = 0

    def feed(self, text: str, tokens: int = 0) -> list[Keyframe]:
        """Add text (any split); return the keyframes whose lines completed."""
        self._pending_tokens += tokens
        self._buf += text
        out: list[Keyframe] = []
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            kf = self._line(line)
            if kf is not None:
                out.append(kf)
        if len(self._buf) > MAX_LINE:
            self._reject(self._buf[:40] + "...", "line too long")
            self._buf = ""
        return out

    def close(self) -> list[Keyframe]:
        """End of text: the last line counts even without a newline."""
        line, self._buf = self._buf, ""
        kf = self._line(line)
        return [kf] if kf is not None else []

    def _reject(self, line: str, why: str) -> None:
        msg = f"bad keyframe line {line!r}: {why}"
        if self.strict:
            raise KeyframeError(msg)
        self.errors.append(msg)
        log.warning(msg)

    def _line(self, line: str) -> Keyframe | None:
        if not line.strip() or line.strip().lower() in ("end", "."):
            return None
        m = _LINE.match(line)
        if m is None:
            self._reject(line, "expected '<tenths> <name> <level> ...'")
            return None
        items = [(n, int(lv)) for n, lv in _ITEM.findall(m.group(2))]
        if len(items) > self.max_items:
            self._reject(line, f"more than {self.max_items} items")
            return None
        try:
            values, clamped = self.language.pose(items)
        except KeyframeError as e:
            self._reject(line, str(e))
            return None
        if clamped:
            msg = f"keyframe {line.strip()!r}: value out of range, clamped"
            self.warnings.append(msg)
            log.warning(msg)
        t = int(m.group(1)) * TIME_UNIT + max(self._t, 0.0)
        if t <= self._t:  # times must rise; a zero delay after the first key means one step
            t = self._t + TIME_UNIT
        self._t = t
        self.count += 1
        kf = Keyframe(t=round(t, 6), values=values, items=items, tokens=self._pending_tokens)
        self._pending_tokens = 0
        return kf
