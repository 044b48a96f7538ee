"""``keyframeface keyframes --batch``: many lines through one loaded model, JSON lines out.

Input: one JSON object per line, ``{"id": ..., "text": ..., "context": ..., "emotion": ...,
"heard": ...}`` (only ``text`` required; ``id`` a string or an integer, the input line number when
absent; blank lines skipped). Output, as each keyframe is generated::

    {"id": ..., "t": s, "values": {channel: value, ...}}     the same complete pose as the jsonl output
    {"id": ..., "done": true}                                after each line's last keyframe
    {"id": ..., "error": "..."}                              instead, when that line fails

A line that is not valid (bad JSON, a missing or mistyped field, an unknown field) gets its error
line and the batch goes on. Fields are checked as serve's ``say`` checks them (types, lengths,
control characters). Parsing is a pure function (:func:`parse`); :func:`run` only adds the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from runtime.generate import Backend, LineRequest, stream_keyframes
from runtime.keyframes.language import Language
from runtime.keyframes.parser import KeyframeParser
from runtime.protocol import Limits, ProtocolError, validate_text

log = logging.getLogger(__name__)

FIELDS = ("id", "text", "context", "emotion", "heard")


class BatchError(ValueError):
    def __init__(self, message: str, id: str | int) -> None:
        super().__init__(message)
        self.id = id


def parse(raw: str, number: int, limits: Limits | None = None) -> tuple[str | int, LineRequest]:
    """One input line -> (its id, the request); raises BatchError naming the id (or line number)."""
    lim = limits or Limits()
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise BatchError(f"line {number}: not valid JSON: {e}", number) from None
    if not isinstance(obj, dict):
        raise BatchError(f"line {number}: expected a JSON object with a \"text\"", number)
    line_id = obj.get("id", number)
    if isinstance(line_id, bool) or not isinstance(line_id, str | int) or (
            isinstance(line_id, str) and not 0 < len(line_id) <= 200):
        raise BatchError(f"line {number}: id: expected a string of 1-200 characters or an integer", number)
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise BatchError(f"line {number}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})", line_id)
    if "text" not in obj:
        raise BatchError(f"line {number}: text: missing", line_id)
    try:
        fields = {"text": validate_text(obj, "text", lim.max_text, required=True),
                  "context": validate_text(obj, "context", lim.max_context),
                  "emotion": validate_text(obj, "emotion", lim.max_emotion),
                  "heard": validate_text(obj, "heard", lim.max_heard)}
    except ProtocolError as e:
        raise BatchError(f"line {number}: {e.message}", line_id) from None
    return line_id, LineRequest(id=str(line_id), **{k: v.strip() for k, v in fields.items()})


def run(backend: Backend, language: Language, lines: Iterable[str], write: Callable[[dict], None],
        limits: Limits | None = None) -> tuple[int, int]:
    """Every line in turn; returns (lines done, lines failed)."""
    ok = failed = 0
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line_id, req = parse(raw, number, limits)
        except BatchError as e:
            write({"id": e.id, "error": str(e)})
            failed += 1
            continue
        try:
            for kf in stream_keyframes(backend, KeyframeParser(language), req):
                write({"id": line_id, **kf.to_json()})
        except Exception as e:  # one line's failure is its own; the batch goes on
            log.error("batch line %s: %s", line_id, e)
            write({"id": line_id, "error": f"generation failed: {e}"})
            failed += 1
            continue
        write({"id": line_id, "done": True})
        ok += 1
    return ok, failed
