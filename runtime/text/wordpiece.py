"""BERT's WordPiece tokenizer (uncased), in plain Python: text -> token ids for the feeling model.

The same steps as Hugging Face's ``BertTokenizer`` with ``do_lower_case`` (what MiniLM was trained
with): clean and lower-case the text, strip accents, split on whitespace and punctuation, then cut
each word into the longest vocabulary pieces, ``##`` marking a piece inside a word. Written out here
so the runtime needs no tokenizers package; ``tests/test_feeling.py`` checks it against
``transformers`` where that is installed.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_words(text: str) -> list[str]:
    """Lower-cased, accent-free words and single punctuation marks."""
    out: list[str] = []
    buf: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch.isspace():
            ch = " "
        elif _is_cjk(cp):
            ch = f" {ch} "
        buf.append(ch)
    for word in "".join(buf).lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punct(ch):
                if piece:
                    out.append(piece)
                    piece = ""
                out.append(ch)
            else:
                piece += ch
        if piece:
            out.append(piece)
    return out


class WordPiece:
    """Token ids for one text or a (text, heard) pair, as BERT's two-segment input."""

    def __init__(self, vocab_path: str | Path, max_chars: int = 100) -> None:
        words = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        self.vocab = {w: i for i, w in enumerate(words) if w}
        # MPNet's vocabulary (BERT's, plus RoBERTa's specials) marks a pair as <s> a </s></s> b </s>
        self.pair_style = "roberta" if "<s>" in self.vocab else "bert"
        if self.pair_style == "roberta":
            self.cls, self.sep = self.vocab["<s>"], self.vocab["</s>"]
        else:
            self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk = self.vocab["[UNK]"]
        self.max_chars = max_chars
        self._cache: dict[str, list[int]] = {}

    def word_ids(self, word: str) -> list[int]:
        got = self._cache.get(word)
        if got is not None:
            return got
        if len(word) > self.max_chars:
            return [self.unk]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            cur = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                cur = self.vocab.get(sub)
                if cur is not None:
                    break
                end -= 1
            if cur is None:
                ids = [self.unk]
                break
            ids.append(cur)
            start = end
        if len(self._cache) < 50_000:
            self._cache[word] = ids
        return ids

    def ids(self, text: str) -> list[int]:
        return [i for w in basic_words(text) for i in self.word_ids(w)]

    def encode(self, text: str, pair: str = "", max_len: int = 96) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, token_type_ids) as int64 arrays: [CLS] text [SEP] (pair [SEP]), or MPNet's
        <s> text </s> (</s> pair </s>) with types all 0. The pair is cut first, keeping its end (the
        words just before the reply), then the text keeps its start."""
        a = self.ids(text)
        b = self.ids(pair) if pair else []
        roberta = self.pair_style == "roberta"
        room = max_len - 2 - ((2 if roberta else 1) if b else 0)
        if len(a) + len(b) > room:
            keep = min(len(b), max(room // 3, room - len(a)))
            b = b[len(b) - keep:] if keep else []
            a = a[: room - len(b)]
        ids = [self.cls, *a, self.sep]
        types = [0] * len(ids)
        if b and roberta:
            ids += [self.sep, *b, self.sep]
            types += [0] * (len(b) + 2)
        elif b:
            ids += [*b, self.sep]
            types += [1] * (len(b) + 1)
        return np.asarray(ids, dtype=np.int64), np.asarray(types, dtype=np.int64)
