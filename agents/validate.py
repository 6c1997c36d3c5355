"""``textgym validate-sb3``: train our PPO and SB3's PPO with the same hyperparameters, env, seeds and budget,
and compare their learning curves.

Writes to ``--out``:

- ``curves.csv``: ``agent, seed, timestep, episode_return`` for every finished training episode;
- ``curves.png``: per agent, the mean over seeds of the rolling mean (last ``--window`` episodes) return on a
  common grid of timesteps, with a 95% t confidence band;
- ``summary.json``: per agent the final return (mean over seeds of the mean return of each seed's last
  ``--window`` episodes, with a 95% t CI), the steps to reach ``--threshold`` (rolling mean), steps/s; the
  difference ours - SB3 of the final returns with percentile-bootstrap CIs (seeds resampled within each
  agent); and the verdict ``equivalent``: **TOST by bootstrap at alpha = 0.05**, i.e. the 90% bootstrap CI of
  the difference lies inside ``[-delta, +delta]``. ``delta`` is ``--delta`` if given, else 5% of the
  threshold (CartPole-v1: 23.75), else 10% of |SB3's final mean|. With few seeds the CI is wide, so
  "not equivalent" often means "not enough seeds to tell", which the JSON states as ``verdict``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.ppo.agent import PPOConfig

PRESETS = ("auto", "sb3", "rl-zoo-cartpole", "text-toy")


def preset_config(name: str, env_id: str, seed: int = 0) -> PPOConfig:
    """The shared hyperparameters of a comparison. ``auto``: rl-zoo's tuned CartPole settings for
    CartPole-v1, ``text-toy`` for TextGen ids, SB3's defaults otherwise."""
    if name == "auto":
        name = "rl-zoo-cartpole" if env_id == "CartPole-v1" else "text-toy" if env_id.startswith("TextGen") else "sb3"
    if name == "sb3":
        return PPOConfig.sb3(seed=seed)
    if name == "rl-zoo-cartpole":
        return PPOConfig.rl_zoo_cartpole(seed=seed)
    if name == "text-toy":  # short episodes (2-6 tokens): small rollouts, a little entropy bonus
        return PPOConfig.sb3(n_envs=8, n_steps=64, minibatch_size=128, n_epochs=10, learning_rate=1e-3,
                             ent_coef=0.01, seed=seed)
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, help="a registered Gymnasium env id with a Discrete action space")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. N-1) per agent (default: 5)")
    parser.add_argument("--total-timesteps", type=int, default=100_000, help="env steps per run (default: 100000)")
    parser.add_argument("--out", required=True, help="output folder for curves.csv, curves.png, summary.json")
    parser.add_argument("--preset", default="auto", choices=PRESETS,
                        help="shared hyperparameters (default: auto = rl-zoo-cartpole for CartPole-v1, "
                             "text-toy for TextGen ids, sb3 otherwise)")
    parser.add_argument("--n-envs", type=int, default=None, help="override the preset's number of envs")
    parser.add_argument("--n-steps", type=int, default=None, help="override the preset's steps per env per rollout")
    parser.add_argument("--minibatch-size", type=int, default=None, help="override the preset's minibatch size")
    parser.add_argument("--threshold", type=float, default=None,
                        help="return threshold for steps-to-threshold (default: the env spec's reward_threshold)")
    parser.add_argument("--window", type=int, default=20, help="episodes in the rolling mean (default: 20)")
    parser.add_argument("--delta", type=float, default=None, help="equivalence margin on the final return")
    parser.add_argument("--agents", default="ours,sb3", help="comma-separated subset of ours,sb3 (default: both)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both agents (default: 1)")


def run_one(agent_name: str, env_id: str, config: PPOConfig, total_timesteps: int) -> tuple[list, float]:
    """Train one agent; returns its episodes ``(timestep, return, length)`` and the steps per second."""
    if agent_name == "ours":
        from agents.ppo.agent import PPOAgent

        agent: Any = PPOAgent(env_id, config)
    else:
        from agents.sb3_adapter import SB3Agent

        agent = SB3Agent(env_id, config)
    t0 = time.perf_counter()
    agent.learn(total_timesteps)
    elapsed = time.perf_counter() - t0
    steps = agent.num_timesteps if agent_name == "ours" else agent.model.num_timesteps
    return list(agent.episodes), steps / elapsed


def rolling_curve(episodes: list[tuple[int, float]], grid: np.ndarray, window: int) -> np.ndarray:
    """At each grid timestep, the mean return of the last ``window`` episodes finished by then (nan before)."""
    ts = np.array([e[0] for e in episodes], dtype=float)
    rs = np.array([e[1] for e in episodes], dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(rs)])
    out = np.full(len(grid), np.nan)
    for j, g in enumerate(grid):
        k = int(np.searchsorted(ts, g, side="right"))  # episodes finished by g
        if k:
            lo = max(0, k - window)
            out[j] = (csum[k] - csum[lo]) / (k - lo)
    return out


