"""Tests of textgym/envs/text_gen.py: the env's contract, determinism, pickling, bad inputs, the seed's example."""

from __future__ import annotations

import json
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import textgym
from tests.envs.helpers import PROMPTS, RatingsScorer, toy_env
from textgym.envs.text_gen import TextGenEnv
from textgym.envs.vector import BatchedTextGenEnv
from textgym.tokenizers import WordTokenizer

ALL_IDS = list(textgym.TASKS)


def _rollout(env: TextGenEnv, seed: int, n_episodes: int, action_seed: int = 0):
    """Episodes as (prompt, completion_ids, rewards, end_reason) with seeded random actions."""
    rng = np.random.default_rng(action_seed)
    out = []
    env.reset(seed=seed)
    for _ in range(n_episodes):
        rewards, done, info = [], False, {}
        while not done:
            _, r, done, trunc, info = env.step(int(rng.integers(env.vocab_size)))
            assert trunc is False
            rewards.append(r)
        out.append((env.prompt.text, env.completion_ids, rewards, info["end_reason"]))
        env.reset()
    return out


# -- every registered id ----------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_check_env_no_warnings(env_id):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        env = gym.make(env_id)
        check_env(env.unwrapped, skip_render_check=True)
        check_env(gym.make(env_id, render_mode="ansi").unwrapped)  # with the render check


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_check_env_no_warnings(env_id):
    sb3_env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_env_checker.check_env(gym.make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_registered_id_episode(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and isinstance(info["prompt"], str)
    (_, completion, rewards, reason), = _rollout(env.unwrapped, seed=0, n_episodes=1)
    assert 1 <= len(completion) <= env.unwrapped.max_new_tokens
    assert np.isfinite(rewards).all() and reason in ("eos", "stop", "budget")


# -- determinism and pickling ----------------------------------------------------------------------------
@pytest.mark.parametrize("reward_mode", ["sequence", "token"])
def test_same_seed_same_episodes(reward_mode):
    a = _rollout(toy_env(reward_mode=reward_mode), seed=123, n_episodes=20)
    b = _rollout(toy_env(reward_mode=reward_mode), seed=123, n_episodes=20)
    assert a == b
    c = _rollout(toy_env(reward_mode=reward_mode), seed=124, n_episodes=20)
    assert [e[0] for e in a] != [e[0] for e in c]  # another seed draws other prompts


@pytest.mark.parametrize("steps_before", [None, 0, 2])
def test_pickle_round_trip(steps_before):
    env = toy_env(reward_mode="token", stop_strings=("cc",))
    if steps_before is not None:
        env.reset(seed=5)
        for a in range(steps_before):
            env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    if steps_before is None:  # a fresh env: the clone behaves like the original from reset on
        env.reset(seed=5)
        clone.reset(seed=5)
    assert clone.completion_ids == env.completion_ids
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = int(rng.integers(env.vocab_size))
        r1, r2 = env.step(a), clone.step(a)
        np.testing.assert_array_equal(r1[0]["input_ids"], r2[0]["input_ids"])
        assert r1[1:4] == r2[1:4] and r1[4].keys() == r2[4].keys()
        if r1[2]:
            o1, o2 = env.reset(), clone.reset()  # the generators were pickled too: same next prompt
            np.testing.assert_array_equal(o1[0]["input_ids"], o2[0]["input_ids"])


# -- the contract, property-based ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_new_tokens=st.integers(1, 6),
    reward_mode=st.sampled_from(["sequence", "token"]),
    stop=st.sampled_from([(), ("ab",), ("c", "ba")]),
    action_size=st.sampled_from([None, 7]),
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.integers(0, 3), min_size=1, max_size=40),
)
def test_random_episodes_keep_the_contract(max_new_tokens, reward_mode, stop, action_size, seed, actions):
    env = toy_env(max_new_tokens=max_new_tokens, reward_mode=reward_mode, stop_strings=stop,
                  action_size=action_size, action_mask="vocab")
    obs, info = env.reset(seed=seed)
    prompt_ids = list(env.tokenizer.encode(info["prompt"]))
    completion: list[int] = []
    for a in actions:
        assert obs in env.observation_space
        n = len(prompt_ids) + len(completion)
        mask, ids = obs["attention_mask"], obs["input_ids"]
        assert mask[:n].all() and not mask[n:].any()  # the mask is exactly the prefix
        assert ids[:n].tolist() == prompt_ids + completion and (ids[n:] == env.pad_token_id).all()
        obs, reward, terminated, truncated, info = env.step(a)
        completion.append(a)
        assert np.isfinite(reward) and truncated is False
        assert len(completion) <= max_new_tokens  # ends by the budget at the latest
        if terminated:
            assert info["completion_length"] == len(completion)
            assert info["end_reason"] in ("eos", "stop", "budget")
            assert (info["end_reason"] == "budget") == (a != env.eos_token_id and len(completion) == max_new_tokens
                                                          and not any(s in info["completion"] for s in stop))
            if reward_mode == "sequence":
                assert reward == info["score"]
            obs, info = env.reset()
            prompt_ids, completion = list(env.tokenizer.encode(info["prompt"])), []
        else:
            assert info["action_mask"].tolist() == [1] * env.vocab_size + [0] * (env.action_size - env.vocab_size)


