"""Prompt sources: fixed sets (lists, text files, JSONL files, built-in sets) and generated prompts.

A prompt source draws a :class:`~textgym.core.Prompt` from the env's ``np_random``. Built-in sets ship as
package data in ``textgym/data/`` and are named ``"builtin:NAME"``; generated sources (toy tasks, data
analysis) are named ``"gen:NAME"`` and draw a fresh prompt (with its known answer in ``meta``) each reset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from textgym._optional import load_entry
from textgym.core import Prompt


@runtime_checkable
class PromptSource(Protocol):
    """Draws one prompt from ``rng`` (the env's ``np_random``: all randomness comes from it).

    A generated (unbounded) source should also implement ``max_prompt_tokens(tokenizer) -> int``, the
    longest prompt in tokens, which sizes the observation; finite sets are measured by encoding them.
    """

    def sample(self, rng: np.random.Generator) -> Prompt: ...


class PromptSet:
    """A finite list of prompts, drawn uniformly. ``prompts[i]`` and ``len(prompts)`` work."""

    def __init__(self, prompts: Iterable[str | Prompt | dict[str, Any]], name: str = "prompts") -> None:
        self.prompts = [_to_prompt(p, where=f"{name}[{i}]") for i, p in enumerate(prompts)]
        self.name = name
        if not self.prompts:
            raise ValueError(f"prompt set {name!r} is empty; give at least one prompt")

    def sample(self, rng: np.random.Generator) -> Prompt:
        return self.prompts[int(rng.integers(len(self.prompts)))]

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> Prompt:
        return self.prompts[i]

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def __repr__(self) -> str:
        return f"PromptSet({self.name!r}, n={len(self)})"


def _to_prompt(p: str | Prompt | dict[str, Any], where: str) -> Prompt:
    if isinstance(p, Prompt):
        return p
    if isinstance(p, str):
        return Prompt(p)
    if isinstance(p, dict):
        if "prompt" not in p or not isinstance(p["prompt"], str):
            raise ValueError(f"{where}: a prompt object needs a string field 'prompt', got keys {sorted(p)}")
        meta = dict(p.get("meta") or {})  # either {"prompt", "meta": {...}} or flat extra keys
        meta.update({k: v for k, v in p.items() if k not in ("prompt", "meta")})
        return Prompt(p["prompt"], meta)
    raise TypeError(f"{where}: a prompt must be a str, a dict with 'prompt', or a Prompt, got {type(p).__name__}")


def read_prompt_file(path: str | Path) -> PromptSet:
    """Read prompts from ``.txt`` (one per non-empty line), ``.jsonl`` (one object or string per line) or
    ``.json`` (a list)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist; pass an existing .txt, .jsonl or "
                                "a .json file, 'builtin:NAME' or 'gen:NAME'")
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} is not a file; pass a .txt, .jsonl or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read prompt file {str(path)!r} as UTF-8 text: {e}") from e
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: malformed JSON line ({e.msg}); each line must be a JSON object "
                                 'like {"prompt": "..."} or a JSON string') from None
            items.append(_to_prompt(obj, where=f"{path}:{n}"))
    elif suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(items, list):
            raise ValueError(f"{path}: a .json prompt file must hold a list of prompts")
    elif suffix in (".txt", ""):
        items = [line for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"prompt file {str(path)!r}: unknown format {suffix!r}; use .txt, .jsonl or .json")
    return PromptSet(items, name=str(path))


def builtin_prompt_names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files("textgym.data").iterdir()
                  if p.name.endswith((".jsonl", ".txt")))


def builtin_prompts(name: str) -> PromptSet:
    """A prompt set shipped with textgym (``textgym/data/NAME.jsonl`` or ``.txt``)."""
    for ext in (".jsonl", ".txt"):
        res = resources.files("textgym.data") / f"{name}{ext}"
        if res.is_file():
            with resources.as_file(res) as p:
                s = read_prompt_file(p)
            s.name = f"builtin:{name}"
            return s
    raise ValueError(f"unknown built-in prompt set {name!r}; available: {builtin_prompt_names()}")


# "gen:NAME" -> factory(**kwargs) -> PromptSource, as a "module:attr" string (imported on first use, as the
# scorers' registry does) or a callable. Nothing registers by being imported: add yours with register_prompts.
PROMPT_GENERATORS: dict[str, str | Callable[..., PromptSource]] = {
    "target": "textgym.tasks:TargetTask",
    "copy": "textgym.tasks:LettersTask",
    "reverse": "textgym.tasks:reverse_task",
    "count": "textgym.tasks:CountTask",
    "data-analysis": "textgym.tasks:data_analysis_prompts",
    "sql": "textgym.tasks:sql_prompts",
}


def register_prompts(name: str, factory: str | Callable[..., PromptSource]) -> None:
    """Make ``load_prompts("gen:NAME", **kwargs)`` build ``factory(**kwargs)``; factory may be a ``"module:attr"``
    string (imported when first used)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a prompt generator name is a non-empty string without ':', got {name!r}")
    PROMPT_GENERATORS[name] = factory


def prompt_generator(name: str) -> Callable[..., PromptSource]:
    """The factory registered as ``"gen:NAME"`` (its module imported now)."""
    if name not in PROMPT_GENERATORS:
        raise ValueError(f"unknown prompt generator {name!r}; available: {sorted(PROMPT_GENERATORS)} "
                         "(or register one with textgym.prompts.register_prompts)")
    return load_entry(PROMPT_GENERATORS[name])


def load_prompts(spec: Any, **kwargs: Any) -> PromptSource:
    """Turn a prompt spec into a :class:`PromptSource`.

    ``spec`` is one of: a PromptSource; a list of strings / dicts / Prompts; a path to a ``.txt``,
    ``.jsonl`` or ``.json`` file; ``"builtin:NAME"``; ``"gen:NAME"`` (kwargs go to the generator, and only
    to a generator).
    """
    if kwargs and not (isinstance(spec, str) and spec.startswith("gen:")):
        raise ValueError(f"prompt keyword arguments {sorted(kwargs)} only apply to generated prompts "
                         f"('gen:NAME'), not to {spec!r}")
    if isinstance(spec, str):
        if spec.startswith("builtin:"):
            return builtin_prompts(spec[len("builtin:") :])
        if spec.startswith("gen:"):
            return prompt_generator(spec[len("gen:") :])(**kwargs)
        return read_prompt_file(spec)
    if isinstance(spec, Path):
        return read_prompt_file(spec)
    if hasattr(spec, "sample") and not isinstance(spec, (list, tuple)):
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return PromptSet(spec)
    raise TypeError(f"cannot make prompts from {type(spec).__name__}: pass a list of strings, a file path, "
                    "'builtin:NAME', 'gen:NAME' or a PromptSource")
