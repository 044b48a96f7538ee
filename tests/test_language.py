"""The keyframe language's vocabulary: presets, aliases and the config file that mirrors them."""

import tomllib

import numpy as np
import pytest

from runtime import channels
from runtime.keyframes.grammar import gbnf
from runtime.keyframes.language import DEFAULT_ALIASES, DEFAULT_PRESETS, Language
from runtime.keyframes.parser import KeyframeParser
from tests.conftest import ROOT


def test_config_toml_mirrors_the_default_presets_and_aliases():
    data = tomllib.loads((ROOT / "config.toml").read_text())
    assert data["presets"] == DEFAULT_PRESETS
    assert data["aliases"] == DEFAULT_ALIASES


def test_every_alias_is_a_plain_word_naming_a_preset():
    lang = Language()
    for alias, target in DEFAULT_ALIASES.items():
        assert alias.isalpha() and alias.islower(), alias
        assert alias not in DEFAULT_PRESETS, f"{alias} shadows a preset"
        assert target in DEFAULT_PRESETS
        np.testing.assert_array_equal(lang.pose([(alias, 9)])[0], lang.pose([(target, 9)])[0])


def test_each_emotion_has_a_vocabulary_of_its_own():
    per = {}
    for alias, target in DEFAULT_ALIASES.items():
        per.setdefault(target, []).append(alias)
    for emotion in ("joy", "sadness", "surprise", "fear", "anger", "disgust", "contempt"):
        assert len(per[emotion]) >= 8, emotion


def test_alias_lines_parse_to_the_preset_pose():
    lang = Language()
    keys = KeyframeParser(lang, strict=True).feed("2 laugh 9\n3 tears 9\n4 terrified 9 blink 9\n")
    smile = channels.INDEX["MouthSmileLeft"]
    frown = channels.INDEX["MouthFrownLeft"]
    stretch = channels.INDEX["MouthStretchLeft"]
    assert keys[0].values[smile] > 0.8 and keys[1].values[frown] > 0.6 and keys[2].values[stretch] > 0.6
    assert [k.t for k in keys] == pytest.approx([0.2, 0.5, 0.9])


def test_grammar_offers_every_alias():
    g = gbnf(Language())
    for alias in DEFAULT_ALIASES:
        assert f'"{alias}"' in g
