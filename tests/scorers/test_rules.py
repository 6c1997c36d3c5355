"""Tests for textgym/scorers/rules.py: keyword, regex, length, target match, token ratings."""

from __future__ import annotations

import numpy as np
import pytest

from textgym.core import Sample
from textgym.scorers import make_scorer
from textgym.scorers.rules import (
    KeywordScorer,
    LengthScorer,
    RegexScorer,
    TargetMatchScorer,
    TokenRatingsScorer,
)
from textgym.tokenizers import CharTokenizer, WordTokenizer


def char_sample(tok: CharTokenizer, completion_ids: list[int], target: str, prompt: str = ">") -> Sample:
    """A sample as TextGenEnv.make_sample builds it."""
    return Sample(prompt=prompt, completion=tok.decode(completion_ids), prompt_ids=tuple(tok.encode(prompt)),
                  completion_ids=tuple(completion_ids), tokens=tuple(tok.token_text(i) for i in completion_ids),
                  meta={"target": target})


def test_keyword_case_insensitive_weights_and_word_boundaries():
    s = KeywordScorer({"good": 1.0, "very bad": -2.0})
    samples = [Sample("", "GOOD stuff"), Sample("", "goods only"), Sample("", "good, but Very  bad... very bad"),
               Sample("", "very bad")]
    np.testing.assert_allclose(s.score(samples), [1.0, 0.0, 1.0 - 2.0, -2.0])
    counting = KeywordScorer({"very bad": -2.0}, count=True)
    assert counting.score([Sample("", "very bad, very bad")])[0] == -4.0


def test_keyword_field_text_includes_prompt_and_bad_input():
    s = KeywordScorer(["love"], field="text")
    assert s.score([Sample("I love", " it")])[0] == 1.0
    assert KeywordScorer(["love"]).score([Sample("I love", " it")])[0] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        KeywordScorer([])
    with pytest.raises(ValueError, match="field must be"):
        KeywordScorer(["a"], field="prompt")


def test_regex_search_and_count():
    s = RegexScorer(r"\d+", weight=0.5)
    np.testing.assert_allclose(s.score([Sample("", "a 12 b 3"), Sample("", "none")]), [0.5, 0.0])
    np.testing.assert_allclose(RegexScorer(r"\d+", count=True).score([Sample("", "a 12 b 3")]), [2.0])
    assert RegexScorer("abc", ignore_case=True).score([Sample("", "xABCx")])[0] == 1.0
    with pytest.raises(ValueError, match="invalid regular expression"):
        RegexScorer("(")


def test_length_closeness_in_each_unit():
    s = LengthScorer(target=4)
    texts = ["one two three four", "one two", "", "a b c d e f g h i"]
    # 1 - |n - 4| / 4, floored at 0: n = 4, 2, 0, 9
    np.testing.assert_allclose(s.score([Sample("", t) for t in texts]), [1.0, 0.5, 0.0, 0.0])
    assert LengthScorer(target=2, unit="chars").score([Sample("", "abc")])[0] == 0.5
    tok = CharTokenizer("ab>")
    with_eos = char_sample(tok, [0, 1, tok.eos_token_id], "ab")  # 2 tokens + EOS (not counted)
    assert LengthScorer(target=2, unit="tokens").score([with_eos])[0] == 1.0
    with pytest.raises(ValueError, match="positive int"):
        LengthScorer(target=0)
    with pytest.raises(ValueError, match="unit"):
        LengthScorer(unit="lines")


def test_target_match_per_token_and_score():
    tok = CharTokenizer("abc>")
    a, b, c, eos = 0, 1, 2, tok.eos_token_id
    s = TargetMatchScorer()
    cases = [  # completion ids, expected per-token, expected score (correct / max(len(target)+1, emitted))
        ([a, b, c, eos], [1, 1, 1, 1], 1.0),
        ([c, b, c, eos], [0, 1, 1, 1], 3 / 4),
        ([a, b, eos], [1, 1, 0], 2 / 4),          # EOS too early
        ([a, b, c, a, eos], [1, 1, 1, 0, 0], 3 / 5),  # too long
        ([a, b, c], [1, 1, 1], 3 / 4),             # budget reached before EOS
        ([eos], [0], 0.0),
    ]
    samples = [char_sample(tok, ids, "abc") for ids, _, _ in cases]
    for got, (_, want, _) in zip(s.score_tokens(samples), cases):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(s.score(samples), [sc for _, _, sc in cases])


def test_target_match_is_causal_and_text_only_samples():
    tok = CharTokenizer("abc>")
    s = TargetMatchScorer()
    full = [1, 0, 2, 2, tok.eos_token_id]
    last = [s.score_tokens([char_sample(tok, full[: t + 1], "bac")])[0][-1] for t in range(len(full))]
    np.testing.assert_array_equal(last, s.score_tokens([char_sample(tok, full, "bac")])[0])
    # a sample with text only: one token per character, EOS when finished
    assert s.score([Sample(">", "ab", meta={"target": "ab"})])[0] == 1.0
    assert s.score([Sample(">", "ab", meta={"target": "ab"}, finished=False)])[0] == pytest.approx(2 / 3)
    assert TargetMatchScorer(target="ab").score([Sample(">", "ab")])[0] == 1.0
    with pytest.raises(ValueError, match="meta\\['target'\\]"):
        s.score([Sample(">", "ab")])


def test_token_ratings_seed_example():
    """The seed's worked example: "The quick brown fox" rated [3, 4, 5, 4]; gamma = 0.9."""
    tok = WordTokenizer(["The", "quick", "brown", "fox"])
    ids = tok.encode("The quick brown fox") + [tok.eos_token_id]
    sample = Sample("", tok.decode(ids), completion_ids=tuple(ids), tokens=tuple(map(tok.token_text, ids)),
                    meta={"token_ratings": [3, 4, 5, 4]})
    r = TokenRatingsScorer().score_tokens([sample])[0]
    np.testing.assert_array_equal(r, [3, 4, 5, 4, 0])
    gamma = 0.9
    ret_from_quick = sum(gamma**k * x for k, x in enumerate(r[1:]))
    assert ret_from_quick == pytest.approx(4 + 0.9 * 5 + 0.81 * 4) == pytest.approx(11.74)
    assert TokenRatingsScorer().score([sample])[0] == 16.0
    assert TokenRatingsScorer(ratings=[1, 2]).score([Sample("", "x y z")])[0] == 3.0  # words, 0 past the end
    with pytest.raises(ValueError, match="token_ratings"):
        TokenRatingsScorer().score([Sample("", "x")])


@pytest.mark.parametrize("name", ["keyword", "regex", "length", "target", "copy", "token-ratings"])
def test_registry_builds_rule_scorers(name):
    s = make_scorer(name)
    assert hasattr(s, "score") and isinstance(s.name, str)
