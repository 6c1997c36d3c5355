"""The small value types every part of textgym passes around: :class:`Prompt` and :class:`Sample`.

Glossary (also in the README):

- *prompt*: the fixed text (and ids) an episode starts from.
- *completion*: the ids the agent has generated so far (its actions).
- *prefix*: the state, prompt + completion.
- *score*: what a scorer says of a finished (or partial) sample.
- *reward*: what the env pays the agent: score plus penalties (KL, missing EOS, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """A prompt and whatever a scorer needs to judge completions of it (``meta``: answer, target, table ...)."""

    text: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One prompt with one completion, as a scorer sees it.

    ``tokens`` holds the text of each completion token (same length as ``completion_ids``), for per-token
    scorers and per-token human ratings.
    """

    prompt: str
    completion: str
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    tokens: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = True  # False when a per-token scorer is asked about a partial completion

