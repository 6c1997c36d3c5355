"""``textgym demo``: roll out a few episodes of an env with the random agent or a saved PPO agent, and print
each episode (the rendered text for textgym envs) with its return."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="TextGen-Copy-v0", help="a registered env id (default: TextGen-Copy-v0)")
    parser.add_argument("--agent", default="random",
                        help="'random', or a folder written by PPOAgent.save (default: random)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to roll out (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env and the agent (default: 0)")
    parser.add_argument("--deterministic", action="store_true", help="greedy actions for a PPO agent")


def run_episodes(env: Any, agent: Any, episodes: int, seed: int, deterministic: bool = False) -> list[dict]:
    """Roll out ``episodes`` episodes; returns ``[{"return", "length", "text"}]`` (text for ansi-renderable envs)."""
    out = []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done, ret, n = False, 0.0, 0
        while not done:
            action = agent.predict(obs, deterministic=deterministic, action_mask=info.get("action_mask"))
            obs, reward, term, trunc, info = env.step(int(action))
            ret, n, done = ret + float(reward), n + 1, term or trunc
        text = env.render() if env.render_mode == "ansi" else None
        out.append({"return": ret, "length": n, "text": text})
    return out


def main(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from agents.ppo.agent import check_env_id

    if args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {args.episodes}")
    check_env_id(args.env)
    render = "ansi" if "ansi" in gym.spec(args.env).kwargs.get("render_modes", ["ansi"]) and \
        args.env.startswith("TextGen") else None
    env = gym.make(args.env, render_mode=render) if render else gym.make(args.env)
    if args.agent == "random":
        from agents.random_agent import RandomAgent

        agent: Any = RandomAgent(env.action_space, seed=args.seed)
    else:
        if not (Path(args.agent) / "config.json").exists():
            raise ValueError(f"--agent {args.agent!r} is neither 'random' nor a folder written by PPOAgent.save")
        from agents.ppo.agent import PPOAgent

        agent = PPOAgent.load(args.agent, env=args.env)
    results = run_episodes(env, agent, args.episodes, args.seed, args.deterministic)
    for i, r in enumerate(results):
        line = f"episode {i}: return {r['return']:.3f}, {r['length']} steps"
        print(line + (f"  {r['text']}" if r["text"] else ""))
    print(f"mean return {np.mean([r['return'] for r in results]):.3f} over {len(results)} episodes")
    env.close()
    return 0