# -- the seed's worked example ---------------------------------------------------------------------------
def test_worked_example_discounted_return():
    words = ["Describe", "a", "fox:", "The", "quick", "brown", "fox"]
    env = TextGenEnv(WordTokenizer(words), prompts=["Describe a fox:"], scorer=RatingsScorer([3, 4, 5, 4]),
                     max_new_tokens=4, reward_mode="token")
    env.reset(seed=0)
    rewards = []
    for word in ["The", "quick", "brown", "fox"]:
        _, r, terminated, _, info = env.step(env.tokenizer.encode(word)[0])
        rewards.append(r)
    assert terminated and info["end_reason"] == "budget"
    assert info["completion"] == "The quick brown fox"
    assert rewards == [3.0, 4.0, 5.0, 4.0]
    gamma = 0.9
    g_from_quick = sum(gamma**k * r for k, r in enumerate(rewards[1:]))
    assert g_from_quick == pytest.approx(4 + 0.9 * 5 + 0.81 * 4) == pytest.approx(11.74)


# -- episode end, info, render, action mask --------------------------------------------------------------
def test_end_reasons_and_info():
    env = toy_env(stop_strings=("ca",), max_new_tokens=3)
    _, info = env.reset(options={"prompt": "ab"})
    assert info == {"prompt": "ab", "prompt_length": 2}
    _, r, term, _, info = env.step(env.eos_token_id)
    assert term and info["end_reason"] == "eos" and info["completion"] == "" and r == info["score"] == 0.0
    env.reset(options={"prompt": "ab"})
    env.step(2)
    _, r, term, _, info = env.step(0)
    assert term and info["end_reason"] == "stop" and info["completion"] == "ca"
    assert info["score_parts"] == {"count": 2.5} and r == 2.5
    env.reset(options={"prompt": 0})  # an index into the prompt set
    assert env.prompt.text == PROMPTS[0]
    for a in (1, 1, 1):
        _, r, term, _, info = env.step(a)
    assert term and info["end_reason"] == "budget" and info["completion_length"] == 3


def test_render_modes(capsys):
    env = toy_env(render_mode="ansi")
    assert env.render() == "<not reset>"
    env.reset(options={"prompt": "ab"})
    env.step(2)
    assert env.render() == "ab\u2502c"
    env.step(env.eos_token_id)
    assert env.render() == "ab\u2502c  [eos, score=1.000]"
    human = toy_env(render_mode="human")
    human.reset(options={"prompt": "ca"})
    human.step(0)
    assert capsys.readouterr().out == "ca\u2502\nca\u2502a\n"
    with pytest.raises(ValueError, match="render_mode must be one of"):
        toy_env(render_mode="rgb")  # (rgb_array is supported: tests/envs/test_render.py)


def test_callable_action_mask():
    def only_a_then_eos(prompt, completion):
        return np.array([1, 0, 0, 0], np.int8) if not completion else np.array([0, 0, 0, 1], np.int8)

    env = toy_env(action_mask=only_a_then_eos)
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [1, 0, 0, 0]
    _, _, _, _, info = env.step(0)
    assert info["action_mask"].tolist() == [0, 0, 0, 1]
    bad = toy_env(action_mask=lambda p, c: np.ones(2))
    with pytest.raises(ValueError, match=r"returned shape \(2,\), expected \(4,\)"):
        bad.reset(seed=0)


# -- bad input: a clear error that says what to do --------------------------------------------------------
def test_invalid_actions():
    env = toy_env(action_size=6)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 9 is outside the action space Discrete\(6\)"):
        env.step(9)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(-1)
    with pytest.raises(ValueError, match="must be an integer token id, got 1.0"):
        env.step(1.0)
    with pytest.raises(ValueError, match="padding id beyond the tokenizer's vocabulary.*mask logits >= 4"):
        env.step(5)
    env.step(np.int64(1))  # numpy integers are fine


def test_step_before_reset_and_after_end():
    env = toy_env(max_new_tokens=1)
    with pytest.raises(ResetNeeded, match=r"call reset\(\) before step\(\)"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ResetNeeded, match="episode has ended; call reset"):
        env.step(0)


