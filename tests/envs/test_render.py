"""textgym/envs/render.py: render_mode="rgb_array" (fixed-size frames of the prefix) for both envs, Gymnasium's
frame wrappers, and SB3's make_vec_env + PPO("MultiInputPolicy") on a textgym id, which asks for rgb_array."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.envs import BatchedTextGenEnv
from textgym.envs.render import FRAME_SIZE, ansi_text

pytest.importorskip("PIL")
COPY = dict(tokenizer="char:abc>", prompts="gen:copy", scorer="copy", max_new_tokens=5, reward_mode="token")


def test_import_textgym_does_not_import_pillow():
    code = "import sys, textgym, gymnasium as gym; gym.make('TextGen-Copy-v0', render_mode='rgb_array'); " \
           "print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_rgb_array_frames_have_one_size_and_show_the_completion():
    env = gym.make("TextGen-Copy-v0", render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (*FRAME_SIZE, 3) and first.dtype == np.uint8
    assert (first != 255).any()  # the prompt is drawn
    env.step(0)
    second = env.render()
    assert second.shape == first.shape and (second != first).any()  # the new token is drawn
    long = gym.make("TextGen-DataAnalysis-v0", render_mode="rgb_array", tokenizer="byte", max_new_tokens=400)
    long.reset(seed=0)
    done = False
    while not done:  # 400 x's: far more text than fits, and the frame keeps its size
        _, _, done, _, _ = long.step(ord("x"))
    assert long.render().shape == (*FRAME_SIZE, 3)


def test_batched_frames_equal_the_single_envs_frames():
    single = gym.make("TextGen-Copy-v0", render_mode="rgb_array").unwrapped
    batched = BatchedTextGenEnv(3, render_mode="rgb_array", **COPY)
    assert all(f.shape == (*FRAME_SIZE, 3) for f in batched.render())  # before reset: "<not reset>" frames
    batched.reset(seed=5)
    batched.step(np.array([0, 1, 2]))
    frames = batched.render()
    assert len(frames) == 3
    for i, a in enumerate([0, 1, 2]):
        single.reset(seed=5 + i)
        single.step(a)
        if not batched.done[i]:  # the status lines differ once an episode ends
            np.testing.assert_array_equal(frames[i], single.render())


def test_ansi_text_marks_where_the_completion_starts():
    assert ansi_text("ab>", "ab", "[eos, score=1.000]") == "ab>\u2502ab  [eos, score=1.000]"
    assert ansi_text(None, "") == "<not reset>"


def test_gymnasium_render_collection_gathers_frames():
    env = gym.wrappers.RenderCollection(gym.make("TextGen-Copy-v0", render_mode="rgb_array"))
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
    frames = env.render()
    assert len(frames) == 4 and all(f.shape == (*FRAME_SIZE, 3) for f in frames)


def test_record_video_writes_a_video(tmp_path):
    pytest.importorskip("moviepy")
    env = gym.wrappers.RecordVideo(gym.make("TextGen-Copy-v0", render_mode="rgb_array"), str(tmp_path))
    env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, _ = env.step(0)
    env.close()
    assert list(tmp_path.glob("*.mp4"))


def test_sb3_make_vec_env_and_multi_input_ppo_on_a_textgym_id():
    """SB3's usual way to vectorise asks gym.make for render_mode="rgb_array"; then PPO learns a few hundred steps."""
    pytest.importorskip("torch")
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("TextGen-Copy-v0", n_envs=2, seed=0)
    obs = venv.reset()
    assert set(obs) == {"input_ids", "attention_mask"} and obs["input_ids"].shape[0] == 2
    assert venv.render().ndim == 3  # DummyVecEnv tiles the sub-envs' rgb frames
    model = sb3.PPO("MultiInputPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (2,) and venv.action_space.contains(action[0])
    venv.close()
