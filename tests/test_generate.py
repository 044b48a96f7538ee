"""Text -> keyframe text with the real default model: well-formed, in order, steerable, reusable state."""

import threading

import pytest

from runtime.generate import prompt as prompts
from runtime.generate import stream_keyframes
from runtime.generate.prompt import LineRequest, clauses
from runtime.keyframes.parser import KeyframeParser


@pytest.mark.parametrize("text,expect", [
    ("She laughs at the joke, then suddenly looks worried.", ["She laughs at the joke", "suddenly looks worried"]),
    ("At first he is calm, later he gets furious.", ["he is calm", "he gets furious"]),
    ("He smiles but suddenly freezes in fear.", ["He smiles", "freezes in fear"]),
    ("Her grin fades into a worried frown.", ["Her grin", "a worried frown"]),
    ("(crying) I lost it... (suddenly furious) You took it!",
     ["(crying) I lost it", "(suddenly furious) You took it!"]),
    # one beat: no connective, or one that does not start a new emotion
    ("He is suddenly pale.", ["He is suddenly pale"]),
    ("He grins after winning the match.", ["He grins after winning the match"]),
    ("Footsteps in the attic. Nobody else is home.", ["Footsteps in the attic. Nobody else is home"]),
    ("MARIA (laughing): Stop it!", ["MARIA (laughing): Stop it!"]),
])
def test_clauses(text, expect):
    assert clauses(text) == expect


def test_clauses_fold_beyond_the_limit():
    assert len(clauses("a b, then c d, then e f, then g h", most=3)) == 3


def test_prompt_is_prefix_plus_line_part_in_both_templates():
    req = LineRequest("He waves.", context="at the station", emotion="joy")
    for template in prompts.TEMPLATES:
        text = prompts.build(req, template=template)
        assert text == prompts.prefix(template=template) + prompts.line_part(req, template)
        assert "Context: at the station" in text and "Emotion: joy" in text
    assert prompts.template_for("{{ '<start_of_turn>' + role }}") == "gemma"
    assert prompts.template_for("") == "chatml"


@pytest.fixture(scope="module")
def local(config, language):
    """The real default model in this process (the object under test, not the process wrapper)."""
    from runtime import assemble

    b = assemble.local_backend(config, language)
    yield b
    b.close()


def _run(backend, language, req):
    parser = KeyframeParser(language, strict=True)  # any malformed line fails the test
    text = "".join(piece for piece, _ in backend.stream(req))
    keys = parser.feed(text) + parser.close()
    return text, keys


@pytest.mark.model
def test_sequence_plays_in_order_with_times_continuing(local, language):
    text, keys = _run(local, language, LineRequest("She laughs at the joke, then suddenly looks worried."))
    assert local.stats["clauses"] == 2
    ts = [k.t for k in keys]
    assert len(keys) >= 4 and ts == sorted(ts) and len(set(ts)) == len(ts)
    first = {language.preset(n) for n, _ in keys[0].items}
    last = {language.preset(n) for n, _ in keys[-1].items}
    assert first != last  # the second clause got its own expression
    assert local.stats["first_keyframe_s"] < local.stats["seconds"]


@pytest.mark.model
def test_emotion_field_steers(local, language):
    peaks = {}
    for emotion in ("sadness", "anger"):
        _, keys = _run(local, language, LineRequest("He reads the next line of the letter.", emotion=emotion))
        peaks[emotion] = {language.preset(n) for k in keys for n, _ in k.items}
        assert emotion in peaks[emotion]
    assert peaks["sadness"] != peaks["anger"]


@pytest.mark.model
def test_context_field_steers(local, language):
    got = {}
    for context in ("her dog died this morning and she is heartbroken", "she just won the lottery and is delighted"):
        _, keys = _run(local, language, LineRequest("She looks at the photo on the wall.", context=context))
        got[context] = {language.preset(n) for k in keys for n, _ in k.items}
    sad, happy = got.values()
    assert "sadness" in sad and "joy" in happy


@pytest.mark.model
def test_prefix_state_is_reused_and_lines_do_not_leak(local, language):
    req = LineRequest("The dog runs in circles, barking at the mailman.")
    cuts = local.rewinds["cut"] + local.rewinds["restore"]
    a, _ = _run(local, language, req)
    _run(local, language, LineRequest("Everyone in the room stares at her in silence."))
    b, _ = _run(local, language, req)
    assert a == b  # greedy decoding from the same rewound prefix state
    assert local.rewinds["cut"] + local.rewinds["restore"] >= cuts + 3
    assert local.llm.n_tokens < local.prefix_tokens + 120  # only the line's own tokens were added


@pytest.mark.model
def test_grammar_is_checked_token_first(local, language):
    checks, full = local.grammar.checks, local.grammar.full_checks
    _, keys = _run(local, language, LineRequest("He shrugs and looks at the clock."))
    one = local.grammar.checks - checks
    whole = local.grammar.full_checks - full
    # the whole vocabulary is masked once per keyframe (where the expression word starts) and
    # rarely otherwise; every other token costs one check
    assert one > whole and whole <= 2 * len(keys) + 2


@pytest.mark.model
def test_cancel_stops_mid_line(local, language):
    cancel = threading.Event()
    got = []
    for kf in stream_keyframes(local, KeyframeParser(language), LineRequest("She waves, then cheers."), cancel):
        got.append(kf)
        cancel.set()
    assert len(got) == 1
