"""The prompt: a fixed prefix (instructions and examples) and the line's own part.

The prefix never changes between lines, so its KV state is computed once and reused; only the
line's text is evaluated per request. Training (tools/) must build byte-identical prompts, so both
use :func:`build`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LineRequest:
    text: str
    context: str = ""
    emotion: str = ""
    id: str = ""


SYSTEM = (
    "You animate a face. For each line, write keyframes, one per line: "
    "tenths of a second since the previous keyframe, then expression and level 0-9. "
    "Expressions: joy sadness surprise fear anger disgust contempt neutral blink wink smirk frown "
    "browraise squint pout open lookleft lookright lookup lookdown nod tilt turn. "
    "Play emotions in the order the text gives them."
)

EXAMPLES: list[tuple[str, str]] = [
    ("He finally wins the prize and laughs.", "3 joy 5\n4 laugh 9\n6 joy 6\n"),
    ("She stares at the empty chair, fighting tears.", "4 sadness 5\n6 sadness 8 lookdown 4\n5 sadness 6\n"),
    ("A door slams; he jumps, then glares at it.", "2 surprise 9\n4 fear 5\n5 anger 8\n5 anger 6\n"),
    ("They serve her cold soup with a hair in it.", "3 disgust 6\n4 disgust 9\n6 disgust 5\n"),
]


def _user(req: LineRequest) -> str:
    parts = [req.text.strip()]
    if req.context.strip():
        parts.append(f"Context: {req.context.strip()}")
    if req.emotion.strip():
        parts.append(f"Emotion: {req.emotion.strip()}")
    return "\n".join(parts)


def chatml(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def prefix(system: str = SYSTEM, examples: list[tuple[str, str]] | None = None) -> str:
    examples = EXAMPLES if examples is None else examples
    out = chatml("system", system)
    for text, answer in examples:
        out += chatml("user", text) + chatml("assistant", answer)
    return out


def line_part(req: LineRequest) -> str:
    return chatml("user", _user(req)) + "<|im_start|>assistant\n"


def build(req: LineRequest, system: str = SYSTEM, examples: list[tuple[str, str]] | None = None) -> str:
    return prefix(system, examples) + line_part(req)
