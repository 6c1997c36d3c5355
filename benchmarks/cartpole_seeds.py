"""More CartPole seeds for the validation against SB3 (issue 3): one agent, a range of seeds, 100k steps each
with rl-zoo's hyperparameters; prints and writes each seed's final rolling-20 return and its best.

``textgym validate-sb3`` runs seeds 0..N-1 of both agents in one process; this script runs further seeds, one
agent per process, so the two agents can run side by side on two cores:

    python benchmarks/cartpole_seeds.py ours 10 30 &  python benchmarks/cartpole_seeds.py sb3 10 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents.ppo.agent import PPOAgent, PPOConfig
from agents.sb3_adapter import SB3Agent


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("agent", choices=["ours", "sb3"])
    p.add_argument("first_seed", type=int)
    p.add_argument("end_seed", type=int, help="exclusive")
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/cartpole_seeds_AGENT_A_B.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out: dict[int, dict[str, float]] = {}
    for seed in range(args.first_seed, args.end_seed):
        cfg = PPOConfig.rl_zoo_cartpole(seed=seed)
        agent = (PPOAgent if args.agent == "ours" else SB3Agent)("CartPole-v1", cfg)
        agent.learn(args.total_timesteps)
        returns = [e[1] for e in agent.episodes]
        rolling = [float(np.mean(returns[max(0, i - 19): i + 1])) for i in range(len(returns))]
        out[seed] = {"final_rolling_20": float(np.mean(returns[-20:])), "best_rolling_20": max(rolling)}
        print(args.agent, seed, out[seed], flush=True)
    path = Path(args.out or f"benchmarks/results/cartpole_seeds_{args.agent}_{args.first_seed}_{args.end_seed}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": args.agent, "total_timesteps": args.total_timesteps,
                                "seeds": out}, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
