"""Tests of textgym/envs/vector.py: BatchedTextGenEnv against Gymnasium's SyncVectorEnv, modes, errors."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode

from tests.envs.helpers import CountScorer, assert_infos_equal, toy_env, toy_kwargs
from textgym.envs.text_gen import TextGenEnv
from textgym.envs.vector import BatchedTextGenEnv

N = 4


def _run_both(batched, reference, seed: int, n_steps: int, action_seed: int = 0, high: int = 4):
    """Reset both with ``seed``, step both with the same random actions; compare everything returned."""
    o1, i1 = batched.reset(seed=seed)
    o2, i2 = reference.reset(seed=seed)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    assert_infos_equal(i1, i2, "reset")
    rng = np.random.default_rng(action_seed)
    n_ends = 0
    for t in range(n_steps):
        actions = rng.integers(0, high, size=batched.num_envs)
        r1, r2 = batched.step(actions), reference.step(actions)
        for k in r1[0]:
            np.testing.assert_array_equal(r1[0][k], r2[0][k], err_msg=f"step {t} obs {k}")
        for j, name in ((1, "rewards"), (2, "terminations"), (3, "truncations")):
            np.testing.assert_array_equal(r1[j], r2[j], err_msg=f"step {t} {name}")
        assert r1[1].dtype == np.float64 and r1[2].dtype == np.bool_
        assert_infos_equal(r1[4], r2[4], f"step {t} info")
        n_ends += int(r1[2].sum())
    return n_ends


@pytest.mark.parametrize("reward_mode", ["sequence", "token"])
@pytest.mark.parametrize("stop", [(), ("ca",)])
def test_same_as_sync_vector_env(reward_mode, stop):
    kw = toy_kwargs(reward_mode=reward_mode, stop_strings=stop)
    batched = BatchedTextGenEnv(N, **kw)
    sync = gym.vector.SyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(N)])
    n_ends = _run_both(batched, sync, seed=3, n_steps=60)
    assert n_ends > 20  # the comparison crossed many episode ends and autoresets


def test_same_as_sync_with_action_mask():
    kw = toy_kwargs(action_mask=lambda prompt, completion: np.array([1, 1, len(completion) > 0, 1], np.int8))
    batched = BatchedTextGenEnv(N, **kw)
    sync = gym.vector.SyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(N)])
    _run_both(batched, sync, seed=11, n_steps=30)


def test_same_as_async_vector_env():
    kw = toy_kwargs()
    batched = BatchedTextGenEnv(N, **kw)
    async_env = gym.vector.AsyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(N)])
    try:
        assert _run_both(batched, async_env, seed=5, n_steps=25) > 5
    finally:
        async_env.close()


def test_spaces_match_sync():
    batched = BatchedTextGenEnv(N, **toy_kwargs())
    sync = gym.vector.SyncVectorEnv([lambda: toy_env() for _ in range(N)])
    assert batched.single_observation_space == sync.single_observation_space
    assert batched.observation_space == sync.observation_space
    assert batched.action_space == sync.action_space
    assert batched.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = batched.reset(seed=0)
    assert obs in batched.observation_space
    assert obs["input_ids"].shape == (N, batched.max_length) and obs["input_ids"].dtype == np.int64


def test_disabled_mode_rollout_until_all_done():
    env = BatchedTextGenEnv(N, autoreset_mode="disabled", **toy_kwargs(max_new_tokens=5))
    obs, _ = env.reset(seed=0)
    assert np.isnan(env.scores).all() and not env.done.any()
    rng = np.random.default_rng(1)
    steps = 0
    while not env.done.all():
        was_done = env.done.copy()
        before = env.input_ids.copy()
        obs, rewards, term, trunc, info = env.step(rng.integers(0, 4, size=N))
        steps += 1
        assert not trunc.any()
        # finished envs ignore the action: reward 0, still terminated, observation unchanged
        assert (rewards[was_done] == 0).all() and term[was_done].all()
        np.testing.assert_array_equal(obs["input_ids"][was_done], before[was_done])
        if "score" in info:
            newly = info["_score"]
            assert not (newly & was_done).any()
            np.testing.assert_array_equal(env.scores[newly], info["score"][newly])
    assert steps <= 5
    assert np.isfinite(env.scores).all()
    lengths = env.lengths - env.prompt_lengths
    assert ((lengths >= 1) & (lengths <= 5)).all()
    for i in range(N):
        np.testing.assert_array_equal(env.attention_mask[i], np.arange(env.max_length) < env.lengths[i])
    # stepping again changes nothing
    obs2, rewards, term, _, info = env.step(np.zeros(N, dtype=np.int64))
    assert term.all() and (rewards == 0).all() and info == {}
    np.testing.assert_array_equal(obs2["input_ids"], obs["input_ids"])


def test_disabled_mode_reset_mask():
    env = BatchedTextGenEnv(N, autoreset_mode=AutoresetMode.DISABLED, **toy_kwargs(max_new_tokens=1))
    env.reset(seed=0)
    env.step(np.zeros(N, dtype=np.int64))
    assert env.done.all()
    mask = np.array([True, False, True, False])
    _, info = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(env.done, ~mask)
    np.testing.assert_array_equal(info["_prompt"], mask)
    assert np.isnan(env.scores[mask]).all() and np.isfinite(env.scores[~mask]).all()


def test_reset_options_prompts_and_views_read_only():
    env = BatchedTextGenEnv(3, **toy_kwargs())
    obs, info = env.reset(options={"prompts": ["a", "abc", 1]})
    assert list(info["prompt"]) == ["a", "abc", "ab"]
    np.testing.assert_array_equal(env.prompt_lengths, [1, 3, 2])
    np.testing.assert_array_equal(obs["attention_mask"].sum(1), [1, 3, 2])
    for view in (env.lengths, env.done, env.scores, env.prompt_lengths, env.input_ids):
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1
    _, info = env.reset(options={"prompt": "cab"})
    assert list(info["prompt"]) == ["cab"] * 3


def test_seeds_reproduce_and_differ():
    a, b = BatchedTextGenEnv(8, **toy_kwargs()), BatchedTextGenEnv(8, **toy_kwargs())
    np.testing.assert_array_equal(a.reset(seed=7)[0]["input_ids"], b.reset(seed=7)[0]["input_ids"])
    assert list(a.reset(seed=[1] * 8)[1]["prompt"]) == [a.prompts[0].text] * 8


def test_pickle_round_trip_mid_episode():
    env = BatchedTextGenEnv(N, **toy_kwargs())
    env.reset(seed=2)
    env.step(np.array([0, 1, 2, 0]))
    clone = pickle.loads(pickle.dumps(env))
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.integers(0, 4, size=N)
        r1, r2 = env.step(a), clone.step(a)
        np.testing.assert_array_equal(r1[0]["input_ids"], r2[0]["input_ids"])
        np.testing.assert_array_equal(r1[1], r2[1])
        np.testing.assert_array_equal(env.lengths, clone.lengths)  # the views follow the unpickled state
        np.testing.assert_array_equal(env.done, clone.done)


def test_from_env_and_from_id_and_make_vec():
    base = toy_env(reward_mode="token")
    env = BatchedTextGenEnv.from_env(gym.wrappers.PassiveEnvChecker(base), 2)
    assert env.tokenizer is base.tokenizer and env.scorer is base.scorer and env.num_envs == 2
    with pytest.raises(TypeError, match="TextGenEnv"):
        BatchedTextGenEnv.from_env(gym.make("CartPole-v1"), 2)
    with pytest.raises(ValueError, match="unknown textgym env id"):
        BatchedTextGenEnv.from_id("TextGen-Nope-v0", 2)


def test_bad_inputs():
    env = BatchedTextGenEnv(N, **toy_kwargs())
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(np.zeros(N, dtype=np.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"actions\[2\].*outside the action space"):
        env.step(np.array([0, 0, 9, 0]))
    with pytest.raises(ValueError, match=r"actions\[0\].*integer token id"):
        env.step(np.array([0.5, 0, 0, 0]))
    padded = BatchedTextGenEnv(N, **toy_kwargs(action_size=8))
    padded.reset(seed=0)
    with pytest.raises(ValueError, match="padding id"):
        padded.step(np.array([0, 5, 0, 0]))
    with pytest.raises(ValueError, match="num_envs"):
        BatchedTextGenEnv(0, **toy_kwargs())
    with pytest.raises(ValueError, match="autoreset_mode"):
        BatchedTextGenEnv(2, autoreset_mode="same_step", **toy_kwargs())
    with pytest.raises(ValueError, match="list of num_envs=4 prompts"):
        env.reset(options={"prompts": ["a"]})
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(N, dtype=bool)})


def test_render_ansi():
    env = BatchedTextGenEnv(2, render_mode="ansi", **toy_kwargs())
    env.reset(options={"prompts": ["ab", "c"]})
    env.step(np.array([0, 3]))
    lines = env.render()
    assert lines[0] == "ab\u2502a" and lines[1].startswith("c\u2502  [score=")


def test_make_vec_uses_batched_env():
    import textgym  # noqa: F401  (registers the ids)

    env = gym.make_vec("TextGen-v0", num_envs=3, tokenizer="char:abc", prompts=["ab", "c"], scorer=CountScorer(),
                       max_new_tokens=3)
    assert isinstance(env, BatchedTextGenEnv) and env.num_envs == 3
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space


def test_shared_config_reads_as_on_the_single_env_and_the_inner_env_is_private():
    single = toy_env(reward_mode="token")
    env = BatchedTextGenEnv.from_env(single, 3)
    for name in ("tokenizer", "scorer", "prompt_source", "reward_mode", "stop_strings", "max_new_tokens",
                 "max_prompt_tokens", "max_length", "vocab_size", "action_size", "eos_token_id", "pad_token_id"):
        assert getattr(env, name) is getattr(single, name), name
    assert not hasattr(env, "env")  # not gym.Wrapper.env: the batched env is no wrapper
    with pytest.raises(AttributeError):
        env.max_new_tokens = 3
    s = env.make_sample(single.prompt_source.sample(np.random.default_rng(0)), [1, 2], [0])
    assert s.completion_ids == (0,) and s.finished


def test_every_bad_action_id_is_refused_in_every_dtype_and_subset():
    """Negative ids, padding ids and ids past the action space raise, naming the env, whatever the dtype; valid
    ones of any integer dtype step. (The uint64-view range check this replaced let -1 through: numpy 2 casts a
    uint64 index back to intp, so -1 wrapped to the last id instead of raising.)"""
    N = 5
    env = BatchedTextGenEnv(N, autoreset_mode="disabled", **toy_kwargs(action_size=6))  # 4 ids, 2 padding ids
    for v, why in [(-1, "outside the action space"), (-2**63, "outside the action space"), (4, "padding id"),
                   (5, "padding id"), (6, "outside the action space"), (2**40, "outside the action space")]:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=rf"actions\[4\]: action {v} .*{why}"):
            env.step(np.array([0, 1, 2, 0, v]))
        assert env.lengths.tolist() == env.prompt_lengths.tolist()  # nothing was written
    env.reset(seed=0)
    env.step(np.array([0, 1, 2, 3, 3]))  # envs 3 and 4 end (EOS); a bad id for an ended env is not read
    env.step(np.array([1, 1, 1, -1, 99]))
    with pytest.raises(ValueError, match=r"actions\[2\]: action -1"):
        env.step(np.array([0, 0, -1, 0, 0]))
    for dt in (np.int8, np.uint8, np.int32, np.uint64):
        env.reset(seed=0)
        env.step(np.array([3, 2, 1, 0, 1], dtype=dt))
        assert env.done.tolist() == [True, False, False, False, False]
