"""Sentiment with VADER (``vaderSentiment``: a rule-based model whose lexicon ships inside the wheel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.core import Sample
from textgym.scorers.rules import _check_field, _field_text

TARGETS = ("positive", "negative")


class VaderSentimentScorer:
    """VADER's compound sentiment score, in [-1, 1], of the completion (or of prompt + completion).

    ``target="positive"`` (default) pays the compound score, ``"negative"`` pays its negation, so higher is
    always better. ``field="completion"`` (default) judges only the generated text; ``"text"`` judges
    prompt + completion. The analyzer is built on first use and dropped when pickled (envs are pickled to
    subprocesses by AsyncVectorEnv).
    """

    def __init__(self, target: str = "positive", field: str = "completion", name: str = "vader") -> None:
        if target not in TARGETS:
            raise ValueError(f"VaderSentimentScorer target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.field = _check_field(field)
        self.name = name
        self._analyzer: Any = None

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            from textgym._optional import require

            vader = require("vaderSentiment.vaderSentiment", "the VADER sentiment scorer")
            self._analyzer = vader.SentimentIntensityAnalyzer()
        return self._analyzer

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER's compound score of each text (no target sign applied)."""
        polarity = self.analyzer.polarity_scores
        return np.array([polarity(t)["compound"] if t.strip() else 0.0 for t in texts], dtype=np.float64)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        c = self.compound([_field_text(s, self.field) for s in samples])
        return c if self.target == "positive" else -c

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzer": None}
