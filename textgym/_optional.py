"""Lazy imports of heavy optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> (pip extra, pip package) used in the error message
_EXTRAS = {
    "torch": ("hf", "torch==2.13.0"),
    "transformers": ("hf", "transformers"),
    "gguf": ("hf", "gguf"),
    "accelerate": ("hf", "accelerate"),
    "safetensors": ("hf", "safetensors"),
    "vaderSentiment": ("core", "vaderSentiment"),
    "stable_baselines3": ("sb3", "stable-baselines3"),
    "peft": ("lora", "peft"),
    "matplotlib": ("agents", "matplotlib"),
    "tqdm": ("agents", "tqdm"),
    "playwright": ("dev", "playwright"),
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ImportError that says which extra of textgym provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra, pkg = _EXTRAS.get(top, ("all", top))
        what = f" (needed for {purpose})" if purpose else ""
        hint = f"pip install 'textgym[{extra}]'" if extra != "core" else f"pip install {pkg}"
        raise ImportError(f"{module} is not installed{what}. Install it with: {hint}") from e
