"""Our PPO vs SB3's PPO on CartPole-v1 with rl-baselines3-zoo's tuned hyperparameters, in the same run.

Both agents: 8 envs x 32 steps, batch 256, 20 epochs, gamma 0.98, lambda 0.8, lr 1e-3 and clip 0.2 decayed
linearly, ent 0, SB3's other defaults (``PPOConfig.rl_zoo_cartpole``); the same seeds, ``torch.set_num_threads``
and budget (100k steps, as rl-zoo). Each env steps in a Python loop (our Gymnasium ``SyncVectorEnv`` with
same-step autoreset, SB3's ``DummyVecEnv``), so the speed comparison is of the agents, not of the envs. The two
run in turns, which goes first alternating by seed, so that drifts in machine load fall on both alike.
``--fused-adam`` adds a row for each agent with ``adam_fused=True`` (torch's fused Adam kernel, passed to SB3's
optimizer too); ``--native-vector`` one for ours on Gymnasium's numpy-vectorised CartPole (next-step autoreset):
both are options, not the defaults validated against SB3.

Measured per seed: steps/s of ``learn`` (wall clock), steps until the rolling mean of 20 training episodes
reaches 475, and the mean return of 10 deterministic evaluation episodes after training. The speed ratio is that
of the mean steps/s; the median of the per-seed ratios (ours over SB3 on the same seed) is recorded beside it, and
the ratio of steps per CPU second of the process (steadier than wall clock when other jobs share the machine).
Targets (issue 3): ours >= 1.5 x SB3's steps/s; ours' steps to 475 <= SB3's; both evaluations >= 475.

    python benchmarks/cartpole_vs_sb3.py --seeds 3 --out benchmarks/results/cartpole_vs_sb3.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.ppo.agent import PPOAgent, PPOConfig
from agents.validate import steps_to_threshold


def evaluate(agent: Any, n_episodes: int, seed: int) -> float:
    """Mean return of ``n_episodes`` deterministic episodes on a fresh CartPole-v1."""
    env = gym.make("CartPole-v1")
    returns = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + i)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(int(agent.predict(obs, deterministic=True)))
            ret += float(r)
            done = term or trunc
        returns.append(ret)
    env.close()
    return float(np.mean(returns))


def run(agent_name: str, seed: int, total: int, n_eval: int) -> dict[str, Any]:
    fused = {"adam_fused": True} if agent_name.endswith("-fused-adam") else {}
    if agent_name.startswith("sb3"):
        from agents.sb3_adapter import SB3Agent

        agent: Any = SB3Agent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=seed, **fused))
    elif agent_name in ("ours", "ours-fused-adam"):
        agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=seed, **fused))
    else:  # ours on the numpy-vectorised CartPole (Gymnasium's vector entry point, next-step autoreset)
        agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(
            seed=seed, vectorization_mode="vector_entry_point", autoreset_mode="next_step"))
    t0, c0 = time.perf_counter(), time.process_time()
    agent.learn(total)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = agent.model.num_timesteps if agent_name.startswith("sb3") else agent.num_timesteps
    return {"seed": seed, "steps_per_second": steps / elapsed, "seconds": elapsed, "steps_per_cpu_second": steps / cpu,
            "steps_to_475": steps_to_threshold(agent.episodes, 475.0, 20),
            "eval_return": evaluate(agent, n_eval, seed), "n_episodes": len(agent.episodes)}


def aggregate(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One agent's means over seeds."""
    reached = [r["steps_to_475"] for r in rs if r["steps_to_475"] is not None]
    return {"steps_per_second_mean": float(np.mean([r["steps_per_second"] for r in rs])),
            "steps_per_cpu_second_mean": float(np.mean([r["steps_per_cpu_second"] for r in rs])),
            "steps_to_475_median": float(np.median(reached)) if reached else None,
            "steps_to_475_reached": f"{len(reached)}/{len(rs)}",
            "eval_return_mean": float(np.mean([r["eval_return"] for r in rs])),
            "eval_return_min": float(np.min([r["eval_return"] for r in rs]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--total-timesteps", type=int, default=100_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for both agents")
    p.add_argument("--native-vector", action="store_true", help="add ours on Gymnasium's vectorised CartPole")
    p.add_argument("--fused-adam", action="store_true",
                   help="add both agents with torch's fused Adam (adam_fused=True)")
    p.add_argument("--out", default="benchmarks/results/cartpole_vs_sb3.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = ["ours", "sb3"] + (["ours-fused-adam", "sb3-fused-adam"] if args.fused_adam else []) + (
        ["ours-native-vector"] if args.native_vector else [])
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for seed in range(args.seeds):
        for name in names if seed % 2 == 0 else names[::-1]:  # interleaved, alternating who goes first
            r = run(name, seed, args.total_timesteps, args.eval_episodes)
            results[name].append(r)
            print(f"{name:>18} seed {seed}: {r['steps_per_second']:7.0f} steps/s, steps to 475 "
                  f"{r['steps_to_475']}, eval {r['eval_return']:.1f}", flush=True)

    summary = {n: aggregate(results[n]) for n in names}
    ours, sb3 = summary["ours"], summary["sb3"]
    speed_ratio = ours["steps_per_second_mean"] / sb3["steps_per_second_mean"]
    per_seed = [o["steps_per_second"] / s["steps_per_second"] for o, s in zip(results["ours"], results["sb3"])]
    cpu_ratio = ours["steps_per_cpu_second_mean"] / sb3["steps_per_cpu_second_mean"]
    targets = {
        "speed_ratio_ours_over_sb3": speed_ratio, "speed_target_1.5x_met": speed_ratio >= 1.5,
        "speed_ratio_cpu_time": cpu_ratio,
        "speed_ratio_per_seed": per_seed, "speed_ratio_per_seed_median": float(np.median(per_seed)),
        **({"speed_ratio_fused_adam": summary["ours-fused-adam"]["steps_per_second_mean"] /
            summary["sb3-fused-adam"]["steps_per_second_mean"]} if args.fused_adam else {}),
        "sample_efficiency_target_met": (ours["steps_to_475_median"] is not None and
                                         (sb3["steps_to_475_median"] is None or
                                          ours["steps_to_475_median"] <= sb3["steps_to_475_median"])),
        "eval_target_475_met": {n: summary[n]["eval_return_min"] >= 475 for n in names},
    }
    out = {"env": "CartPole-v1", "hyperparameters": PPOConfig.rl_zoo_cartpole().to_dict(),
           "total_timesteps": args.total_timesteps, "seeds": args.seeds, "torch_threads": args.threads,
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "torch": torch.__version__},
           "runs": results, "summary": summary, "targets": targets}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("\n| agent | steps/s | steps to rolling-20 mean 475 (median, reached) | deterministic eval (mean, min) |")
    print("|---|---|---|---|")
    for n in names:
        s = summary[n]
        med = "never" if s["steps_to_475_median"] is None else f"{s['steps_to_475_median']:.0f}"
        print(f"| {n} | {s['steps_per_second_mean']:.0f} | {med} ({s['steps_to_475_reached']}) | "
              f"{s['eval_return_mean']:.1f}, {s['eval_return_min']:.1f} |")
    print(f"\nspeed ratio ours/sb3: {speed_ratio:.2f} (per-seed median {np.median(per_seed):.2f}; target >= 1.5), "
          f"{cpu_ratio:.2f} in steps per CPU second; "
          f"targets: {targets}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
