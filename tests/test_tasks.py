"""Tests for textgym/tasks.py: generated prompts, their answers (checked independently), and the toy task ids."""

from __future__ import annotations

import csv
import io
import statistics

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.core import Sample
from textgym.prompts import PROMPT_GENERATORS, PromptSet, load_prompts
from textgym.registration import TASKS
from textgym.scorers.data_analysis import DataAnalysisScorer
from textgym.tokenizers import CharTokenizer, make_tokenizer

TOY_IDS = ["TextGen-Target-v0", "TextGen-Copy-v0", "TextGen-Reverse-v0", "TextGen-Count-v0"]


def draws(spec, seed, n=20, **kw):
    src = load_prompts(spec, **kw)
    rng = np.random.default_rng(seed)
    return [src.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("name", ["target", "copy", "reverse", "count", "data-analysis"])
def test_same_seed_same_prompts(name):
    assert draws(f"gen:{name}", 3) == draws(f"gen:{name}", 3)
    if name != "target":
        assert draws(f"gen:{name}", 3) != draws(f"gen:{name}", 4)


def test_toy_answers():
    for p in draws("gen:copy", 0, 50):
        letters = p.text[:-1]
        assert p.text.endswith(">") and 1 <= len(letters) <= 4 and set(letters) <= set("abc")
        assert p.meta["target"] == letters
    for p in draws("gen:reverse", 0, 50):
        assert p.meta["target"] == "".join(reversed(p.text[:-1]))
    for p in draws("gen:count", 0, 50):
        letters = p.text[:-1]
        assert p.text.endswith("?") and 1 <= len(letters) <= 9 and set(letters) <= set("ab")
        assert p.meta["target"] == str(sum(c == "a" for c in letters))
    assert {p.meta["target"] for p in draws("gen:target", 0, 5)} == {"abcda"}


def optimal_actions(env, prompt):
    tok = env.unwrapped.tokenizer
    return tok.encode(prompt.meta["target"]) + [tok.eos_token_id]


@pytest.mark.parametrize("env_id", TOY_IDS)
def test_toy_task_optimum_is_reachable(env_id):
    """Each toy task's vocabulary covers its prompts and targets, and target + EOS fits the budget."""
    env = gym.make(env_id)
    for seed in range(20):
        env.reset(seed=seed)
        prompt = env.unwrapped.prompt
        actions = optimal_actions(env, prompt)
        assert len(actions) <= env.unwrapped.max_new_tokens
        rewards = []
        for a in actions:
            _, r, terminated, truncated, info = env.step(a)
            rewards.append(r)
        assert terminated and not truncated and info["end_reason"] == "eos"
        assert info["score"] == 1.0 and rewards == [1.0] * len(actions)


@pytest.mark.parametrize("env_id", TOY_IDS)
def test_toy_task_wrong_answer_scores_less(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    eos = env.unwrapped.eos_token_id
    _, r, terminated, _, info = env.step(eos)  # EOS at once: wrong for every non-empty target
    assert terminated and r == 0.0 and info["score"] < 1.0


def test_toy_vocabularies_cover_the_generators():
    for env_id in TOY_IDS:
        _, kw = TASKS[env_id]
        alphabet = kw["tokenizer"].removeprefix("char:")
        src = load_prompts(kw["prompts"])
        for p in draws(kw["prompts"], 1, 200):
            assert set(p.text) | set(p.meta["target"]) <= set(alphabet), env_id
        assert src.max_prompt_tokens(CharTokenizer(alphabet)) >= max(len(p.text) for p in draws(kw["prompts"], 2, 200))


def compute_answer(meta):
    """The answer recomputed from the CSV text alone."""
    rows = list(csv.DictReader(io.StringIO(meta["table"])))
    col, kind = meta["column"], meta["kind"]
    values = [float(r[col]) for r in rows]
    if kind == "mean":
        return statistics.fmean(values)
    if kind == "sum":
        return sum(values)
    if kind in ("max", "min"):
        return max(values) if kind == "max" else min(values)
    if kind == "count":
        return sum(v > meta["threshold"] for v in values)
    best = max(values) if kind == "argmax" else min(values)
    return [r["item"] for r in rows if float(r[col]) == best][0]


def test_data_analysis_answers_match_an_independent_computation():
    prompts = draws("gen:data-analysis", 0, 300)
    kinds = set()
    for p in prompts:
        m = p.meta
        kinds.add(m["kind"])
        rows = list(csv.DictReader(io.StringIO(m["table"])))
        assert 3 <= len(rows) <= 6 and 2 <= len(rows[0]) <= 3 and list(rows[0])[0] == "item"
        assert m["table"] in p.text and m["question"] in p.text and p.text.endswith("Answer:")
        want = compute_answer(m)
        if m["answer_type"] == "label":
            assert m["answer"] == want and m["answer"] in m["labels"]
        else:
            assert m["answer"] == pytest.approx(want, abs=1e-4)
    assert kinds == {"mean", "sum", "max", "min", "count", "argmax", "argmin"}


def test_data_analysis_scorer_accepts_the_true_answer():
    prompts = draws("gen:data-analysis", 1, 100)
    samples = [Sample(p.text, f" {p.meta['answer']}", meta=p.meta) for p in prompts]
    np.testing.assert_array_equal(DataAnalysisScorer().score(samples), 1.0)


def test_data_analysis_fixed_set_and_kinds():
    fixed = load_prompts("gen:data-analysis", n=10, seed=5)
    assert isinstance(fixed, PromptSet) and len(fixed) == 10
    assert [p.text for p in fixed] == [p.text for p in load_prompts("gen:data-analysis", n=10, seed=5)]
    only = draws("gen:data-analysis", 0, 30, kinds=["argmin"])
    assert {p.meta["kind"] for p in only} == {"argmin"}
    with pytest.raises(ValueError, match="unknown question kinds"):
        load_prompts("gen:data-analysis", kinds=["median"])
    with pytest.raises(ValueError, match="positive int"):
        load_prompts("gen:data-analysis", n=0)


def test_data_analysis_budget_covers_prompts_with_the_default_tokenizer():
    pytest.importorskip("transformers")
    try:
        tok = make_tokenizer("default")
    except ImportError as e:
        pytest.skip(str(e))
    src = load_prompts("gen:data-analysis")
    budget = src.max_prompt_tokens(tok)
    longest = max(len(tok.encode(p.text)) for p in draws("gen:data-analysis", 99, 500))
    assert longest <= budget


def test_generators_are_registered():
    assert {"target", "copy", "reverse", "count", "data-analysis"} <= set(PROMPT_GENERATORS)


# -- difficulty and curriculum (issue 9 item 3) ------------------------------------------------------------
def test_difficulty_knob_kinds_and_rows():
    for p in draws("gen:data-analysis", 0, 60, kinds=["max", "argmin"], min_rows=2, max_rows=3):
        assert p.meta["kind"] in ("max", "argmin") and len(p.meta["labels"]) in (2, 3)


def test_curriculum_widens_the_kinds_when_accuracy_passes_the_threshold():
    from textgym.tasks import DataAnalysisTask

    task = DataAnalysisTask(curriculum=[["max"], ["min"], ["argmax", "argmin"]], threshold=0.75, window=8)
    rng = np.random.default_rng(0)
    assert {task.sample(rng).meta["kind"] for _ in range(30)} == {"max"}
    task.observe([None] * 8, {"correct": np.array([1, 1, 1, 1, 1, 0, 0, 0.0])})  # 5/8 < 0.75: stays
    assert task.kinds == ("max",) and task.stage == 0
    task.observe([None] * 4, {"correct": np.ones(4)})  # the last 8: 1,0,0,0,1,1,1,1 -> 5/8: stays
    assert task.stage == 0
    task.observe([None] * 2, {"correct": np.ones(2)})  # the last 8: 0,1,1,1,1,1,1 + 1 -> 7/8: widens
    assert task.kinds == ("max", "min") and task.stage == 1
    assert {task.sample(rng).meta["kind"] for _ in range(40)} == {"max", "min"}
    task.observe([None] * 8, {"correct": np.ones(8)})
    assert task.kinds == ("max", "min", "argmax", "argmin")
    task.observe([None] * 8, {"correct": np.zeros(8)})  # the last stage: nothing more to add, nothing taken away
    assert task.stage == 2
    with pytest.raises(ValueError, match="score part 'strict'"):
        DataAnalysisTask(curriculum=[["max"], ["min"]], curriculum_part="strict").observe([None], {"correct": [1]})
    with pytest.raises(ValueError, match="kinds or curriculum"):
        DataAnalysisTask(kinds=["max"], curriculum=[["min"]])
    with pytest.raises(ValueError, match="distinct kinds"):
        DataAnalysisTask(curriculum=[["max"], ["max"]])


def test_curriculum_through_the_batched_env():
    """The env reports finished episodes to the prompt source: right answers widen the kinds during a rollout."""
    from textgym.envs.vector import BatchedTextGenEnv

    env = BatchedTextGenEnv(4, autoreset_mode="disabled", tokenizer="byte", prompts="gen:data-analysis",
                            scorer="data-analysis", max_new_tokens=8,
                            prompt_kwargs={"curriculum": [["max"], ["min"]], "threshold": 1.0, "window": 4})
    task = env.prompt_source
    env.reset(seed=0)
    texts = [f"{p.meta['answer']}".encode() for p in env.prompts]  # every prompt answered right, then EOS
    for t in range(max(map(len, texts)) + 1):
        env.step(np.array([x[t] if t < len(x) else 256 for x in texts]))
    assert env.done.all() and env.scores.tolist() == [1.0] * 4
    assert task.kinds == ("max", "min")
    rng = np.random.default_rng(1)
    assert {task.sample(rng).meta["kind"] for _ in range(30)} == {"max", "min"}
