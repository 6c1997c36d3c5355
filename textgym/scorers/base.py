"""The scorer protocol, combination by weights, and the one checked way the env calls a scorer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from textgym.core import Sample


class ScorerError(RuntimeError):
    """A scorer raised or returned something unusable; the message names the scorer and the input."""


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of samples: one float per sample. Higher is better.

    A scorer may also implement ``score_parts(samples) -> dict[str, np.ndarray]`` (named components whose
    weighted sum is the score; shown in the env's ``info``) and, to be used in per-token reward mode,
    ``score_tokens(samples) -> list[np.ndarray]`` (one reward per completion token). Per-token scores must
    be causal: the reward of token t depends only on the prompt and tokens ``<= t``. A scorer whose
    ``score_tokens`` can judge finished samples only (people rate finished text) sets ``scores_partial = False``,
    so the env refuses it for ``reward_mode="token"`` at construction (:func:`token_scoring_problem`).
    """

    name: str

    def score(self, samples: Sequence[Sample]) -> np.ndarray: ...


@runtime_checkable
class TokenScorer(Scorer, Protocol):
    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]: ...


def _describe(sample: Sample) -> str:
    p = sample.prompt if len(sample.prompt) < 80 else sample.prompt[:77] + "..."
    c = sample.completion if len(sample.completion) < 80 else sample.completion[:77] + "..."
    return f"prompt={p!r} completion={c!r}"


def score_batch(scorer: Scorer, samples: Sequence[Sample]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Call ``scorer`` on a batch and check what comes back: ``(scores (B,), parts {name: (B,)})``.

    An exception, a wrong shape, or NaN/inf raises :class:`ScorerError` naming the scorer and the sample.
    """
    scores, parts, _ = score_batch_details(scorer, samples)
    return scores, parts


def score_batch_details(scorer: Scorer, samples: Sequence[Sample]
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], list[dict[str, Any]]]:
    """:func:`score_batch` plus one dict of extra info per sample (what the env adds to its ``info``), from a
    scorer's optional ``score_details(samples) -> (parts, infos)`` (the SQL scorer's ``sql_error``); else ``{}``s."""
    name = getattr(scorer, "name", type(scorer).__name__)
    details: list[dict[str, Any]] = [{} for _ in samples]
    try:
        if hasattr(scorer, "score_details"):
            parts, details = scorer.score_details(samples)
            parts = {k: np.asarray(v, dtype=np.float64) for k, v in parts.items()}
            if len(details) != len(samples):
                raise ScorerError(f"scorer {name!r}.score_details returned {len(details)} infos for "
                                  f"{len(samples)} samples")
            scores = _combine(scorer, parts)
        elif hasattr(scorer, "score_parts"):
            parts = {k: np.asarray(v, dtype=np.float64) for k, v in scorer.score_parts(samples).items()}
            scores = np.asarray(scorer.score(samples), dtype=np.float64) if not parts else None
            if scores is None:
                scores = _combine(scorer, parts)
        else:
            scores = np.asarray(scorer.score(samples), dtype=np.float64)
            parts = {name: scores}
    except ScorerError:
        raise
    except Exception as e:
        first = _describe(samples[0]) if samples else "an empty batch"
        raise ScorerError(f"scorer {name!r} raised {type(e).__name__}: {e} (batch of {len(samples)}, first: "
                          f"{first})") from e
    if scores.shape != (len(samples),):
        raise ScorerError(f"scorer {name!r} returned shape {scores.shape} for a batch of {len(samples)} "
                          "samples; it must return one float per sample")
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScorerError(f"scorer {name!r} returned {scores[i]} for sample {i}: {_describe(samples[i])}")
    return scores, parts, list(details)


def score_tokens_batch(scorer: Scorer, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Call ``scorer.score_tokens`` and check it: one finite float per completion token of each sample."""
    name = getattr(scorer, "name", type(scorer).__name__)
    if not hasattr(scorer, "score_tokens"):
        raise ValueError(f"scorer {name!r} has no score_tokens method, so it cannot pay per-token rewards; "
                         "use reward_mode='sequence' or a per-token scorer")
    try:
        out = [np.asarray(r, dtype=np.float64) for r in scorer.score_tokens(samples)]
    except Exception as e:
        first = _describe(samples[0]) if samples else "an empty batch"
        raise ScorerError(f"scorer {name!r} raised {type(e).__name__} in score_tokens: {e} (first: {first})") from e
    if len(out) != len(samples):
        raise ScorerError(f"scorer {name!r}.score_tokens returned {len(out)} arrays for {len(samples)} samples")
    for r, s in zip(out, samples):
        if r.shape != (len(s.completion_ids),):
            raise ScorerError(f"scorer {name!r}.score_tokens returned shape {r.shape} for a completion of "
                              f"{len(s.completion_ids)} tokens: {_describe(s)}")
        if not np.isfinite(r).all():
            raise ScorerError(f"scorer {name!r}.score_tokens returned a non-finite value: {_describe(s)}")
    return out


def token_scoring_problem(scorer: Scorer) -> str | None:
    """Why ``scorer`` cannot pay a reward at every step (the env's ``reward_mode="token"``), or None if it can.

    It cannot if it has no ``score_tokens``, if it scores finished samples only (``scores_partial = False``), or
    if a part of a :class:`CombinedScorer` (at any depth) cannot.
    """
    name = getattr(scorer, "name", type(scorer).__name__)
    if not hasattr(scorer, "score_tokens"):
        return f"scorer {name!r} has no score_tokens method"
    if getattr(scorer, "scores_partial", True) is False:
        return f"scorer {name!r} scores finished samples only, and the per-token reward asks it about partial ones"
    for part in getattr(scorer, "scorers", ()) if isinstance(scorer, CombinedScorer) else ():
        why = token_scoring_problem(part)
        if why is not None:
            return f"{why} (a part of the combined scorer {name!r})"
    return None


def _combine(scorer: Scorer, parts: dict[str, np.ndarray]) -> np.ndarray:
    weights = getattr(scorer, "weights", None) or {}
    return sum(weights.get(k, 1.0) * v for k, v in parts.items())


class CombinedScorer:
    """A weighted sum of scorers: ``score = sum_i w_i * scorer_i``. ``info`` shows each part."""

    def __init__(self, scorers: Sequence[Scorer], weights: Sequence[float] | None = None,
                 name: str = "combined") -> None:
        if not scorers:
            raise ValueError("CombinedScorer needs at least one scorer")
        weights = list(weights) if weights is not None else [1.0] * len(scorers)
        if len(weights) != len(scorers):
            raise ValueError(f"CombinedScorer got {len(scorers)} scorers but {len(weights)} weights")
        names = [getattr(s, "name", type(s).__name__) for s in scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"CombinedScorer parts need distinct names, got {names}")
        self.scorers = list(scorers)
        self.weights = dict(zip(names, map(float, weights)))
        self.name = name

    def score_details(self, samples: Sequence[Sample]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Each scorer's score as a part, and the extra infos of all of them merged per sample."""
        parts, details = {}, [{} for _ in samples]
        for s in self.scorers:
            parts[s.name], _, extra = score_batch_details(s, samples)
            for d, e in zip(details, extra):
                d.update(e)
        return parts, details

    def score_parts(self, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
        return self.score_details(samples)[0]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return _combine(self, self.score_parts(samples))

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        per = [score_tokens_batch(s, samples) for s in self.scorers]
        w = [self.weights[s.name] for s in self.scorers]
        return [sum(wi * p[i] for wi, p in zip(w, per)) for i in range(len(samples))]
