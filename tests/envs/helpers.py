"""Small scorers and env factories for the env tests (no files, no models)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textgym.core import Sample
from textgym.envs.text_gen import TextGenEnv

PROMPTS = ["a", "ab", "abc", "cab", "bb", "ca"]


class CountScorer:
    """Score: completion length + 0.5 * number of 'a's. Per token: 1 for 'a', -0.25 for 'c', else 0 (causal)."""

    name = "count"

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([len(s.completion) + 0.5 * s.completion.count("a") for s in samples])

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [np.array([1.0 if t == "a" else -0.25 if t == "c" else 0.0 for t in s.tokens]) for s in samples]


class RatingsScorer:
    """Pays fixed per-token ratings, in order: the per-token human ratings of the seed's worked example."""

    name = "ratings"

    def __init__(self, ratings: Sequence[float]) -> None:
        self.ratings = [float(r) for r in ratings]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([sum(self.ratings[: len(s.completion_ids)]) for s in samples])

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [np.array(self.ratings[: len(s.completion_ids)]) for s in samples]


def toy_kwargs(**overrides) -> dict:
    kw = dict(tokenizer="char:abc", prompts=list(PROMPTS), scorer=CountScorer(), max_new_tokens=4)
    kw.update(overrides)
    return kw


def toy_env(**overrides) -> TextGenEnv:
    return TextGenEnv(**toy_kwargs(**overrides))


def assert_infos_equal(a: dict, b: dict, where: str = "") -> None:
    """Deep equality of Gymnasium vector infos (arrays, masks, nested dicts)."""
    assert a.keys() == b.keys(), f"{where}: info keys differ: {sorted(a)} vs {sorted(b)}"
    for k in a:
        if isinstance(a[k], dict):
            assert_infos_equal(a[k], b[k], f"{where}.{k}")
        else:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            assert x.shape == y.shape and x.tolist() == y.tolist(), f"{where}.{k}: {x} vs {y}"
