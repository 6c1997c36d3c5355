"""Train our PPO on CartPole-v1 with rl-zoo's tuned hyperparameters, then evaluate it greedily.

    python examples/ppo_cartpole.py            # about a minute on one CPU core
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from agents.logger import plot_metrics
from agents.ppo.agent import PPOAgent, PPOConfig

torch.set_num_threads(1)
agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=0), log_dir="runs/ppo_cartpole", progress_bar=True)
agent.learn(100_000)
agent.save("runs/ppo_cartpole/model")
plot_metrics("runs/ppo_cartpole/metrics.csv", ["rollout/ep_rew_mean", "train/approx_kl", "train/value_loss"],
             "runs/ppo_cartpole/metrics.png", title="PPO on CartPole-v1")

env = gym.make("CartPole-v1")
returns = []
for i in range(10):
    obs, _ = env.reset(seed=1000 + i)
    done, ret = False, 0.0
    while not done:
        obs, r, term, trunc, _ = env.step(int(agent.predict(obs, deterministic=True)))
        ret, done = ret + float(r), term or trunc
    returns.append(ret)
print(f"deterministic evaluation: mean return {np.mean(returns):.1f} over 10 episodes")