def test_prompt_longer_than_budget():
    env = toy_env(max_prompt_tokens=3)
    with pytest.raises(ValueError, match="prompt has 5 tokens but max_prompt_tokens=3.*larger max_prompt_tokens"):
        env.reset(options={"prompt": "abcab"})
    with pytest.raises(ValueError, match="prompt is empty"):
        env.reset(options={"prompt": ""})


def test_bad_prompt_sources(tmp_path):
    with pytest.raises(ValueError, match="empty; give at least one prompt"):
        toy_env(prompts=[])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        toy_env(prompts=str(tmp_path / "missing.jsonl"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "ab"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON line"):
        toy_env(prompts=str(bad_json))
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text(json.dumps({"text": "ab"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a string field 'prompt'"):
        toy_env(prompts=str(no_field))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot read prompt file .* as UTF-8"):
        toy_env(prompts=str(binary))
    with pytest.raises(ValueError, match="unknown prompt generator 'nope'; available"):
        toy_env(prompts="gen:nope")
    with pytest.raises(ValueError, match="unknown built-in prompt set 'nope'"):
        toy_env(prompts="builtin:nope")


def test_bad_config():
    with pytest.raises(ValueError, match=r"action_size=3 is smaller than the tokenizer's vocabulary \(4 ids\)"):
        toy_env(action_size=3)
    with pytest.raises(ValueError, match="unknown scorer 'nope'; available"):
        toy_env(scorer="nope")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        toy_env(max_new_tokens=0)
    with pytest.raises(ValueError, match="reward_mode must be one of"):
        toy_env(reward_mode="tokens")
    with pytest.raises(ValueError, match="reward_mode='token' needs a per-token scorer"):
        toy_env(reward_mode="token", scorer=type("S", (), {"name": "s", "score": lambda self, xs: [0.0] * len(xs)})())
    with pytest.raises(ValueError, match="stop_strings must be non-empty strings"):
        toy_env(stop_strings=("",))
    with pytest.raises(gym.error.Error, match="TextGen-Nope"):
        gym.make("TextGen-Nope-v0")


def test_make_sample_takes_numpy_ids_and_equals_a_plain_sample():
    """make_sample turns any ints into Python ints; the envs build a Sample equal to (and as
    immutable as) one made by the dataclass's own __init__."""
    from textgym.core import Prompt, Sample

    env = toy_env()
    prompt = Prompt("hello", {"k": 1})
    s = env.make_sample(prompt, np.array([1, 2]), np.array([0, 1], dtype=np.int32))
    assert s.completion_ids == (0, 1) and all(type(i) is int for i in s.completion_ids + s.prompt_ids)
    plain = Sample(prompt="hello", completion=env.tokenizer.decode((0, 1)), prompt_ids=(1, 2), completion_ids=(0, 1),
                   tokens=s.tokens, meta={"k": 1}, finished=True)
    assert s == plain and hash(s.completion_ids) == hash(plain.completion_ids)
    assert len(s.tokens) == 2
    with pytest.raises(AttributeError):
        s.completion = "x"  # frozen


# -- reward_mode="token" refuses, at construction, a scorer that cannot score every step -----------------------
TOKEN_KW = dict(tokenizer="char:abc>", prompts="gen:copy", max_new_tokens=5, reward_mode="token")


@pytest.mark.parametrize("make", [TextGenEnv, lambda **kw: BatchedTextGenEnv(2, **kw)], ids=["single", "batched"])
def test_token_mode_refuses_a_combined_scorer_with_a_non_token_part(make):
    with pytest.raises(ValueError, match=r"reward_mode='token'.*scorer 'length' has no score_tokens method "
                                         r"\(a part of the combined scorer 'combined'\)"):
        make(scorer=["copy", "length"], **TOKEN_KW)
    env = make(scorer=["copy", {"name": "token-ratings", "ratings": [0.5] * 4}], **TOKEN_KW)  # every part can
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.int64) if isinstance(env, BatchedTextGenEnv) else 0)


@pytest.mark.parametrize("make", [TextGenEnv, lambda **kw: BatchedTextGenEnv(2, **kw)], ids=["single", "batched"])
def test_token_mode_refuses_the_human_scorer_before_the_first_step(make, tmp_path):
    from textgym.human.store import RatingStore

    with pytest.raises(ValueError, match="scorer 'human' scores finished samples only"):
        make(scorer={"name": "human", "db": str(tmp_path / "r.db")}, **TOKEN_KW)
    assert RatingStore(tmp_path / "r.db").samples() == []  # refused before anything was written
    make(scorer={"name": "human", "db": str(tmp_path / "r.db")}, **{**TOKEN_KW, "reward_mode": "sequence"})
