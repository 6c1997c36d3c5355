"""The SQL task through `textgym train` on a tiny GPT-2 (the metrics carry the scorer's parts), the short task name,
and the missing-EOS penalty: it hits completions cut by the budget, not those that ended on a stop string."""

from __future__ import annotations

import csv
import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.cli import main as cli  # noqa: E402
from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer  # noqa: E402
from tests.conftest import make_tiny_gpt2  # noqa: E402


def test_train_sql_task_by_short_name_logs_the_sql_parts(byte_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", "--task", "sql", "--model", str(byte_gpt2_dir), "--tokenizer", "byte", "--iterations", "2",
                "--out", str(out), "--num-envs", "8", "--max-new-tokens", "8", "--ppo.minibatch-size", "4",
                "--ppo.micro-batch-size", "4", "--ppo.n-epochs", "1", "--n-samples", "2", "--progress", "false",
                "--tensorboard", "false", "--scorer", '{"name": "sql", "valid_weight": 0.1}',
                "--prompt-kwargs", '{"kinds": ["max", "min"], "max_rows": 4}', "--gold-scorer", "length"]) == 0
    assert json.loads((out / "config.json").read_text())["task"] == "TextGen-SQL-v0"  # the short name resolved
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"]
    for r in rows:
        valid, correct = float(r["rollout/score_parts/valid"]), float(r["rollout/score_parts/correct"])
        assert 0 <= valid <= 1 and 0 <= correct <= valid  # a correct query is a valid one
        assert float(r["rollout/ep_rew_mean"]) == pytest.approx(correct + 0.1 * valid, abs=1e-6)
        assert 0 <= float(r["rlhf/gold_score_mean"]) <= 1  # the length scorer's mean, logged beside the score
    assert "SQLite table t" in (out / "samples.md").read_text()


def test_train_unknown_short_name_lists_the_names(byte_gpt2_dir, tmp_path, capsys):
    assert cli(["train", "--task", "sqll", "--model", str(byte_gpt2_dir), "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'sqll'; pass a short name (default, sentiment, data-analysis, sql" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [True, False])
def test_missing_eos_penalty_spares_stop_string_endings(stop):
    from textgym.envs.vector import BatchedTextGenEnv

    cfg = RLHFConfig(num_envs=8, max_new_tokens=3, missing_eos_penalty=1.0, kl_coef=0.0, progress=False,
                     tensorboard=False, ppo=RLHFPPOConfig(n_epochs=1, minibatch_size=8, micro_batch_size=8))
    model = make_tiny_gpt2(vocab_size=257)
    # every episode ends after its first byte: on a stop string (any character), or else at the budget of 1 token
    kw = {"stop_strings": (re.compile(r"[\s\S]"),), "max_new_tokens": 3} if stop else {"max_new_tokens": 1}
    env = BatchedTextGenEnv(8, autoreset_mode="disabled", tokenizer="byte", prompts=["ab", "cd"], scorer="length",
                            action_size=257, **kw)
    tr = RLHFTrainer(cfg, model=model, env=env)
    m = tr.run_iteration()
    processed = m["rlhf/total_reward"] - m["rlhf/non_score_reward"]  # the processed score per completion
    eos = m["rlhf/eos_fraction"]
    assert eos < 1  # some rows did not end with EOS
    expected = m["rollout/ep_rew_mean"] - (0.0 if stop else 1.0 * (1 - eos))
    assert processed == pytest.approx(expected, abs=1e-5)


def test_gold_scorer_scores_the_same_completions():
    """A gold scorer equal to the training scorer logs exactly the training score; another one, its own score."""
    from textgym.envs.vector import BatchedTextGenEnv

    def trainer(gold):
        cfg = RLHFConfig(num_envs=8, max_new_tokens=4, gold_scorer=gold, progress=False, tensorboard=False,
                         ppo=RLHFPPOConfig(n_epochs=1, minibatch_size=8, micro_batch_size=8))
        env = BatchedTextGenEnv(8, autoreset_mode="disabled", tokenizer="byte", prompts=["ab", "cd"],
                                scorer={"name": "length", "target": 3, "unit": "tokens"}, max_new_tokens=4,
                                action_size=257)
        return RLHFTrainer(cfg, model=make_tiny_gpt2(vocab_size=257), env=env)

    m = trainer({"name": "length", "target": 3, "unit": "tokens"}).run_iteration()
    assert m["rlhf/gold_score_mean"] == pytest.approx(m["rollout/ep_rew_mean"], abs=1e-6)
    m = trainer({"name": "length", "target": 1, "unit": "tokens"}).run_iteration()  # same seed: the same completions
    assert m["rlhf/gold_score_mean"] != pytest.approx(m["rollout/ep_rew_mean"], abs=1e-6)
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        trainer("nope")
