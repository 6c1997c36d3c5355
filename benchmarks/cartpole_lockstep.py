"""Ours vs SB3 in lock step on CartPole (issue 3): our policy starts from SB3's initial weights and both draw
the same random numbers (SB3's action RNG, the same minibatch permutations, as in
``tests/agents/test_sb3_parity.py``) for a whole rl-zoo run; prints how many episodes stay identical and the
final rolling-20 returns.

    python -m benchmarks.cartpole_lockstep 2        # seed 2, 100k steps (from the repo root: it imports tests/)
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from agents.ppo.agent import PPOAgent, PPOConfig
from agents.sb3_adapter import SB3Agent
from tests.agents.test_sb3_parity import copy_weights, max_param_diff, patch_permutations


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("seed", type=int)
    p.add_argument("--total-timesteps", type=int, default=100_000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = PPOConfig.rl_zoo_cartpole(seed=args.seed)
    sb3, ours = SB3Agent("CartPole-v1", cfg), PPOAgent("CartPole-v1", cfg)
    copy_weights(sb3.model.policy, ours.policy)
    iterations = -(-args.total_timesteps // cfg.batch_size)
    with pytest.MonkeyPatch.context() as mp:
        patch_permutations(mp, cfg.n_steps, cfg.n_envs, n_perms=cfg.update.n_epochs * iterations + 10)
        ours.sample_gen = torch.default_generator  # SB3 samples actions from the global torch RNG
        torch.manual_seed(1000 + args.seed)
        sb3.learn(args.total_timesteps)
        torch.manual_seed(1000 + args.seed)
        ours.learn(args.total_timesteps)
    same = 0
    for a, b in zip(ours.episodes, sb3.episodes):
        if a[:2] != b[:2]:
            break
        same += 1
    result = {"seed": args.seed, "identical_episodes": same,
              "first_divergence_step": ours.episodes[same][0] if same < len(ours.episodes) else None,
              "ours_final_rolling_20": float(np.mean([e[1] for e in ours.episodes[-20:]])),
              "sb3_final_rolling_20": float(np.mean([e[1] for e in sb3.episodes[-20:]])),
              "max_param_diff_at_end": max_param_diff(sb3.model.policy, ours.policy)}
    print(result)
    return result


if __name__ == "__main__":
    main()
