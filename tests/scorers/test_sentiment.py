"""Tests for textgym/scorers/sentiment.py (VADER)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from textgym.core import Sample

pytest.importorskip("vaderSentiment")

from textgym.scorers.sentiment import VaderSentimentScorer  # noqa: E402


def test_vader_signs_and_range():
    s = VaderSentimentScorer()
    scores = s.score([Sample("The movie was", " wonderful, I loved it!"), Sample("The movie was", " awful and boring."),
                      Sample("The movie was", "")])
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0
    assert np.all(np.abs(scores) <= 1)
    neg = VaderSentimentScorer(target="negative").score([Sample("", "wonderful")])
    assert neg[0] == pytest.approx(-s.score([Sample("", "wonderful")])[0])


def test_vader_field_text_judges_the_prompt_too():
    sample = Sample("I hated every minute.", " The end.")
    assert VaderSentimentScorer().score([sample])[0] == 0.0
    assert VaderSentimentScorer(field="text").score([sample])[0] < 0


def test_vader_pickles_without_the_analyzer_and_rejects_bad_target():
    s = VaderSentimentScorer()
    before = s.score([Sample("", "great")])
    s2 = pickle.loads(pickle.dumps(s))
    assert s2._analyzer is None
    np.testing.assert_array_equal(s2.score([Sample("", "great")]), before)
    with pytest.raises(ValueError, match="positive"):
        VaderSentimentScorer(target="happy")
