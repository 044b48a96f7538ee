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
    heard: str = ""  # what was just said to the character (read by the feeling classifier)
    # set per beat by generate/beats.py from the feeling model: log p(emotion), and 0..1 how strongly
    prior: dict[str, float] | None = None
    intensity: float | None = None
    spoken: bool = False  # set by beats.py: the line is what a character says, not a stage direction


SYSTEM = (
    "You animate a face. For each line, first say in one word how the person feels, then write "
    "keyframes, one per line: tenths of a second since the previous keyframe, then an expression "
    "and its level 0-9. Expressions: joy sadness surprise fear anger disgust contempt neutral, or a "
    "word for the feeling (laugh, tears, scared, furious, gross, sneer ...), and actions: blink wink "
    "smirk frown browraise squint pout open lookleft lookright lookup lookdown nod tilt turn. "
    "Context and Emotion, when given, steer the feeling."
)
# A model with the LoRA adapter (tools/train_adapter.py) learned the format, so it gets one short
# line instead of SYSTEM and no examples: each training step then costs ~45 tokens, not ~155.
ADAPTER_SYSTEM = "Animate the face: the feeling, then keyframes."

# Nothing is asked after the text: the examples show the pattern. Measured: adding "How does this
# person feel, in one word?" cost 11 tokens a line (~150 ms before the first keyframe) and scored
# lower (dev 0.955 vs 0.977, own held-out set 0.921 vs 0.947). tools/eval_keyframes.py --question
QUESTION = ""
FEEL = "They feel"  # the answer opens with this; the backend picks the word (see FEELINGS)

# The word after "They feel" for each emotion preset: plain adjectives a small model knows well.
# The first listed is the one written back into the answer.
FEELINGS: dict[str, tuple[str, ...]] = {
    "joy": ("happy", "joyful", "amused", "glad", "delighted"),
    "sadness": ("sad", "unhappy", "heartbroken", "miserable"),
    "surprise": ("surprised", "shocked", "amazed", "astonished"),
    "fear": ("scared", "afraid", "frightened", "terrified", "nervous"),
    "anger": ("angry", "furious", "annoyed", "mad"),
    "disgust": ("disgusted", "sick", "grossed"),
    "contempt": ("scornful", "smug", "contemptuous", "superior", "dismissive"),
    "neutral": ("calm", "bored", "fine", "neutral", "relaxed"),
}

# Written for this prompt; none of them comes from an evaluation set.
EXAMPLES: list[tuple[str, str]] = [
    ("He beams as his team scores in the last minute.", "happy", "2 joy 6\n3 beam 9\n6 joy 7\n"),
    ("She reads the note again and begins to weep.", "sad", "4 sad 5\n5 weep 8 lookdown 4\n6 sadness 6\n"),
    ("The floor creaks behind him in the dark house.", "scared", "2 fear 7\n3 scared 9\n5 fear 6\n"),
    ("'You lost it again?' she snaps at him.", "angry", "3 anger 6\n3 furious 9\n5 anger 7\n"),
    ("He sniffs the milk carton and pulls back.", "disgusted", "2 disgust 6\n4 gross 9\n5 disgust 5\n"),
    ("A balloon pops right next to her ear.", "surprised", "1 surprise 9 blink 9\n4 startled 7\n5 surprise 4\n"),
    ("He rolls his eyes at the rookie's question.", "scornful", "3 contempt 5\n4 scorn 8\n5 contempt 6\n"),
    ("She waits for the bus, checking her phone.", "calm", "4 neutral 0\n6 calm 2 blink 9\n5 lookdown 3\n"),
    ("She looks at the old photograph.\nContext: her brother died last week.", "sad",
     "4 sadness 6\n5 grief 8\n6 sadness 6\n"),
    ("He reads the next page of the report.\nEmotion: anger", "annoyed", "3 anger 5\n4 annoyed 8\n5 anger 6\n"),
]


def answer(feeling: str, keyframes: str) -> str:
    """The assistant's whole answer, as the examples (and training data) write it."""
    return f"{FEEL} {feeling}.\n{keyframes}"


