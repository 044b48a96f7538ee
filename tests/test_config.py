import pytest

from runtime.config import Config, ConfigError, load

from .conftest import ROOT


def test_config_toml_states_every_default():
    assert load(ROOT / "config.toml") == Config()


@pytest.mark.parametrize("text,message", [
    ("[model]\nthreads = 'two'\n", "model.threads: expected an integer"),
    ("[model]\nthread = 2\n", "model.thread: unknown setting"),
    ("[animation]\nfps = true\n", "animation.fps: expected a number"),
    ("sinks = 'livelink://x'\n", "sinks: expected a list"),
    ("[presets.joy]\nMouthSmile = 'big'\n", "presets.joy.MouthSmile: expected a number"),
    ("[model\n", "config.toml"),
    ("[animation]\nlead_ms = -1\n", "animation.lead_ms: -1.0 must be at least 0 and under one frame"),
    ("[animation]\nlead_ms = 20\n", "animation.lead_ms: 20.0 must be at least 0 and under one frame"),
    ("[animation]\nrealtime = 100\n", "animation.realtime: 100 must be from 0 to 99"),
    ("[feeling]\nblend = 1.5\n", "feeling.blend: 1.5 must be from 0 to 1"),
    ("[feeling]\naside = -0.2\n", "feeling.aside: -0.2 must be from 0 to 1"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load(p)


def test_missing_keys_take_defaults_and_presets_extend(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[animation]\nfps = 30\n[presets.shy]\nBrowInnerUp = 0.4\n")
    cfg = load(p)
    assert cfg.animation.fps == 30.0 and cfg.model == Config().model
    assert "shy" in cfg.presets and "joy" in cfg.presets


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load("/nonexistent/config.toml")
