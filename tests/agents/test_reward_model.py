"""Reward-model training (agents/reward_model.py): a scripted rater prefers positive words; a model trained on
its ratings ranks held-out samples above chance; save/load round trip; the scorer plugs into the env's checked
call; the `textgym train-rm` command."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tests.human.conftest import scripted_score, synthetic_samples
from textgym.core import Sample
from textgym.human.reward_model import RewardModelScorer
from textgym.human.store import RatingStore
from textgym.scorers import make_scorer, score_batch

pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.reward_model import RMConfig, pairwise_accuracy, spearman, train_reward_model  # noqa: E402


def test_spearman_and_pairwise_accuracy():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share ranks: [0, 1.5, 1.5, 3] vs [0, 2, 1, 3] -> cov 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.sqrt(0.9))
    assert np.isnan(spearman([1, 1], [1, 2]))
    assert pairwise_accuracy({1: 0.9, 2: 0.1, 3: 0.1}, [(1, 2), (2, 1), (2, 3)]) == pytest.approx(0.5)


def rated_store(path, n_prompts: int, per_prompt: int, seed: int = 0) -> RatingStore:
    """Scalar ratings of every sample, and preferences between samples of each prompt, by the scripted rater."""
    store = RatingStore(path)
    rows = synthetic_samples(n_prompts, per_prompt, seed)
    ids = store.add_samples(rows)
    for i, row in zip(ids, rows):
        store.add_rating(i, "script", score=scripted_score(row["completion"]))
    for p in range(n_prompts):
        group = list(zip(ids, rows))[p * per_prompt:(p + 1) * per_prompt]
        for (a, ra), (b, rb) in itertools.combinations(group, 2):
            sa, sb = scripted_score(ra["completion"]), scripted_score(rb["completion"])
            if sa != sb:
                store.add_rating(a, "script-ab", preferred=a if sa > sb else b, other_id=b)
    return store


def test_tiny_reward_model_learns_preferences(tmp_path):
    store = rated_store(tmp_path / "r.db", n_prompts=40, per_prompt=4)
    cfg = RMConfig(backbone="tiny", steps=40, batch_size=8, lr=3e-3, head_lr=3e-3, max_length=32, seed=0)
    rm, metrics = train_reward_model(store, tmp_path / "rm", cfg, log=lambda *_: None)
    ev = metrics["eval"]
    assert ev["n_implied_pairs"] >= 20 and ev["n_preferences"] >= 10
    assert ev["pairwise_accuracy"] > 0.7, ev  # chance is 0.5
    assert ev["spearman"] > 0.4, ev
    saved = json.loads((tmp_path / "rm" / "eval.json").read_text())
    assert saved["eval"]["pairwise_accuracy"] == pytest.approx(ev["pairwise_accuracy"])

    scorer = RewardModelScorer(tmp_path / "rm", batch_size=3)
    samples = [Sample(s.prompt, s.completion) for s in store.samples()[:7]]
    scores, _ = score_batch(scorer, samples)
    direct = rm([s.prompt for s in samples], [s.completion for s in samples]).detach().numpy()
    np.testing.assert_allclose(scores, direct, rtol=1e-5, atol=1e-6)  # load round trip, batching
    pos = scorer.score([Sample("Review 0:", "a great lovely wonderful film")])[0]
    neg = scorer.score([Sample("Review 0:", "a awful terrible boring film")])[0]
    assert pos > neg
    assert isinstance(make_scorer({"name": "reward-model", "path": str(tmp_path / "rm")}), RewardModelScorer)


def test_cli_train_rm_and_errors(tmp_path, capsys):
    from agents.cli import main as cli_main

    rated_store(tmp_path / "r.db", n_prompts=6, per_prompt=3)
    assert cli_main(["train-rm", str(tmp_path / "r.db"), "--out", str(tmp_path / "rm"), "--backbone", "tiny",
                     "--steps", "3", "--max-length", "32"]) == 0
    assert "pairwise accuracy" in capsys.readouterr().out
    assert (tmp_path / "rm" / "model.safetensors").is_file() and (tmp_path / "rm" / "eval.json").is_file()
    RatingStore(tmp_path / "empty.db")
    assert cli_main(["train-rm", str(tmp_path / "empty.db"), "--out", str(tmp_path / "x")]) == 2
    assert "needs at least a few" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a textgym reward model folder"):
        RewardModelScorer(tmp_path)


@pytest.mark.slow
def test_minilm_reward_model_learns_preferences(tmp_path):
    store = rated_store(tmp_path / "r.db", n_prompts=40, per_prompt=4)
    cfg = RMConfig(backbone="minilm", steps=60, batch_size=16, lr=5e-5, head_lr=1e-3, max_length=48)
    _, metrics = train_reward_model(store, tmp_path / "rm", cfg, log=lambda *_: None)
    assert metrics["eval"]["pairwise_accuracy"] > 0.75, metrics["eval"]
