"""Tests of textgym/registration.py: the table of ids, gym.make with and without importing textgym, overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym

import textgym
from tests.envs.helpers import CountScorer
from textgym.envs.vector import BatchedTextGenEnv


def test_registration_table():
    for env_id, (doc, kwargs) in textgym.TASKS.items():
        spec = gym.spec(env_id)
        assert spec.entry_point == "textgym.envs.text_gen:TextGenEnv"
        assert spec.vector_entry_point == "textgym.envs.vector:BatchedTextGenEnv"
        assert spec.kwargs == kwargs and doc and "." not in doc[-1:]
    textgym.register_envs()  # idempotent: no "overriding environment" warning, no error
    assert "TextGen-v0" in gym.registry


def test_make_kwargs_override():
    env = gym.make("TextGen-Copy-v0", max_new_tokens=3, reward_mode="sequence")
    assert env.unwrapped.max_new_tokens == 3 and env.unwrapped.reward_mode == "sequence"
    env = gym.make("TextGen-v0", tokenizer="char:abc", prompts=["ab"], scorer=CountScorer(), max_new_tokens=2)
    assert env.unwrapped.vocab_size == 4 and env.unwrapped.max_length == 4


def test_make_with_namespace_prefix_in_fresh_interpreter():
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'textgym' not in sys.modules\n"
        "env = gym.make('textgym:TextGen-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert obs in env.observation_space\n"
        "print('ok', type(env.unwrapped).__name__, env.unwrapped.vocab_size)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok TextGenEnv")


def test_make_vec_default_is_batched_and_sync_on_request():
    kw = dict(tokenizer="char:abc", prompts=["ab"], scorer=CountScorer(), max_new_tokens=2)
    assert isinstance(gym.make_vec("TextGen-v0", num_envs=2, **kw), BatchedTextGenEnv)
    sync = gym.make_vec("TextGen-v0", num_envs=2, vectorization_mode="sync", **kw)
    assert isinstance(sync, gym.vector.SyncVectorEnv)
