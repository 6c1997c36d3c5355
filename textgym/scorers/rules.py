"""Scripted scorers: keywords, regular expressions, length, exact target match, given per-token ratings.

All take a batch of :class:`~textgym.core.Sample` and return a ``(B,)`` float64 array; the per-token ones
(:class:`TargetMatchScorer`, :class:`TokenRatingsScorer`) also implement ``score_tokens`` (causal: the
reward of token t depends only on the prompt and tokens ``<= t``), so they work in ``reward_mode="token"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textgym.core import Sample

FIELDS = ("completion", "text")

# Token texts treated as end-of-sequence: our file-free tokenizers' "<eos>" and common Hugging Face ones.
EOS_TOKENS = ("<eos>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>")


def _field_text(sample: Sample, field: str) -> str:
    return sample.completion if field == "completion" else sample.prompt + sample.completion


def _check_field(field: str) -> str:
    if field not in FIELDS:
        raise ValueError(f"field must be 'completion' (the generated text) or 'text' (prompt + completion), "
                         f"got {field!r}")
    return field


class KeywordScorer:
    """Pays for keywords and phrases, case-insensitively: ``score = sum_k weight_k * hits_k``.

    ``keywords`` is a list of words/phrases (weight 1 each) or a ``{phrase: weight}`` mapping; negative
    weights penalise. A phrase matches on word boundaries (``"good"`` does not match ``"goods"``).
    ``count=False`` (default) counts each phrase at most once; ``count=True`` counts every occurrence.
    """

    def __init__(self, keywords: Sequence[str] | Mapping[str, float] = ("good", "great", "love"),
                 count: bool = False, field: str = "completion", name: str = "keyword") -> None:
        weights = dict(keywords) if isinstance(keywords, Mapping) else {k: 1.0 for k in keywords}
        if isinstance(keywords, str) or not weights:
            raise ValueError("KeywordScorer needs a non-empty list of phrases or a {phrase: weight} dict, "
                             f"got {keywords!r}")
        if any(not isinstance(k, str) or not k.strip() for k in weights):
            raise ValueError(f"KeywordScorer phrases must be non-empty strings, got {list(weights)!r}")
        self.keywords = {k: float(w) for k, w in weights.items()}
        self.count = bool(count)
        self.field = _check_field(field)
        self.name = name
        self._patterns = [(re.compile(r"(?<!\w)" + re.escape(k.strip()) + r"(?!\w)", re.IGNORECASE), w)
                          for k, w in self.keywords.items()]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.zeros(len(samples))
        for i, s in enumerate(samples):
            text = _field_text(s, self.field)
            for pattern, w in self._patterns:
                hits = len(pattern.findall(text)) if self.count else int(pattern.search(text) is not None)
                out[i] += w * hits
        return out


class RegexScorer:
    """Pays ``weight`` when a regular expression matches (``count=True``: per match).

    ``pattern`` is a regex string (``re.search`` semantics); ``ignore_case`` adds ``re.IGNORECASE``.
    """

    def __init__(self, pattern: str = r"\d", weight: float = 1.0, count: bool = False, ignore_case: bool = False,
                 field: str = "completion", name: str = "regex") -> None:
        try:
            self._re = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except (re.error, TypeError) as e:
            raise ValueError(f"RegexScorer: invalid regular expression {pattern!r}: {e}") from None
        self.pattern = pattern
        self.weight = float(weight)
        self.count = bool(count)
        self.field = _check_field(field)
        self.name = name

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        texts = [_field_text(s, self.field) for s in samples]
        if self.count:
            hits = [sum(1 for _ in self._re.finditer(t)) for t in texts]
        else:
            hits = [int(self._re.search(t) is not None) for t in texts]
        return self.weight * np.asarray(hits, dtype=np.float64)


class LengthScorer:
    """Rewards a completion length close to ``target``: ``score = max(0, 1 - |n - target| / target)``.

    ``n`` is counted in ``unit``: ``"words"`` (whitespace-separated, the default: independent of the
    tokenizer), ``"chars"``, or ``"tokens"`` (completion ids, a final EOS not counted). The score is 1 at the
    target and falls linearly to 0 at a distance of ``target``.
    """

    UNITS = ("words", "chars", "tokens")

    def __init__(self, target: int = 12, unit: str = "words", name: str = "length") -> None:
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target <= 0:
            raise ValueError(f"LengthScorer target must be a positive int, got {target!r}")
        if unit not in self.UNITS:
            raise ValueError(f"LengthScorer unit must be one of {self.UNITS}, got {unit!r}")
        self.target = int(target)
        self.unit = unit
        self.name = name

    def length(self, sample: Sample) -> int:
        if self.unit == "words":
            return len(sample.completion.split())
        if self.unit == "chars":
            return len(sample.completion)
        n = len(sample.completion_ids)
        return n - 1 if n and _ends_with_eos(sample) else n

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        n = np.array([self.length(s) for s in samples], dtype=np.float64)
        return np.maximum(0.0, 1.0 - np.abs(n - self.target) / self.target)


def _ends_with_eos(sample: Sample) -> bool:
    """Whether the last completion token is EOS: its text is a known EOS token, or decoding dropped it."""
    if not sample.tokens:
        return False
    last = sample.tokens[-1]
    if last in EOS_TOKENS:
        return True
    joined = "".join(sample.tokens)
    return joined != sample.completion and "".join(sample.tokens[:-1]) == sample.completion


def _token_texts(sample: Sample) -> tuple[list[str], bool]:
    """(texts of the non-EOS completion tokens, whether an EOS ends the completion).

    A sample built from text only (no ``tokens``) counts one token per character, and EOS if ``finished``.
    """
    if not sample.tokens and not sample.completion_ids:
        return list(sample.completion), sample.finished
    eos = _ends_with_eos(sample)
    return list(sample.tokens[:-1] if eos else sample.tokens), eos


class TargetMatchScorer:
    """Exact target match, position by position: the wanted completion is ``sample.meta["target"]`` then EOS.

    ``score_tokens``: 1 for each token whose text equals the target's text at the same character offset
    (for a char tokenizer: token t equals ``target[t]``), and 1 for an EOS at offset ``len(target)``; else 0.
    Causal: it looks only at the tokens up to t. Its sum is largest (``len(target) + 1`` for a char
    tokenizer) for exactly the target followed by EOS.

    ``score``: the fraction of positions right, EOS included: ``correct / max(len(target) + 1, emitted)``,
    where a token covers as many positions as it has characters, EOS covers one, and ``emitted`` counts the
    positions the completion covers. 1.0 only for the exact target followed by EOS; extra tokens lower it.

    ``target`` given to the constructor is used for samples whose meta has none.
    """

    def __init__(self, target: str | None = None, name: str = "target") -> None:
        self.target = target
        self.name = name

    def _target(self, sample: Sample) -> str:
        target = sample.meta.get("target", self.target) if sample.meta else self.target
        if not isinstance(target, str):
            raise ValueError("TargetMatchScorer needs the wanted completion in prompt meta['target'] (a str) or "
                             f"TargetMatchScorer(target=...); got {target!r}")
        return target

    def _marks(self, sample: Sample) -> tuple[list[tuple[int, int]], str]:
        """Per token (EOS included): (1 if right else 0, positions covered); and the target."""
        target = self._target(sample)
        texts, eos = _token_texts(sample)
        marks, offset = [], 0
        for t in texts:
            marks.append((int(bool(t) and target[offset:offset + len(t)] == t), len(t)))
            offset += len(t)
        if eos:
            marks.append((int(offset == len(target)), 1))
        return marks, target

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [np.array([m for m, _ in self._marks(s)[0]], dtype=np.float64) for s in samples]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.zeros(len(samples))
        for i, s in enumerate(samples):
            marks, target = self._marks(s)
            correct = sum(m * n for m, n in marks)
            emitted = sum(n for _, n in marks)
            out[i] = correct / max(len(target) + 1, emitted)
        return out


class TokenRatingsScorer:
    """Pays given per-token ratings: ``score_tokens`` = ``ratings[t]`` for token t, ``default`` past the end.

    Ratings come from ``sample.meta["token_ratings"]`` or, if absent, the constructor's ``ratings``.
    ``score`` is their sum over the completion, so the sequence-mode reward equals the undiscounted
    token-mode return. The seed's worked example: completion "The quick brown fox" rated [3, 4, 5, 4] (an EOS
    after "fox" is token 4, past the ratings, so it earns ``default``). A sample built from text only (no ids
    or tokens) counts whitespace-separated words.
    """

    def __init__(self, ratings: Sequence[float] | None = None, default: float = 0.0,
                 name: str = "token-ratings") -> None:
        self.ratings = None if ratings is None else [float(r) for r in ratings]
        self.default = float(default)
        self.name = name

    def _ratings(self, sample: Sample) -> list[float]:
        ratings: Any = sample.meta.get("token_ratings", self.ratings) if sample.meta else self.ratings
        if ratings is None:
            raise ValueError("TokenRatingsScorer needs ratings: prompt meta['token_ratings'] or "
                             "TokenRatingsScorer(ratings=[...])")
        return [float(r) for r in ratings]

    def score_tokens(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        out = []
        for s in samples:
            ratings = self._ratings(s)
            n = len(s.completion_ids) if (s.completion_ids or s.tokens) else len(s.completion.split())
            r = np.full(n, self.default)
            k = min(n, len(ratings))
            r[:k] = ratings[:k]
            out.append(r)
        return out

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([r.sum() for r in self.score_tokens(samples)], dtype=np.float64)
