"""GBNF grammar generated from the keyframe language.

It guarantees what the parser needs: a time, one to three ``name level`` items, a newline; rising
times (every delay after the first is at least one step); a bounded number of keyframes; a clean end.
"""

from __future__ import annotations

from runtime import channels
from runtime.keyframes.language import Language


def _alts(words: list[str]) -> str:
    return " | ".join(f'"{w}"' for w in words)


def gbnf(language: Language, *, max_keyframes: int = 8, max_items: int = 2,
         raw_channels: bool = False) -> str:
    """The grammar text for llama.cpp (and any server that accepts GBNF)."""
    words = language.words
    if raw_channels:
        words = words + [n for n in channels.NAMES[: channels.SHAPES]]
    more_items = f'(" " item){{0,{max_items - 1}}}' if max_items > 1 else ""
    return "\n".join([
        f"root ::= first next{{0,{max_keyframes - 1}}}",
        f'first ::= [0-9] " " item {more_items} "\\n"',
        f'next ::= ([1-9] | [1-9] [0-9]) " " item {more_items} "\\n"',
        'item ::= name " " [0-9]',
        f"name ::= {_alts(words)}",
        "",
    ])
