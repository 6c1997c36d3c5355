"""``import textgym`` stays light (gymnasium + numpy), and a missing optional module names its extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from textgym._optional import require


def test_import_textgym_loads_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "import textgym, textgym.envs.vector, textgym.scorers, textgym.prompts, textgym.tokenizers\n"
        "import gymnasium as gym\n"
        "env = gym.make('TextGen-Copy-v0')\n"  # a toy id: char tokenizer, no model
        "env.reset(seed=0)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate', 'gguf') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"import textgym loaded heavy modules: {out.stdout.strip()}"


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # an entry of None makes `import peft` raise ImportError
    with pytest.raises(ImportError, match=r"peft is not installed \(needed for LoRA\).*pip install 'textgym\[lora\]'"):
        require("peft", "LoRA")
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    with pytest.raises(ImportError, match="pip install vaderSentiment"):
        require("vaderSentiment")
    with pytest.raises(ImportError, match=r"textgym\[all\]"):
        require("surely_not_a_module_textgym_needs")


def test_require_returns_the_module():
    assert require("json").dumps([1]) == "[1]"
