"""Scorers: scripted (rules, sentiment, data-analysis answers), learned (reward models) and human.

``make_scorer(spec)`` builds one from a name (``"vader"``), a ``{"name": ..., **kwargs}`` dict, a
``"NAME:VALUE"`` shorthand for a scorer with one required argument (``"reward-model:rm/"`` is
``{"name": "reward-model", "path": "rm/"}``, see :data:`SHORTHANDS`), a list of specs or ``(spec, weight)`` pairs
(a :class:`CombinedScorer`), or returns a Scorer object unchanged. :func:`scorer_spec` checks a name/dict spec
without building it (command lines call it before loading anything heavy).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from textgym._optional import load_entry
from textgym.scorers.base import (
    CombinedScorer,
    Scorer,
    ScorerError,
    TokenScorer,
    score_batch,
    score_batch_details,
    score_tokens_batch,
    token_scoring_problem,
)

__all__ = [
    "CombinedScorer", "Scorer", "ScorerError", "TokenScorer", "score_batch", "score_batch_details",
    "score_tokens_batch", "token_scoring_problem", "make_scorer", "register_scorer", "scorer_names", "scorer_spec",
    "SHORTHANDS",
]

# name -> "module:attr" (imported lazily, so heavy scorers cost nothing until used) or a factory
_REGISTRY: dict[str, str | Callable[..., Scorer]] = {
    "keyword": "textgym.scorers.rules:KeywordScorer",
    "regex": "textgym.scorers.rules:RegexScorer",
    "length": "textgym.scorers.rules:LengthScorer",
    "target": "textgym.scorers.rules:TargetMatchScorer",
    "copy": "textgym.scorers.rules:TargetMatchScorer",
    "token-ratings": "textgym.scorers.rules:TokenRatingsScorer",
    "vader": "textgym.scorers.sentiment:VaderSentimentScorer",
    "sentiment": "textgym.scorers.sentiment:VaderSentimentScorer",
    "similarity": "textgym.scorers.similarity:SimilarityScorer",
    "data-analysis": "textgym.scorers.data_analysis:DataAnalysisScorer",
    "sql": "textgym.scorers.sql:SQLScorer",
    "reward-model": "textgym.human.reward_model:RewardModelScorer",
    "human": "textgym.human.live:HumanScorer",
}


# "NAME:VALUE" -> {"name": NAME, ARG: VALUE}: scorers whose one required argument can follow a colon
SHORTHANDS: dict[str, str] = {"reward-model": "path"}


def register_scorer(name: str, factory: str | Callable[..., Scorer]) -> None:
    """Make ``make_scorer(name)`` build ``factory(**kwargs)``; factory may be a ``"module:attr"`` string."""
    _REGISTRY[name] = factory


def scorer_names() -> list[str]:
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Scorer]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(scorer_names())} "
                         "(or pass a Scorer object)")
    return load_entry(_REGISTRY[name])


def _example(name: str, required: list[str]) -> str:
    """How to write scorer ``name`` with its required arguments: ``'reward-model:PATH' or {"name": ...}``."""
    as_dict = json.dumps({"name": name, **{k: k.upper() for k in required}})
    return f"'{name}:{SHORTHANDS[name].upper()}' or {as_dict}" if name in SHORTHANDS else as_dict


def scorer_spec(spec: str | dict[str, Any]) -> str | dict[str, Any]:
    """``spec`` (a name, a ``"NAME:VALUE"`` shorthand or a dict with ``"name"``) checked and in long form: a name
    or a dict. Raises ``ValueError`` saying what to write for an unknown name, a shorthand that does not exist
    or lacks its value, and arguments the scorer does not take or needs (checked against its signature; nothing
    is built)."""
    if isinstance(spec, str) and ":" in spec:
        name, _, value = spec.partition(":")
        if name not in SHORTHANDS:
            forms = ", ".join(f"'{n}:{a.upper()}'" for n, a in SHORTHANDS.items())
            raise ValueError(f"unknown scorer {spec!r}: the 'NAME:VALUE' form exists only as {forms}; else pass a "
                             f"name ({', '.join(scorer_names())}) or a dict with 'name' and the arguments")
        if not value.strip():
            raise ValueError(f"scorer {spec!r} lacks its {SHORTHANDS[name]}: write '{name}:{SHORTHANDS[name].upper()}'")
        spec = {"name": name, SHORTHANDS[name]: value}
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        if not isinstance(spec.get("name"), str):
            raise ValueError(f"a scorer dict needs a 'name' key (a string), got {spec!r}; e.g. "
                             '{"name": "length", "target": 8}')
        name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise TypeError(f"a scorer spec is a name or a dict with 'name', got {type(spec).__name__}")
    factory = _factory(name)  # raises for an unknown name
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check against: the call will tell
        return spec
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        params = sig.parameters
        required = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k != "name"
                    and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        takes = ", ".join(k for k in params if k != "name") or "no arguments"
        hint = f"; write {_example(name, required)}" if required else ""
        raise ValueError(f"scorer {name!r}: {e} (it takes {takes}){hint}") from None
    return spec


def make_scorer(spec: Any) -> Scorer:
    if isinstance(spec, (str, dict)):
        spec = scorer_spec(spec)
        if isinstance(spec, str):
            return _factory(spec)()
        kwargs = dict(spec)
        return _factory(kwargs.pop("name"))(**kwargs)
    if isinstance(spec, (list, tuple)):
        scorers, weights = [], []
        for item in spec:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (int, float)):
                scorers.append(make_scorer(item[0]))
                weights.append(float(item[1]))
            else:
                scorers.append(make_scorer(item))
                weights.append(1.0)
        return CombinedScorer(scorers, weights)
    if hasattr(spec, "score"):
        return spec
    raise TypeError(f"cannot make a scorer from {spec!r}: pass a name ({', '.join(scorer_names())}), a dict "
                    "with 'name', a list of those, or an object with a score(samples) method")
