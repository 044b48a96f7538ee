"""The weights a model runs in (``model.quant``): the package's file converted once, then cached."""

import logging

import pytest

from runtime import config as config_mod
from runtime.generate import models

# general.file_type of a GGUF: llama.cpp's LLAMA_FTYPE_MOSTLY_* values
Q4_0, Q4_1, Q8_0 = 2, 3, 7


def file_type(path) -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return int(llm.metadata["general.file_type"])
    finally:
        llm.close()


def test_auto_converts_the_default_model_once_and_reuses_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", str(tmp_path))
    shipped = models.resolve("smollm2-135m")
    assert file_type(shipped) == Q4_1
    path = models.weights("smollm2-135m", "auto")
    assert path.parent == tmp_path and path != shipped and file_type(path) == Q8_0
    stamp = path.stat().st_mtime_ns
    assert models.weights("smollm2-135m", "AUTO") == path and path.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then renamed


def test_empty_quant_and_unknown_models_load_the_file_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", str(tmp_path))
    shipped = models.resolve("smollm2-135m")
    assert models.weights("smollm2-135m", "") == shipped
    assert models.weights(str(shipped), "auto") == shipped  # a path: no known fast type
    assert not list(tmp_path.iterdir())


def test_a_conversion_that_cannot_be_made_logs_and_keeps_the_model(tmp_path, monkeypatch, caplog):
    shipped = models.resolve("smollm2-135m")
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", "off")
    with caplog.at_level(logging.WARNING):
        assert models.weights("smollm2-135m", "auto") == shipped
    assert "cannot convert it to Q8_0" in caplog.text
    monkeypatch.setenv("KEYFRAMEFACE_CACHE", str(tmp_path))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert models.weights("smollm2-135m", "Q9_9") == shipped
    assert "unknown weight type" in caplog.text


def test_config_rejects_an_unknown_weight_type(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nquant = "Q9_9"\n')
    with pytest.raises(config_mod.ConfigError, match="model.quant"):
        config_mod.load(p)
    p.write_text('[model]\nquant = "q8_0"\n')
    assert config_mod.load(p).model.quant == "q8_0"
