"""The speech layer: alignment to word timings, robustness to odd text, composition in range."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import channels as C
from runtime.animate import phonemes
from runtime.animate.speech import MASK, SpeechPlan, compose, validate_words

FPS = 60.0
JAW, CLOSE, PUCKER = C.INDEX["JawOpen"], C.INDEX["MouthClose"], C.INDEX["MouthPucker"]


def lips(frames: np.ndarray) -> np.ndarray:
    """JawOpen - MouthClose: <= 0.05 means the lips touch, >= 0.15 an open mouth."""
    return frames[:, JAW] - frames[:, CLOSE]


# A TTS-style timing with irregular pace and pauses: the mouth must follow it, not its own model.
TIMED = [
    {"word": "Maybe", "start": 0.00, "end": 0.31},
    {"word": "the", "start": 0.31, "end": 0.40},
    {"word": "big", "start": 0.40, "end": 0.58},
    {"word": "bad", "start": 0.58, "end": 0.95},
    {"word": "pop", "start": 1.40, "end": 1.62},
    {"word": "band", "start": 1.62, "end": 2.10},
    {"word": "plays", "start": 2.10, "end": 2.33},
    {"word": "at", "start": 2.33, "end": 2.45},
    {"word": "my", "start": 2.45, "end": 2.60},
    {"word": "party", "start": 2.60, "end": 3.20},
]


@pytest.mark.parametrize("offset", [0.0, 0.35])
def test_lips_close_at_bilabial_word_starts_and_open_on_open_vowels(offset: float) -> None:
    plan = SpeechPlan.from_text(words=TIMED, start=offset)
    assert plan.source == "words"
    frames = plan.render(FPS)
    d = lips(frames)
    t = np.arange(len(frames)) / FPS
    for w in TIMED:
        start, end = w["start"] + offset, w["end"] + offset
        if w["word"][0].lower() in "pbm":
            near = np.abs(t - start) <= 1.0 / FPS + 1e-9
            assert d[near].min() <= 0.05, f"lips not closed within a frame of {w['word']!r} at {start}"
        inside = (t >= start) & (t <= end)
        pron = [phonemes.split(p) for p in phonemes.pronounce(w["word"])]
        if any(b in ("AA", "AE", "AO", "AY", "AW") and s > 0 for b, s in pron):
            assert d[inside].max() >= 0.15, f"mouth not open inside {w['word']!r}"
    # before the audio starts and in the 0.45 s pause the mouth is not talking
    assert plan.weight(FPS)[t < offset - 0.15].max(initial=0.0) == 0.0
    pause = (t > 0.95 + offset + 0.05) & (t < 1.40 + offset - 0.05)
    assert d[pause].max() < 0.1
    assert plan.words[4].start == pytest.approx(1.40 + offset)


def test_a_mistimed_mouth_fails_the_check() -> None:
    """The check above can fail: shift the timings by 100 ms and the lips miss the word starts."""
    late = [{**w, "start": w["start"] + 0.1, "end": w["end"] + 0.1} for w in TIMED]
    d = lips(SpeechPlan.from_text(words=late).render(FPS))
    t = np.arange(len(d)) / FPS
    misses = 0
    for w in TIMED:
        if w["word"][0].lower() in "pbm":
            near = np.abs(t - w["start"]) <= 1.0 / FPS + 1e-9
            misses += d[near].min() > 0.05
    assert misses >= 3


def test_start_offset_shifts_the_track() -> None:
    a = SpeechPlan.from_text("Bob bought a map.").render(FPS)
    b = SpeechPlan.from_text("Bob bought a map.", start=0.5).render(FPS)
    assert np.allclose(b[30:30 + len(a)][:, MASK], a[:, MASK], atol=1e-5)
    assert np.allclose(b[:20][:, MASK], 0.0, atol=1e-3)


def test_duration_and_rate_set_the_length() -> None:
    text = "The quick brown fox jumps over the lazy dog, twice."
    fixed = SpeechPlan.from_text(text, duration=2.5, start=0.25)
    assert fixed.source == "duration"
    assert fixed.end == pytest.approx(2.75)
    assert fixed.phones[0].start == pytest.approx(0.25)
    normal = SpeechPlan.from_text(text)
    fast = SpeechPlan.from_text(text, rate=2.0)
    assert normal.source == "rate" and 1.5 < normal.end < 5.0  # about 165 words a minute
    assert fast.end == pytest.approx(normal.end / 2)
    # the comma is a pause: a gap between "dog" and "twice"
    dog, twice = normal.words[-2], normal.words[-1]
    assert twice.start - dog.end > 0.1


def test_sample_matches_render() -> None:
    plan = SpeechPlan.from_text("Purple monkeys whistle, boo!", start=0.1)
    frames = plan.render(FPS)
    w = plan.weight(FPS)
    out = np.full(C.COUNT, np.nan, dtype=np.float32)
    for i in range(0, len(frames), 7):
        wi = plan.sample(i / FPS, out)
        assert np.allclose(out[MASK], frames[i, MASK], atol=1e-6)
        assert wi == pytest.approx(float(w[i]), abs=1e-6)
    assert np.isnan(frames[:, ~MASK]).all()
    assert np.isfinite(frames[:, MASK]).all()


def test_coarticulation_rounds_a_consonant_before_a_rounded_vowel() -> None:
    def pucker_at_t(word: str) -> float:
        plan = SpeechPlan.from_text(words=[{"word": word, "start": 0.0, "end": 0.3}])
        t_phone = plan.phones[0]
        assert t_phone.phoneme == "T"
        out = np.zeros(C.COUNT, dtype=np.float32)
        plan.sample((t_phone.start + t_phone.end) / 2, out)
        return float(out[PUCKER])

    assert pucker_at_t("two") > pucker_at_t("tea") + 0.1


@pytest.mark.parametrize("text", ["", "   ", "!!! ... ,", "Zxqvbrt blorptastic NPC", "café naïve 42 3.5 $5 2nd",
                                  "x", "mmm", "🙂", "a-b-c", "1,2,3", "hello\nworld\t!"])
def test_unknown_words_and_empty_text_do_not_fail(text: str) -> None:
    plan = SpeechPlan.from_text(text)
    frames = plan.render(FPS)
    assert frames.shape[1] == C.COUNT and len(frames) >= 1
    assert np.isfinite(frames[:, MASK]).all()
    weights = plan.weight(FPS)
    assert np.isfinite(weights).all() and len(weights) == len(frames)
    if not plan.phones:
        assert plan.duration == 0.0 and weights.max() == 0.0


def test_unknown_words_still_move_the_mouth() -> None:
    plan = SpeechPlan.from_text("Blorptastic zibbermop")
    assert [w.text for w in plan.words] == ["Blorptastic", "zibbermop"]
    d = lips(plan.render(FPS))
    assert d.max() > 0.15 and d.min() <= 0.05  # opens on vowels, closes on b/m/p


def test_numbers_are_spelled_out() -> None:
    words = [t.text for t in phonemes.tokenize("It costs $42.50, 1st of 1,000 in 1999!")]
    assert words[:2] == ["It", "costs"]
    assert "forty" in words and "two" in words and "dollars" in words and "first" in words
    assert ["nineteen", "ninety", "nine"] == words[-4:-1]
    assert words[-1] == "!"
    assert phonemes.spell_number("2024") == ["twenty", "twenty", "four"]
    assert phonemes.spell_number("1000000") == ["one", "million"]


def test_words_timing_with_empty_or_punctuation_words_is_accepted() -> None:
    plan = SpeechPlan.from_text(words=[{"word": "Hi", "start": 0.0, "end": 0.2},
                                       {"word": ",", "start": 0.2, "end": 0.2},
                                       {"word": "you!", "start": 0.5, "end": 0.7}])
    assert [w.text for w in plan.words] == ["Hi", ",", "you!"]
    assert plan.end == pytest.approx(0.7)
    assert SpeechPlan.from_text(words=[]).duration == 0.0


@pytest.mark.parametrize(("words", "message"), [
    ("hello", r"words must be a list"),
    ([["hello", 0, 1]], r"words\[0\] must be an object"),
    ([{"word": "hi", "start": 0.0}], r"words\[0\] lacks 'end'"),
    ([{"start": 0.0, "end": 1.0}], r"words\[0\] lacks 'word'"),
    ([{"word": 5, "start": 0.0, "end": 1.0}], r"words\[0\]\.word must be a string"),
    ([{"word": "hi", "start": "0", "end": 1.0}], r"words\[0\]\.start must be a number"),
    ([{"word": "hi", "start": 0.0, "end": float("nan")}], r"words\[0\]\.end must be finite"),
    ([{"word": "hi", "start": -0.5, "end": 1.0}], r"words\[0\]\.start is negative"),
    ([{"word": "hi", "start": 0.5, "end": 0.2}], r"words\[0\] \('hi'\) ends \(0\.2\) before it starts"),
    ([{"word": "a", "start": 1.0, "end": 1.2}, {"word": "b", "start": 0.5, "end": 0.7}],
     r"words\[1\] \('b'\) starts at 0\.5, before words\[0\]"),
    ([{"word": "hi", "start": True, "end": 1.0}], r"words\[0\]\.start must be a number"),
])
def test_malformed_word_timings_are_rejected_clearly(words: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpeechPlan.from_text("hi", words=words)
    with pytest.raises(ValueError, match=message):
        validate_words(words)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"duration": 0}, "duration must be positive"),
    ({"duration": "2"}, "duration must be a number"),
    ({"start": float("inf")}, "start must be finite"),
    ({"rate": -1}, "rate must be positive"),
])
def test_bad_duration_start_rate_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpeechPlan.from_text("hello", **kwargs)


def test_composition_keeps_channels_in_range_and_keeps_the_smile() -> None:
    rng = np.random.default_rng(7)
    plan = SpeechPlan.from_text("Happy to see you, pal! We could maybe meet at the beach.", start=0.1)
    speech = plan.render(FPS)
    n = len(speech)
    expr = rng.uniform(C.LOW, C.HIGH, size=(n, C.COUNT)).astype(np.float32)
    expr[: n // 2] = np.where(rng.random((n // 2, C.COUNT)) < 0.5, C.LOW, C.HIGH)  # the extremes
    smile = list(C.indices("MouthSmile"))
    expr[:, smile] = 0.6
    out = compose(expr, speech, plan.weight(FPS))
    assert out.dtype == np.float32 and out.shape == (n, C.COUNT)
    assert np.isfinite(out).all()
    assert (out >= C.LOW).all() and (out <= C.HIGH).all()
    assert np.array_equal(out[:, ~MASK], expr[:, ~MASK])  # brows, eyes, cheeks, head: the expression's
    assert (out[:, smile] >= 0.6 - 1e-6).all()  # smiling while talking
    talking = plan.weight(FPS) == 1.0
    assert talking.sum() > n // 2
    assert np.allclose(out[talking, JAW], speech[talking, JAW], atol=1e-6)  # the jaw is the speech's
    # out of range inputs are clamped too
    wild = compose(np.full(C.COUNT, 3.0, np.float32), np.full(C.COUNT, -2.0, np.float32), 1.0)
    assert (wild >= C.LOW).all() and (wild <= C.HIGH).all()


def test_apply_at_streams_what_apply_renders() -> None:
    plan = SpeechPlan.from_text("Bubbles pop.", start=0.2)
    n = plan.frames(FPS) + 10
    expr = np.tile(np.linspace(0, 1, C.COUNT, dtype=np.float32), (n, 1))
    whole = plan.apply(expr, FPS)
    scratch = np.full(C.COUNT, np.nan, dtype=np.float32)
    for i in (0, 5, 17, 30, n - 1):
        frame = expr[i].copy()
        plan.apply_at(i / FPS, frame, scratch)
        assert np.allclose(frame, whole[i], atol=1e-6)


def test_espeak_voice_gives_word_timings_the_mouth_follows(tmp_path) -> None:
    from runtime import voice

    if not voice.available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    spoken = voice.speak("I'm Bob, and my mom bakes pies.", wpm=175)
    assert [w["word"] for w in spoken.words] == ["I'm", "Bob", "and", "my", "mom", "bakes", "pies"]
    starts = [w["start"] for w in spoken.words]
    assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in spoken.words)
    assert spoken.words[-1]["end"] <= spoken.duration + 1e-3 and spoken.duration > 1.0
    wav = spoken.write_wav(tmp_path / "line.wav")
    import wave

    with wave.open(str(wav)) as w:
        assert w.getframerate() == spoken.sample_rate and w.getnframes() == len(spoken.pcm) // 2
    plan = SpeechPlan.from_text(words=spoken.words, start=0.25)
    d = lips(plan.render(FPS))
    t = np.arange(len(d)) / FPS
    for w in spoken.words:
        if w["word"][0].lower() in "bmp":
            near = np.abs(t - (w["start"] + 0.25)) <= 1.0 / FPS + 1e-9
            assert d[near].min() <= 0.05, w


def test_load_words_from_file_and_text(tmp_path) -> None:
    from runtime.animate.speech import load_words

    good = tmp_path / "words.json"
    good.write_text('{"words": [{"word": "hi", "start": 0.0, "end": 0.2}]}')
    assert load_words(good) == [{"word": "hi", "start": 0.0, "end": 0.2}]
    assert load_words(str(good)) == load_words('[{"word": "hi", "start": 0.0, "end": 0.2}]')
    bad = tmp_path / "bad.json"
    bad.write_text('[{"word": "hi", "start": 0.5, "end": 0.1}]')
    with pytest.raises(ValueError, match=r"bad\.json: words\[0\] \('hi'\) ends"):
        load_words(bad)
    with pytest.raises(ValueError, match="is not JSON"):
        load_words('[{"word": ')
    with pytest.raises(ValueError, match="cannot read word timings from .*missing.json"):
        load_words(tmp_path / "missing.json")


def test_apply_holds_the_last_expression_frame_until_the_mouth_rests() -> None:
    plan = SpeechPlan.from_text("Bob", start=0.0)
    expr = np.zeros((3, C.COUNT), np.float32)
    expr[:, C.INDEX["BrowInnerUp"]] = 0.7
    out = plan.apply(expr, FPS)
    assert len(out) == plan.frames(FPS) > 3
    assert np.allclose(out[:, C.INDEX["BrowInnerUp"]], 0.7)
    assert np.allclose(out[-1, MASK], 0.0, atol=1e-3)  # mouth back at rest at the end


def test_any_text_and_any_valid_timings_give_finite_in_range_frames() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(text=st.text(max_size=80), gaps=st.lists(st.floats(0.0, 0.6), max_size=8),
           lens=st.lists(st.floats(0.0, 0.8), min_size=8, max_size=8), start=st.floats(-1.0, 2.0))
    def check(text: str, gaps: list[float], lens: list[float], start: float) -> None:
        words, t = [], 0.0
        for i, gap in enumerate(gaps):
            t += gap
            words.append({"word": text[i * 3: i * 3 + 5] or "mm", "start": t, "end": t + lens[i]})
            t += lens[i]
        for plan in (SpeechPlan.from_text(text, start=start), SpeechPlan.from_text(words=words, start=start)):
            speech = plan.render(FPS)
            assert np.isfinite(speech[:, MASK]).all()
            out = compose(np.full(C.COUNT, 0.5, np.float32), speech, plan.weight(FPS))
            assert np.isfinite(out).all() and (out >= C.LOW).all() and (out <= C.HIGH).all()

    check()
