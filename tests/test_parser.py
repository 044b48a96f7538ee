import numpy as np
import pytest

from runtime import channels
from runtime.keyframes.language import Keyframe, KeyframeError, Language
from runtime.keyframes.parser import KeyframeParser

TEXT = "3 joy 7\n4 surprise 9 blink 9\n5 laugh 9\n6 neutral 0\n"


def parse_split(text: str, step: int, lang: Language) -> list[Keyframe]:
    p = KeyframeParser(lang)
    out = []
    for i in range(0, len(text), step):
        out += p.feed(text[i:i + step])
    return out + p.close()


def test_one_character_at_a_time_equals_all_at_once():
    lang = Language()
    whole = parse_split(TEXT, len(TEXT), lang)
    chars = parse_split(TEXT, 1, lang)
    assert [k.t for k in whole] == [k.t for k in chars] == pytest.approx([0.3, 0.7, 1.2, 1.8])
    for a, b in zip(whole, chars, strict=True):
        assert np.array_equal(a.values, b.values)


def test_keyframe_appears_the_moment_its_line_completes():
    p = KeyframeParser(Language())
    assert p.feed("3 joy") == []
    assert p.feed(" 7") == []
    (kf,) = p.feed("\n4 sur")
    assert kf.items == [("joy", 7)]


def test_pose_is_the_preset_scaled_by_level():
    lang = Language()
    (kf,) = KeyframeParser(lang).feed("0 joy 9\n")
    assert kf.values[channels.INDEX["MouthSmileLeft"]] == pytest.approx(0.85)
    (kf,) = KeyframeParser(lang).feed("0 joy 3\n")
    assert kf.values[channels.INDEX["MouthSmileLeft"]] == pytest.approx(0.85 / 3)


def test_alias_and_raw_channel_names():
    lang = Language()
    a, b = KeyframeParser(lang).feed("1 laugh 9\n2 MouthSmile 9 HeadYaw -9\n")
    assert np.array_equal(a.values, lang.pose([("joy", 9)])[0])
    assert b.values[23] == b.values[24] == 1.0 and b.values[52] == -1.0


def test_unknown_name_is_a_clear_error_and_the_stream_goes_on():
    p = KeyframeParser(Language())
    out = p.feed("1 joy 5\n2 flabbergast 5\n3 fear 5\n")
    assert [k.items[0][0] for k in out] == ["joy", "fear"]
    assert "unknown expression or ARKit channel 'flabbergast'" in p.errors[0]
    with pytest.raises(KeyframeError, match="flabbergast"):
        KeyframeParser(Language(), strict=True).feed("2 flabbergast 5\n")


def test_garbage_lines_are_skipped():
    p = KeyframeParser(Language())
    out = p.feed("hello there\n\n1 joy\n2 joy 5\n" + "x" * 500)
    assert len(out) == 1 and len(p.errors) == 3


def test_out_of_range_values_are_clamped_with_a_warning():
    p = KeyframeParser(Language())
    (kf,) = p.feed("1 JawOpen 12\n")
    assert kf.values[channels.INDEX["JawOpen"]] == 1.0
    assert p.warnings and "clamped" in p.warnings[0]
    (kf,) = p.feed("1 joy 9 laugh 9\n")  # two presets add up past 1
    assert kf.values.max() <= 1.0


def test_times_always_rise():
    p = KeyframeParser(Language())
    out = p.feed("0 joy 5\n0 joy 6\n0 joy 7\n")
    times = [k.t for k in out]
    assert times == sorted(set(times)) and times[0] == 0.0


def test_last_line_without_newline_counts_at_close():
    p = KeyframeParser(Language())
    assert p.feed("2 fear 8") == []
    (kf,) = p.close()
    assert kf.t == pytest.approx(0.2)


def test_bad_preset_in_config_names_it():
    with pytest.raises(KeyframeError, match="preset 'x'"):
        Language(presets={"x": {"NotAChannel": 1.0}})
