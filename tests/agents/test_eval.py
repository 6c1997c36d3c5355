"""``textgym eval`` (agents/eval.py) on a tiny GPT-2: the JSON and plot, figures consistent with scoring the same
completions directly, held-out prompts, the seed warning, pass@k and distinct-n by hand, and bad input."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.cli import main as cli  # noqa: E402
from agents.eval import EVAL_TAG, by_kind, distinct_n, held_out_prompts, pass_at_k  # noqa: E402


def eval_argv(out, *models, extra=()):
    return ["eval", "--task", "sql", *sum((["--model", str(m)] for m in models), []), "--tokenizer", "byte",
            "--n", "6", "--max-new-tokens", "6", "--batch-size", "4", "--out", str(out), *extra]


def test_pass_at_k_matches_brute_force():
    import itertools

    for n, c, k in [(5, 2, 1), (5, 2, 3), (6, 0, 2), (4, 4, 2), (8, 3, 8)]:
        picks = list(itertools.combinations([1] * c + [0] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(p) for p in picks) / len(picks))


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]  # unigrams: a b a b a b c (3 unique / 7); bigrams: ab ba ab ab bc (3 / 5)
    assert distinct_n(texts, 1) == pytest.approx(3 / 7) and distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert math.isnan(distinct_n(["one"], 2))


def test_by_kind_groups_and_intervals():
    out = by_kind(["a", "b", "a", "a"], np.array([1.0, 0.0, 1.0, 0.0]))
    assert out["all"]["n"] == 4 and out["all"]["mean"] == 0.5 and out["a"]["mean"] == pytest.approx(2 / 3)
    assert out["b"] == pytest.approx({"mean": 0.0, "low": 0.0, "high": out["b"]["high"], "n": 1})
    assert 0 < out["all"]["low"] < 0.5 < out["all"]["high"] < 1


def test_held_out_prompts_are_fixed_and_not_a_training_stream():
    a, b = held_out_prompts("sql", 20, seed=0), held_out_prompts("TextGen-SQL-v0", 20, seed=0)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in held_out_prompts("sql", 20, seed=1)] != [p.text for p in a]
    # training resets env g with the integer seed*1_000_003 + iteration*num_envs + g: another stream
    from textgym.tasks import SQLTask

    train = SQLTask().sample(np.random.default_rng(0))
    assert a[0].text != train.text and EVAL_TAG != 0


def test_eval_cli_two_models_json_plot_and_consistency(byte_gpt2_dir, tmp_path, capsys):
    # a fake run folder: final/ and the run's config.json with its training seed
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    for f in byte_gpt2_dir.iterdir():
        (run / "final" / f.name).write_bytes(f.read_bytes())
    (run / "config.json").write_text(json.dumps({"seed": 5, "task": "TextGen-SQL-v0"}))
    out = tmp_path / "ev"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        extra = ["--k", "2", "--seed", "5", "--gold-scorer", "length"]
        assert cli(eval_argv(out, byte_gpt2_dir, run, extra=extra)) == 0
    assert any("equals a seed the model was trained with" in str(x.message) for x in w)  # the run's seed 5
    printed = capsys.readouterr().out
    assert printed.count("greedy accuracy") == 2 and "pass@2" in printed
    report = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").stat().st_size > 0
    a, b = report["models"]
    assert b["path"] == str(run / "final") and report["task"] == "TextGen-SQL-v0" and report["n"] == 6
    for r in (a, b):
        assert set(r["parts"]) == {"valid", "correct"} and r["greedy_accuracy"]["all"]["n"] == 6
        kinds = {e["kind"] for e in r["examples"]}
        assert kinds <= set(r["greedy_accuracy"]) and "all" in r["greedy_accuracy"]
        assert r["pass_at_k"]["k"] == 2 and 0 <= r["pass_at_k"]["all"]["mean"] <= 1
        assert r["fluency"]["ref_perplexity"] > 1 and 0 < r["fluency"]["distinct_1"] <= 1
        assert "gold" in r and r["gold"]["scorer"] == "length"
    # the same weights: the same greedy completions and figures
    assert [e["completion"] for e in a["examples"]] == [e["completion"] for e in b["examples"]]
    assert a["fluency"] == b["fluency"] and a["score"] == b["score"]

    # the reported scores are those of the task's scorer on the reported completions, for the held-out prompts
    from textgym.core import Sample
    from textgym.scorers.sql import SQLScorer

    prompts = held_out_prompts("sql", 6, seed=5)
    assert [e["prompt"] for e in a["examples"]] == [p.text for p in prompts]
    again = SQLScorer().score([Sample(p.text, e["completion"], meta=p.meta) for p, e in zip(prompts, a["examples"])])
    assert again.tolist() == [e["score"] for e in a["examples"]]

    # the perplexity is the reference's on the greedy completions: recompute it for the first model by hand
    from agents.lm.policy import CausalLMPolicy
    from textgym.envs.text_gen import TextGenEnv

    ref = CausalLMPolicy(str(byte_gpt2_dir)).eval()
    env = TextGenEnv(tokenizer="byte", prompts="gen:sql", scorer="sql", max_new_tokens=6)
    total, count = 0.0, 0
    for p, e in zip(prompts, a["examples"]):
        ids, comp = list(env.encode_prompt(p)), e["completion_ids"]  # the exact ids generated (EOS included)
        full = torch.tensor([ids + comp])
        lp = ref.sequence_logprobs(full, torch.ones_like(full), len(comp))[0]
        total, count = total + float(lp.sum()), count + len(comp)
    assert count == 6 * a["fluency"]["mean_length_tokens"]
    assert a["fluency"]["ref_perplexity"] == pytest.approx(math.exp(-total / count), rel=1e-4)


def test_eval_bad_input(byte_gpt2_dir, tmp_path, capsys):
    assert cli(eval_argv(tmp_path / "a", tmp_path / "nowhere")) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli(["eval", "--task", "sqll", "--n", "2", "--out", str(tmp_path / "b")]) == 2
    assert "unknown task 'sqll'" in capsys.readouterr().err
    assert cli(eval_argv(tmp_path / "c", byte_gpt2_dir, extra=["--k", "-1"])) == 2
    assert "--k must be >= 0" in capsys.readouterr().err
    assert cli(eval_argv(tmp_path / "d", byte_gpt2_dir, extra=["--gold-scorer", "nope"])) == 2
    assert "unknown scorer 'nope'" in capsys.readouterr().err
    assert cli(eval_argv(tmp_path / "e", byte_gpt2_dir, extra=["--prompt-kwargs", "{kinds"])) == 2
    assert "--prompt-kwargs is not valid JSON" in capsys.readouterr().err
    assert cli(eval_argv(tmp_path / "f", byte_gpt2_dir, extra=["--prompt-kwargs", '{"kinds": ["nope"]}'])) == 2
    assert "unknown question kinds ['nope']" in capsys.readouterr().err


def test_eval_prompt_kwargs_restrict_the_kinds(byte_gpt2_dir, tmp_path):
    out = tmp_path / "ev"
    assert cli(eval_argv(out, byte_gpt2_dir, extra=["--prompt-kwargs", '{"kinds": ["max", "argmin"]}', "--ref-model",
                                               "none"])) == 0
    r = json.loads((out / "eval.json").read_text())["models"][0]
    assert set(r["greedy_accuracy"]) <= {"all", "max", "argmin"} and "ref_perplexity" not in r["fluency"]


def test_eval_prompt_kwargs_that_lengthen_prompts_fit_the_env(byte_gpt2_dir, tmp_path):
    """Tables of up to 12 rows make longer prompts than the task's default bound (6 rows): the eval env takes its
    prompt bound from the same prompt arguments, so they fit (before, the env refused them as too long)."""
    out = tmp_path / "ev"
    assert cli(eval_argv(out, byte_gpt2_dir, extra=["--prompt-kwargs", '{"min_rows": 11, "max_rows": 12}',
                                               "--ref-model", "none"])) == 0
    r = json.loads((out / "eval.json").read_text())["models"][0]
    assert r["n"] == 6 and all(e["prompt"].count("\n") > 14 for e in r["examples"])  # the long tables were used
