"""Scorers: scripted (rules, sentiment, data-analysis answers), learned (reward models) and human.

``make_scorer(spec)`` builds one from a name (``"vader"``), a ``{"name": ..., **kwargs}`` dict, a list of
specs or ``(spec, weight)`` pairs (a :class:`CombinedScorer`), or returns a Scorer object unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from textgym.scorers.base import (
    CombinedScorer,
    Scorer,
    ScorerError,
    TokenScorer,
    score_batch,
    score_tokens_batch,
)

__all__ = [
    "CombinedScorer", "Scorer", "ScorerError", "TokenScorer", "score_batch", "score_tokens_batch",
    "make_scorer", "register_scorer", "scorer_names",
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
    "reward-model": "textgym.human.reward_model:RewardModelScorer",
    "human": "textgym.human.live:HumanScorer",
}


def register_scorer(name: str, factory: str | Callable[..., Scorer]) -> None:
    """Make ``make_scorer(name)`` build ``factory(**kwargs)``; factory may be a ``"module:attr"`` string."""
    _REGISTRY[name] = factory


def scorer_names() -> list[str]:
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Scorer]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(scorer_names())} "
                         "(or pass a Scorer object)")
    f = _REGISTRY[name]
    if isinstance(f, str):
        mod, attr = f.split(":")
        f = getattr(importlib.import_module(mod), attr)
    return f


def make_scorer(spec: Any) -> Scorer:
    if isinstance(spec, str):
        return _factory(spec)()
    if isinstance(spec, dict):
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"a scorer dict needs a 'name' key, got {sorted(spec)}")
        name = spec.pop("name")
        return _factory(name)(**spec)
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
