from runtime.keyframes.grammar import gbnf
from runtime.keyframes.language import Language


def test_grammar_offers_every_word_and_bounds_length():
    lang = Language()
    g = gbnf(lang, max_keyframes=5, max_items=2)
    for w in lang.words:
        assert f'"{w}"' in g
    assert "next{0,4}" in g
    # every delay after the first is at least one step: times rise
    assert 'next ::= ([1-9] | [1-9] [0-9])' in g


def test_grammar_is_accepted_by_llama_cpp():
    import pytest

    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.LlamaGrammar.from_string(gbnf(Language(), raw_channels=True), verbose=False)