def _user(req: LineRequest) -> str:
    parts = [req.text.strip()]
    if req.context.strip():
        parts.append(f"Context: {req.context.strip()}")
    if req.emotion.strip():
        parts.append(f"Emotion: {req.emotion.strip()}")
    if QUESTION:
        parts.append(QUESTION)
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


def prefix(system: str = SYSTEM, examples: list[tuple[str, str, str]] | None = None,
           template: str = "chatml") -> str:
    examples = EXAMPLES if examples is None else examples
    turn = TEMPLATES[template][0]
    shots = [(_user(LineRequest(*_split_example(text))), answer(feel, keys)) for text, feel, keys in examples]
    if template == "gemma":  # no system role: the instructions open the first user turn
        if not shots:
            return turn("user", system) + turn("assistant", "Ready.")
        (text, reply), rest = shots[0], shots[1:]
        out = turn("user", f"{system}\n\n{text}") + turn("assistant", reply)
    else:
        out, rest = turn("system", system), shots
    for text, reply in rest:
        out += turn("user", text) + turn("assistant", reply)
    return out


def _split_example(text: str) -> tuple[str, str, str]:
    """An example's text with its optional "Context:" / "Emotion:" lines as request fields."""
    lines = text.split("\n")
    fields = {"Context": "", "Emotion": ""}
    for extra in lines[1:]:
        key, _, value = extra.partition(": ")
        fields[key] = value
    return lines[0], fields["Context"], fields["Emotion"]


def user_open(template: str = "chatml") -> str:
    """How every line's turn opens ("<|im_start|>user\n"): the same for every line, so the backend
    keeps it in the prefix's KV state and evaluates only the rest of :func:`line_part`."""
    return TEMPLATES[template][0]("user", "\0").split("\0")[0]


# The onset: each clause's first keyframe, written by the runtime the moment the model has chosen
# the feeling (KeyframesConfig.onset), so the face starts moving before the model writes a line.
# (tenths of a second, level) per emotion, from the examples' own onsets and the times the model
# writes without it (3-4 tenths): a startle is fast and high, calm barely moves, sadness is slow,
# the rest rise over 0.3 s to a middle level; the model writes the apex.
ONSET: dict[str, tuple[int, int]] = {"surprise": (1, 7), "neutral": (4, 0), "sadness": (4, 5)}
ONSET_DEFAULT = (3, 5)


def onset_line(emotion: str, intensity: float | None = None) -> str:
    """The onset for ``emotion``; an ``intensity`` (0..1, 0.5 = as written above) scales its level."""
    tenths, level = ONSET.get(emotion, ONSET_DEFAULT)
    if intensity is not None and level:
        level = max(3, min(9, round(level * (0.5 + intensity))))
    return f"{tenths} {emotion} {level}\n"


def level_range(intensity: float | None, floor: int) -> tuple[int, int]:
    """The levels an emotion's keyframes may take for a line's intensity (0..1): a mild line stays
    low ("I'm a bit cross": 4-5), an outburst goes far ("MY sword?!": 8-9). No intensity: floor-9."""
    if intensity is None:
        return floor, 9
    top = max(floor, min(9, round(4 + 5 * intensity)))
    return max(floor, top - 2), top


def line_part(req: LineRequest, template: str = "chatml", feeling: str | None = None) -> str:
    """The line's own turn and the answer's opening: up to "They feel" (the backend picks the word)
    or, with ``feeling``, through the feeling line (the keyframes come next)."""
    turn, opening = TEMPLATES[template]
    out = turn("user", _user(req)) + opening + FEEL
    return out if feeling is None else f"{out} {feeling}.\n"


def build(req: LineRequest, system: str = SYSTEM, examples: list[tuple[str, str, str]] | None = None,
          template: str = "chatml", feeling: str | None = None) -> str:
    return prefix(system, examples, template) + line_part(req, template, feeling)


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
      | [,;]\s*but\b                                                      # ", but" turns the feeling
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

