"""The prompt: a fixed prefix (instructions and examples) and the line's own part.

The prefix never changes between lines, so its KV state is computed once and reused; only the
line's text is evaluated per request. Training (tools/) must build byte-identical prompts, so both
use :func:`build`.

A line that tells a sequence ("X, then Y", "X but suddenly Y", "at first X, later Y") is cut into
clauses by :func:`clauses`; each clause is prompted on its own and its keyframes continue the times
of the one before. A small model asked for the whole sentence mostly keeps the first emotion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class LineRequest:
    text: str
    context: str = ""
    emotion: str = ""
    id: str = ""


SYSTEM = (
    "You animate a face. For each line, write keyframes, one per line: "
    "tenths of a second since the previous keyframe, then an expression and its level 0-9. "
    "Expressions: joy sadness surprise fear anger disgust contempt neutral, or a word for the feeling "
    "(laugh, tears, scared, furious, gross, sneer ...), and actions: blink wink smirk frown browraise "
    "squint pout open lookleft lookright lookup lookdown nod tilt turn. "
    "Show the feeling the text describes; Context and Emotion, when given, steer it."
)

# Written for this prompt; none of them comes from an evaluation set.
EXAMPLES: list[tuple[str, str]] = [
    ("He beams as his team scores in the last minute.", "2 joy 6\n3 beam 9\n6 joy 7\n"),
    ("She reads the note again and begins to weep.", "4 sad 5\n5 weep 8 lookdown 4\n6 sadness 6\n"),
    ("The floor creaks behind him in the dark house.", "2 fear 7\n3 scared 9\n5 fear 6\n"),
    ("'You lost it again?' she snaps at him.", "3 anger 6\n3 furious 9\n5 anger 7\n"),
    ("He sniffs the milk carton and pulls back.", "2 disgust 6\n4 gross 9\n5 disgust 5\n"),
    ("A balloon pops right next to her ear.", "1 surprise 9 blink 9\n4 startled 7\n5 surprise 4\n"),
    ("He rolls his eyes at the rookie's question.", "3 contempt 5\n4 scorn 8\n5 contempt 6\n"),
    ("She looks at the old photograph.\nContext: her brother died last week.",
     "4 sadness 6\n5 grief 8\n6 sadness 6\n"),
    ("He reads the next page of the report.\nEmotion: anger", "3 anger 5\n4 annoyed 8\n5 anger 6\n"),
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


def gemma(role: str, text: str) -> str:
    return f"<start_of_turn>{'model' if role == 'assistant' else 'user'}\n{text}<end_of_turn>\n"


# chat templates: how a turn is written, and how the assistant's turn opens
TEMPLATES = {"chatml": (chatml, "<|im_start|>assistant\n"), "gemma": (gemma, "<start_of_turn>model\n")}


def template_for(chat_template: str) -> str:
    """The template name for a model, from its GGUF ``tokenizer.chat_template`` text."""
    return "gemma" if "<start_of_turn>" in chat_template else "chatml"


def prefix(system: str = SYSTEM, examples: list[tuple[str, str]] | None = None, template: str = "chatml") -> str:
    examples = EXAMPLES if examples is None else examples
    turn = TEMPLATES[template][0]
    if template == "gemma":  # no system role: the instructions open the first user turn
        if not examples:
            return turn("user", system) + turn("assistant", "Ready.")
        (text, answer), rest = examples[0], examples[1:]
        out = turn("user", f"{system}\n\n{text}") + turn("assistant", answer)
    else:
        out, rest = turn("system", system), examples
    for text, answer in rest:
        out += turn("user", text) + turn("assistant", answer)
    return out


def line_part(req: LineRequest, template: str = "chatml") -> str:
    turn, opening = TEMPLATES[template]
    return turn("user", _user(req)) + opening


def build(req: LineRequest, system: str = SYSTEM, examples: list[tuple[str, str]] | None = None,
          template: str = "chatml") -> str:
    return prefix(system, examples, template) + line_part(req, template)


# -- clauses ---------------------------------------------------------------------------------------
# A connective that starts a new emotional beat. Bare "suddenly" or "later" only counts after a
# comma, semicolon or "but"/"and", so "she is suddenly pale" stays one clause. "after" is left
# alone: "X after Y" tells Y first but shows X.
_CONNECTIVE = re.compile(
    r"""(?ix)
    \s*(?:
        [,;:]?\s*(?:\band\s+|\bbut\s+)?\bthen\b                       # ", then" / "and then" / "but then"
      | [,;:]\s*(?:he|she|they|I|we|you|it)\s+then\b
      | (?:[,;:]\s*(?:(?:he|she|they|I|we|you|it)\s+)?|\s+but\s+|\s+and\s+)
        (?:all\s+of\s+a\s+sudden|suddenly|abruptly|soon|moments?\s+later|a\s+moment\s+later|seconds?\s+later|later|afterwards|finally|eventually|now)\b
      | [,;:]?\s*\b(?:but|yet)\s+(?:soon|quickly|slowly)\b
      | [,;:]?\s*\buntil\b
      | [,;:]?\s*\bbefore\b
      | [,;:]?\s*\bonly\s+to\b
      | [,;:]?\s*\b(?:which|that)\s+(?:turns|gives\s+way|gave\s+way|fades|melts|shifts|changes)\s+(?:in)?to\b
      | [,;:]?\s*\b(?:turning|giving\s+way|fading|melting|shifting)\s+(?:in)?to\b
      | \s+(?:fades|melts|shifts|dissolves|gives\s+way)\s+(?:in)?to\b
      | \s+[-\u2013\u2014]{1,2}\s+                                      # a dash
      | (?<=[.!?])\s+(?=\()                                              # a new stage direction
    )\s*""")
_LEAD = re.compile(
    r"(?i)^\s*(?:at\s+first|first|initially|in\s+the\s+beginning|for\s+a\s+moment|at\s+the\s+start)\b[,\s]*")
_WORDS = re.compile(r"[A-Za-z']+")


def clauses(text: str, most: int = 3) -> list[str]:
    """The text's emotional beats in order; one item when it tells no sequence.
    More than ``most`` beats fold into the last one.
    """
    parts = [_LEAD.sub("", p).strip(" ,;:.-") for p in _CONNECTIVE.split(text)]
    out = [p for p in parts if _WORDS.search(p)]
    if len(out) > most:
        out = out[: most - 1] + [" ".join(out[most - 1:])]
    return out or [text.strip()]

