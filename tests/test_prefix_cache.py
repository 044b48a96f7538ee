"""The prefix's KV state and calibration cached on disk: same keyframes, a fraction of the start."""

import pytest

from runtime import assemble
from runtime.generate import stream_keyframes
from runtime.generate.prompt import LineRequest
from runtime.keyframes.parser import KeyframeParser

pytestmark = pytest.mark.model


def load(config, language):
    return assemble.local_backend(config, language)


def test_second_start_restores_the_prefix_and_writes_the_same_keyframes(config, language, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", str(tmp_path))
    first = load(config, language)
    assert not first.from_cache and len(list(tmp_path.glob("prefix-*.bin"))) == 1
    second = load(config, language)
    # restored, not recomputed (how much sooner is the bench's to say: the prefix and calibration
    # cost ~0.2-0.5 s, within a load's noise on this box)
    assert second.from_cache and second.cf_log == first.cf_log
    assert first.steps > 0 and second.steps == 0  # no calibration lines evaluated again
    req = LineRequest("She laughs, then looks worried.")
    a = [(k.t, k.items) for k in stream_keyframes(first, KeyframeParser(language), req)]
    b = [(k.t, k.items) for k in stream_keyframes(second, KeyframeParser(language), req)]
    assert a and a == b


def test_a_damaged_cache_is_ignored_and_rewritten(config, language, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", str(tmp_path))
    load(config, language)
    (path,) = tmp_path.glob("prefix-*.bin")
    path.write_bytes(path.read_bytes()[:1000])
    again = load(config, language)
    assert not again.from_cache and "ignoring prefix cache" in caplog.text
    assert load(config, language).from_cache  # rewritten whole
