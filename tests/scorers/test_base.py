"""Tests for textgym/scorers/base.py and the registry: checked calls, ScorerError, weighted combinations."""

from __future__ import annotations

import numpy as np
import pytest

from textgym.core import Sample
from textgym.envs.text_gen import TextGenEnv
from textgym.scorers import CombinedScorer, ScorerError, make_scorer, score_batch, score_tokens_batch
from textgym.scorers.rules import LengthScorer, TargetMatchScorer
from textgym.tokenizers import CharTokenizer


class Raising:
    name = "boom"

    def score(self, samples):
        raise RuntimeError("kaput")

    def score_tokens(self, samples):
        raise RuntimeError("kaput")


class NaNScorer:
    name = "nanny"

    def score(self, samples):
        return np.full(len(samples), np.nan)


def test_raising_and_nan_scorers_give_scorer_error_naming_scorer_and_input():
    samples = [Sample("The movie was", " fine")]
    with pytest.raises(ScorerError, match=r"'boom' raised RuntimeError: kaput.*completion=' fine'"):
        score_batch(Raising(), samples)
    with pytest.raises(ScorerError, match=r"'nanny' returned nan for sample 0.*prompt='The movie was'"):
        score_batch(NaNScorer(), samples)
    with pytest.raises(ScorerError, match="'boom' raised RuntimeError in score_tokens"):
        score_tokens_batch(Raising(), samples)


@pytest.mark.parametrize("scorer, pattern", [(Raising(), "'boom' raised"), (NaNScorer(), "'nanny' returned nan")])
def test_scorer_error_through_the_env(scorer, pattern):
    env = TextGenEnv("char:abc>", ["ab>"], scorer, max_new_tokens=2)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ScorerError, match=pattern + r".*prompt='ab>' completion='aa'"):
        env.step(0)


def test_make_scorer_weighted_list_combines_parts():
    pytest.importorskip("vaderSentiment")
    s = make_scorer([("vader", 1.0), ("length", 0.1)])
    assert isinstance(s, CombinedScorer)
    samples = [Sample("The movie was", " great and I loved it"), Sample("The movie was", " bad")]
    scores, parts = score_batch(s, samples)
    assert set(parts) == {"vader", "length"}
    np.testing.assert_allclose(scores, parts["vader"] + 0.1 * parts["length"])
    want_length = LengthScorer().score(samples)  # default target 12 words
    np.testing.assert_allclose(parts["length"], want_length)


def test_combined_per_token_and_dict_spec():
    target = make_scorer({"name": "target", "target": "ab"})
    assert isinstance(target, TargetMatchScorer) and target.target == "ab"
    combo = CombinedScorer([target, make_scorer({"name": "token-ratings", "ratings": [1, 1, 1]})], [2.0, 0.5])
    tok = CharTokenizer("ab>")
    ids = [0, 0, 1, tok.eos_token_id]  # "aab" + EOS: target right at tokens 0 only; rated 1, 1, 1, then 0
    sample = Sample(">", tok.decode(ids), completion_ids=tuple(ids), tokens=tuple(map(tok.token_text, ids)))
    np.testing.assert_allclose(combo.score_tokens([sample])[0], 2.0 * np.array([1, 0, 0, 0]) + 0.5 * np.array(
        [1, 1, 1, 0]))


def test_make_scorer_bad_input():
    with pytest.raises(ValueError, match="unknown scorer 'nope'; available"):
        make_scorer("nope")
    with pytest.raises(ValueError, match="'name' key"):
        make_scorer({"target": "ab"})
    with pytest.raises(TypeError, match="cannot make a scorer"):
        make_scorer(3)


def test_scorer_spec_shorthand_and_errors_say_what_to_write():
    from textgym.scorers import scorer_spec

    assert scorer_spec("vader") == "vader"
    assert scorer_spec("reward-model:runs/rm") == {"name": "reward-model", "path": "runs/rm"}
    assert scorer_spec("reward-model:C:/rm") == {"name": "reward-model", "path": "C:/rm"}  # first colon only
    assert scorer_spec({"name": "length", "target": 8}) == {"name": "length", "target": 8}
    write_rm = r"write 'reward-model:PATH' or \{\"name\": \"reward-model\", \"path\": \"PATH\"\}"
    with pytest.raises(ValueError, match=r"missing a required argument: 'path'.*" + write_rm):
        scorer_spec("reward-model")
    with pytest.raises(ValueError, match="lacks its path: write 'reward-model:PATH'"):
        scorer_spec("reward-model:")
    with pytest.raises(ValueError, match="'NAME:VALUE' form exists only as 'reward-model:PATH'"):
        scorer_spec("vader:x")
    with pytest.raises(ValueError, match=r"unexpected keyword argument 'x' \(it takes target, unit\)"):
        scorer_spec({"name": "length", "x": 1})
    with pytest.raises(ValueError, match="unknown scorer 'nope'; available"):
        scorer_spec({"name": "nope"})
    with pytest.raises(ValueError, match="missing a required argument: 'path'"):
        make_scorer("reward-model")  # make_scorer checks the same way (a ValueError, not the constructor's)
