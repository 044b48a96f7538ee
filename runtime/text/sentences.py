"""A character's turn -> sentences, whole or arriving in pieces (sans I/O).

Each sentence can carry its own feeling ("Ha! You fell right in the mud! Wait, are you bleeding?"),
so the face is driven a sentence at a time. The rules, for dialogue:

* a sentence ends at a run of ``. ! ? …`` ("?!", "...", "!!!") and any closing quotes or brackets
  after it, when whitespace (or the end of the text) follows: "Hey!You" and "3.5" do not end;
* a newline always ends one (chat replies and piped lines put paragraphs on lines of their own);
* a single "." after a title (Mr. Dr. St.), "e.g." / "i.e." / "vs." or an initial ("J. R. R.") does
  not end; after "etc.", "a.m." or another dotted abbreviation it ends only before a capital;
* an ellipsis before a small letter is a pause ("My watch... it's broken"), and so is a repeated
  word ("I... I can't"); before a new capitalised word it ends ("I thought... Wait, what?");
* a single dash (—, --, a spaced – or -) in a sentence turns the thought there ("Wait — are you
  bleeding?"); two are a parenthesis ("The man — tall, dark — walked in") and cut nothing;
* a sentence longer than ``max_len`` characters (a stream with no punctuation) is cut at its last
  space before that, so the face never waits on an end mark that does not come.

Nothing is lost: the sentences are the text's own characters, in order, with only the whitespace
between them left out. :class:`SentenceBuffer` gives the same sentences from any chunking of the
text, each as soon as the text after it decides that it is complete.
"""

from __future__ import annotations

import re

MAX_SENTENCE = 300  # characters; a longer run without an end mark is cut at a space

_MARK = re.compile(r"\n|[.!?\u2026]+")
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019\u203a")
_WORD_BEFORE = re.compile(r"[A-Za-z][A-Za-z.]*$")
# a single "." after these never ends a sentence
_NEVER = frozenset("mr mrs ms mx dr prof sr jr st mt capt gen lt col sgt rev hon fr sen gov pres "
                   "messrs mme mlle e.g i.e cf vs viz approx al".split())
# after these (and any dotted abbreviation such as a.m. or U.S.) only a capital starts a sentence
_CASED = frozenset("etc inc ltd co corp".split())
_DASH = re.compile(r"(?:[\u2014\u2015]|-{2,}|(?<=\s)[\u2013-](?=\s))[\"')\]}\u00bb\u201d\u2019]*")


def _word_before(text: str, i: int) -> str:
    m = _WORD_BEFORE.search(text, 0, i)
    return m.group().strip(".") if m else ""


def _word_after(text: str, k: int, final: bool, whole: bool = True) -> str | None:
    """The word after whitespace at ``k`` ("" when no letter comes next; only its first letter
    unless ``whole``); None = the text so far cannot tell."""
    n = len(text)
    while k < n and text[k].isspace():
        k += 1
    if k == n:
        return "" if final else None
    if not whole or text[k].islower():
        return text[k] if text[k].isalpha() else ""
    j = k
    while j < n and (text[j].isalpha() or text[j] in "'\u2019"):
        j += 1
    if j == n and not final:
        return None
    return text[k:j]


def _decide(text: str, m: re.Match, final: bool) -> tuple[bool | None, int]:
    """Does the mark run ``m`` end a sentence? (True / False / None = the text after it decides),
    and where that sentence would end (after any closing quotes or brackets)."""
    run, n = m.group(), len(text)
    if run == "\n":
        return True, m.start()
    k = m.end()
    while k < n and text[k] in _CLOSERS:
        k += 1
    if k == n:
        return (True if final else None), k
    if not text[k].isspace():  # "3.5", "U.S.", "Hey!You", "Wait...what"
        return False, k
    if run == ".":
        word = _word_before(text, m.start())
        low = word.lower()
        if low in _NEVER or (len(word) == 1 and word.isupper() and word != "I"):
            return False, k
        if low in _CASED or "." in word:
            after = _word_after(text, k, final, whole=False)
            if after is None:
                return None, k
            return (not after or after[0].isupper()), k
        return True, k
    if all(c in ".\u2026" for c in run):  # an ellipsis: a pause unless a new sentence starts
        after = _word_after(text, k, final)
        if after is None:
            return None, k
        if after and (after[0].islower() or after.lower() == _word_before(text, m.start()).lower()):
            return False, k
        return True, k
    return True, k


def _forced(text: str, start: int, max_len: int) -> int:
    """Where a sentence with no end mark in its first ``max_len`` characters is cut: its last space."""
    body = start + len(text[start:]) - len(text[start:].lstrip())
    cut = text.rfind(" ", body + 1, start + max_len)
    return cut if cut > body else start + max_len


def _spans(text: str, final: bool, max_len: int) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each sentence the text decides, and where the undecided rest begins."""
    spans: list[tuple[int, int]] = []
    start = pos = 0
    n = len(text)
    while True:
        m = _MARK.search(text, pos)
        i = m.start() if m else n
        while i - start > max_len and text[start:i].strip():  # a long run: cut it at a space
            cut = _forced(text, start, max_len)
            spans.append((start, cut))
            start = pos = cut
        if m is None:
            break
        verdict, end = _decide(text, m, final)
        if verdict is None:
            break
        if verdict:
            if text[start:end].strip():
                spans.append((start, end))
            start = end
            pos = max(m.end(), end)
        else:
            pos = m.end()
    if final and text[start:].strip():
        spans.append((start, n))
        start = n
    return spans, start


def _pieces(text: str) -> list[str]:
    """One sentence's text -> itself, or two pieces where a single dash turns the thought."""
    s = text.strip()
    dashes = list(_DASH.finditer(s))
    if len(dashes) == 1:
        d = dashes[0]
        head, tail = s[:d.end()].strip(), s[d.end():].strip()
        if any(c.isalnum() for c in s[:d.start()]) and any(c.isalnum() for c in tail):
            return [head, tail]
    return [s]


def split_sentences(text: str, max_len: int = MAX_SENTENCE) -> list[str]:
    """The sentences of a whole turn, in order, each stripped of the whitespace around it."""
    spans, _ = _spans(text, True, max_len)
    return [p for a, b in spans for p in _pieces(text[a:b])]


class SentenceBuffer:
    """Text in chunks (any split) -> each sentence once the text after it shows it is complete.

    A sentence is complete when its end mark is followed by whitespace or more text; a mark at the
    end of a chunk waits for the next chunk or :meth:`close`. Only the undecided tail is kept, and
    that tail never grows past ``max_len`` characters without a sentence being cut from it.
    """

    def __init__(self, max_len: int = MAX_SENTENCE) -> None:
        self.max_len = max_len
        self._buf = ""

    @property
    def pending(self) -> str:
        """Text received but not yet part of a complete sentence."""
        return self._buf

    def feed(self, chunk: str) -> list[str]:
        self._buf += chunk
        spans, rest = _spans(self._buf, False, self.max_len)
        out = [p for a, b in spans for p in _pieces(self._buf[a:b])]
        self._buf = self._buf[rest:]
        return out

    def close(self) -> list[str]:
        """The end of the text: whatever is left is the last sentence."""
        spans, _ = _spans(self._buf, True, self.max_len)
        out = [p for a, b in spans for p in _pieces(self._buf[a:b])]
        self._buf = ""
        return out