def steps_to_threshold(episodes: list[tuple[int, float]], threshold: float, window: int) -> int | None:
    """First timestep at which the rolling mean of the last ``window`` episodes reaches ``threshold``."""
    rs = [e[1] for e in episodes]
    for k in range(window, len(rs) + 1):  # a full window first, so one lucky episode does not count
        if np.mean(rs[k - window : k]) >= threshold:
            return int(episodes[k - 1][0])
    return None


# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (no scipy dependency)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


def t_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% t confidence interval over seeds (nan bounds for one seed)."""
    x = np.asarray(x, float)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - h, m + h


def bootstrap_diff(a: np.ndarray, b: np.ndarray, levels: tuple[float, ...], n: int = 10_000,
                   seed: int = 0) -> dict[float, tuple[float, float]]:
    """Percentile bootstrap CIs of ``mean(a) - mean(b)``, resampling seeds within each group."""
    rng = np.random.default_rng(seed)
    da = rng.choice(a, (n, len(a))).mean(1) - rng.choice(b, (n, len(b))).mean(1)
    return {lv: (float(np.quantile(da, (1 - lv) / 2)), float(np.quantile(da, (1 + lv) / 2))) for lv in levels}


def summarize(runs: dict[str, dict[int, dict[str, Any]]], threshold: float | None, window: int,
              delta: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"window": window, "threshold": threshold, "agents": {}}
    finals: dict[str, np.ndarray] = {}
    for name, by_seed in runs.items():
        final = np.array([np.mean([e[1] for e in r["episodes"][-window:]]) if r["episodes"] else np.nan
                          for r in by_seed.values()])
        finals[name] = final
        m, lo, hi = t_ci(final)
        steps = {s: steps_to_threshold(r["episodes"], threshold, window) if threshold is not None else None
                 for s, r in by_seed.items()}
        reached = [v for v in steps.values() if v is not None]
        out["agents"][name] = {
            "seeds": sorted(by_seed), "final_return": {"mean": m, "ci95": [lo, hi], "per_seed": final.tolist()},
            "steps_to_threshold": {"per_seed": steps, "reached": len(reached),
                                   "median": float(np.median(reached)) if reached else None},
            "steps_per_second": {"mean": float(np.mean([r["fps"] for r in by_seed.values()])),
                                 "per_seed": [r["fps"] for r in by_seed.values()]},
            "n_episodes": [len(r["episodes"]) for r in by_seed.values()],
        }
    if {"ours", "sb3"} <= set(finals):
        a, b = finals["ours"], finals["sb3"]
        if delta is None:
            delta = 0.05 * abs(threshold) if threshold is not None else 0.1 * abs(float(b.mean()))
        cis = bootstrap_diff(a, b, (0.90, 0.95))
        lo90, hi90 = cis[0.90]
        equivalent = bool(-delta <= lo90 and hi90 <= delta)
        different = bool(cis[0.95][0] > 0 or cis[0.95][1] < 0)
        out["difference_ours_minus_sb3"] = {
            "mean": float(a.mean() - b.mean()), "ci90_bootstrap": list(cis[0.90]), "ci95_bootstrap": list(cis[0.95])}
        out["equivalence_test"] = (
            "TOST by percentile bootstrap at alpha=0.05: equivalent iff the 90% bootstrap CI of "
            "mean(ours) - mean(sb3) of the final returns (seeds resampled within agent, 10000 resamples) lies "
            "within [-delta, +delta]")
        out["delta"] = float(delta)
        out["equivalent"] = equivalent
        out["verdict"] = ("equivalent within ±delta" if equivalent else
                          "different (95% CI excludes 0)" if different else
                          "inconclusive: CI includes 0 but is wider than ±delta (more seeds needed)")
    return out


def plot_curves(runs: dict[str, dict[int, dict[str, Any]]], grid: np.ndarray, window: int, title: str,
                out_png: Path, threshold: float | None = None) -> None:
    from textgym._optional import require

    matplotlib = require("matplotlib", "plotting the validation curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, by_seed in runs.items():
        curves = np.array([rolling_curve(r["episodes"], grid, window) for r in by_seed.values()])  # (S, G)
        ok = ~np.isnan(curves).any(0)
        n = curves.shape[0]
        mean = curves.mean(0)
        half = t975(n - 1) * curves.std(0, ddof=1) / math.sqrt(n) if n > 1 else 0 * mean
        label = {"ours": "ours (textgym PPO)", "sb3": "SB3 PPO"}.get(name, name)
        ax.plot(grid[ok], mean[ok], label=f"{label}, {n} seeds", lw=1.5)
        ax.fill_between(grid[ok], (mean - half)[ok], (mean + half)[ok], alpha=0.25)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls=":", lw=1)
    ax.set_xlabel("timesteps")
    ax.set_ylabel(f"return (rolling mean of {window} episodes)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=72)
    plt.close(fig)


def check_inputs(env_id: str, config: PPOConfig, total_timesteps: int, seeds: int) -> float | None:
    """Every check that can fail, before any training; returns the env's reward threshold (or None)."""
    import gymnasium as gym
    from gymnasium import spaces

    from agents.ppo.agent import check_env_id

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    check_env_id(env_id)
    config.validate()
    if total_timesteps < config.batch_size:
        raise ValueError(f"--total-timesteps {total_timesteps} is smaller than one rollout (n_envs * n_steps = "
                         f"{config.n_envs} * {config.n_steps} = {config.batch_size}); raise it or lower --n-steps")
    env = gym.make(env_id)
    try:
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"{env_id} has action space {env.action_space}; validate-sb3 compares PPO on "
                             "Discrete action spaces only")
    finally:
        env.close()
    return gym.spec(env_id).reward_threshold


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)  # the same for both agents: like for like
    overrides = {k: v for k, v in (("n_envs", args.n_envs), ("n_steps", args.n_steps),
                                   ("minibatch_size", args.minibatch_size)) if v is not None}
    config = preset_config(args.preset, args.env).replace(**overrides)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if not agents or set(agents) - {"ours", "sb3"}:
        raise ValueError(f"--agents must be a comma-separated subset of ours,sb3; got {args.agents!r}")
    if args.window < 1:
        raise ValueError(f"--window must be positive, got {args.window}")
    spec_threshold = check_inputs(args.env, config, args.total_timesteps, args.seeds)
    threshold = args.threshold if args.threshold is not None else spec_threshold
    if "sb3" in agents:
        from agents.sb3_adapter import sb3_kwargs

        sb3_kwargs(config)  # raises if the config makes a choice SB3 cannot
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in agents}
    for seed in range(args.seeds):
        for name in agents:
            episodes, fps = run_one(name, args.env, config.replace(seed=seed), args.total_timesteps)
            runs[name][seed] = {"episodes": episodes, "fps": fps}
            last = np.mean([e[1] for e in episodes[-args.window:]]) if episodes else float("nan")
            print(f"{name:>4} seed {seed}: {len(episodes)} episodes, final rolling return {last:.3f}, "
                  f"{fps:.0f} steps/s", flush=True)

    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "seed", "timestep", "episode_return"])
        for name, by_seed in runs.items():
            for seed, r in by_seed.items():
                w.writerows([name, seed, t, f"{ret:.6g}"] for t, ret, _ in r["episodes"])
    grid = np.linspace(0, args.total_timesteps, 101)[1:]
    plot_curves(runs, grid, args.window, f"{args.env}: ours vs SB3 PPO (mean ± 95% CI)", out / "curves.png",
                threshold)
    summary = summarize(runs, threshold, args.window, args.delta)
    summary.update(env=args.env, total_timesteps=args.total_timesteps, seeds=args.seeds, preset=args.preset,
                   config=config.replace(seed=0).to_dict(), torch_threads=args.threads)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(format_table(summary))
    print(f"wrote {out / 'curves.csv'}, {out / 'curves.png'}, {out / 'summary.json'}")
    return 0


def format_table(summary: dict[str, Any]) -> str:
    rows = ["| agent | final return (95% CI) | steps to threshold (median, reached) | steps/s |", "|---|---|---|---|"]
    for name, a in summary["agents"].items():
        fr, st = a["final_return"], a["steps_to_threshold"]
        med = "n/a" if st["median"] is None else f"{st['median']:.0f}"
        rows.append(f"| {name} | {fr['mean']:.3f} ({fr['ci95'][0]:.3f}, {fr['ci95'][1]:.3f}) | {med} "
                    f"({st['reached']}/{len(a['seeds'])}) | {a['steps_per_second']['mean']:.0f} |")
    if "difference_ours_minus_sb3" in summary:
        d = summary["difference_ours_minus_sb3"]
        rows.append(f"\ndifference ours - sb3: {d['mean']:.3f}, 90% CI ({d['ci90_bootstrap'][0]:.3f}, "
                    f"{d['ci90_bootstrap'][1]:.3f}), delta {summary['delta']:.3f}: {summary['verdict']}")
    return "\n".join(rows)
