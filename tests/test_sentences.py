"""The text stage: a turn -> sentences, whole or in chunks; any chunking gives the same sentences."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.text import SentenceBuffer, split_sentences

CASES = [
    ("Ha! You fell right in the mud! Wait, are you bleeding?",
     ["Ha!", "You fell right in the mud!", "Wait, are you bleeding?"]),
    ("Wait — are you bleeding?", ["Wait —", "are you bleeding?"]),
    ("Wait--are you bleeding?", ["Wait--", "are you bleeding?"]),
    ("I told you - never again!", ["I told you -", "never again!"]),
    ("The man — tall, dark — walked in.", ["The man — tall, dark — walked in."]),
    ("A well-known trick.", ["A well-known trick."]),
    ("Pages 3–5 are missing.", ["Pages 3–5 are missing."]),
    ("What?! You did WHAT?!", ["What?!", "You did WHAT?!"]),
    ("No way... Really?", ["No way...", "Really?"]),
    ("No way… Really?", ["No way…", "Really?"]),
    ("My grandfather's watch... it's broken beyond repair.", ["My grandfather's watch... it's broken beyond repair."]),
    ("Is that... is that really you?", ["Is that... is that really you?"]),
    ("I... I can't do this.", ["I... I can't do this."]),
    ('"Get out!" He slammed the door.', ['"Get out!"', "He slammed the door."]),
    ("(She sighs.) Fine. Whatever.", ["(She sighs.)", "Fine.", "Whatever."]),
    ("He said 'stop.' Then he left.", ["He said 'stop.'", "Then he left."]),
    ("Mr. Smith and Dr. Jones are here. Mrs. Lee too.", ["Mr. Smith and Dr. Jones are here.", "Mrs. Lee too."]),
    ("Bring fruit, e.g. apples. And bread.", ["Bring fruit, e.g. apples.", "And bread."]),
    ("Apples, pears, etc. Then we left.", ["Apples, pears, etc.", "Then we left."]),
    ("Apples, pears, etc. and more.", ["Apples, pears, etc. and more."]),
    ("Meet me at 5 p.m. sharp. Don't be late.", ["Meet me at 5 p.m. sharp.", "Don't be late."]),
    ("Meet me at 5 p.m. Don't be late.", ["Meet me at 5 p.m.", "Don't be late."]),
    ("It costs 3.50 dollars. Cheap!", ["It costs 3.50 dollars.", "Cheap!"]),
    ("J. R. R. Tolkien wrote it.", ["J. R. R. Tolkien wrote it."]),
    ("Me? I did it. You didn't.", ["Me?", "I did it.", "You didn't."]),
    ("Hey!You there", ["Hey!You there"]),
    ("No. No, no, no!", ["No.", "No, no, no!"]),
    ("first line\nsecond line", ["first line", "second line"]),
    ("Hello!\n\nHow are you?\n", ["Hello!", "How are you?"]),
    ('"I was—" He stopped.', ['"I was—"', "He stopped."]),
    ("  trailing spaces and no mark  ", ["trailing spaces and no mark"]),
    ("", []),
    ("   \n ", []),
    ("...", ["..."]),
    ("Oh!!! Wow.", ["Oh!!!", "Wow."]),
]


@pytest.mark.parametrize("text, want", CASES)
def test_split_sentences(text, want):
    assert split_sentences(text) == want


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def test_a_long_run_without_an_end_mark_is_cut_at_a_space():
    text = " ".join(["word"] * 200)  # 999 characters, no mark
    got = split_sentences(text, max_len=100)
    assert all(len(s) <= 100 for s in got) and len(got) >= 10
    assert " ".join(got) == text
    assert split_sentences("x" * 250, max_len=100) == ["x" * 100, "x" * 100, "x" * 50]


def test_the_buffer_gives_each_sentence_as_soon_as_it_is_complete():
    b = SentenceBuffer()
    assert b.feed("Hey! You") == ["Hey!"]  # "!" then a space: complete
    assert b.feed(" fell in the mud!") == []  # the mark may go on ("!?") or be closed by a quote
    assert b.feed(" Wait") == ["You fell in the mud!"]
    assert b.feed(", are you bleeding?") == []
    assert b.pending == " Wait, are you bleeding?"
    assert b.close() == ["Wait, are you bleeding?"]
    assert b.close() == [] and b.pending == ""


def test_the_buffer_waits_when_only_the_next_chunk_can_decide():
    b = SentenceBuffer()
    assert b.feed("Dr.") == [] and b.feed(" Who is here. Mr") == ["Dr. Who is here."]
    assert b.feed(". ") == []  # "Mr." never ends a sentence
    assert b.feed("Bean, etc. ") == []  # "etc." ends only before a capital: the next word decides
    assert b.feed("And") == ["Mr. Bean, etc."]
    assert b.feed(" so... ") == []  # an ellipsis before a small letter is a pause
    assert b.feed("on") == [] and b.feed(".\n") == ["And so... on."]


def test_the_buffer_never_holds_more_than_max_len_undecided():
    b = SentenceBuffer(max_len=50)
    out = []
    for _ in range(100):
        out += b.feed("la ")
        assert len(b.pending) <= 50 + 3
    out += b.close()
    assert " ".join(out) == " ".join(["la"] * 100)


_ALPHABET = st.sampled_from(list("abc XYZ.!?…—-–'\"()\n,;:35") + ["...", " — ", "Mr.", "etc.", "e.g.", "I", "p.m."])
_TEXT = st.lists(_ALPHABET, max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT, st.lists(st.integers(0, 200), max_size=12))
def test_any_chunking_gives_the_same_sentences_as_the_whole_text(text, cuts):
    whole = split_sentences(text, max_len=40)
    b = SentenceBuffer(max_len=40)
    got = []
    prev = 0
    for c in sorted(c % (len(text) + 1) for c in cuts):
        got += b.feed(text[prev:c])
        prev = c
    got += b.feed(text[prev:])
    got += b.close()
    assert got == whole
    # every character is kept, in order: only the whitespace between sentences is left out
    assert _squash("".join(whole)) == _squash(text)
    assert all(s and s == s.strip() for s in whole)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_keeps_every_character(text):
    assert _squash("".join(split_sentences(text))) == _squash(text)
    b = SentenceBuffer()
    got = [s for ch in text for s in b.feed(ch)] + b.close()
    assert got == split_sentences(text)
