"""Train our PPO's token policy (embedding + GRU) on the toy text task TextGen-Copy-v0: copy 1-4 letters, then EOS.

    python examples/ppo_text_copy.py           # a few minutes on one CPU core
"""

from __future__ import annotations

import gymnasium as gym
import torch

from agents.demo import run_episodes
from agents.ppo.agent import PPOAgent, PPOConfig

torch.set_num_threads(1)
config = PPOConfig.sb3(n_envs=8, n_steps=64, learning_rate=1e-3,
                       update=dict(minibatch_size=128, n_epochs=10, ent_coef=0.01))
agent = PPOAgent("TextGen-Copy-v0", config, log_dir="runs/ppo_text_copy", progress_bar=True).learn(30_720)
agent.save("runs/ppo_text_copy/model")
env = gym.make("TextGen-Copy-v0", render_mode="ansi")
for r in run_episodes(env, agent, episodes=5, seed=123, deterministic=True):
    print(f"return {r['return']:.1f}  {r['text']}")
