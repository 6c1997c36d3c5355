"""``textgym validate-sb3``: train our PPO and SB3's PPO with the same hyperparameters, env, seeds and budget,
and compare their learning curves; merge runs made separately; print the README's validation table.

Writes to ``--out``:

- ``curves.csv``: ``agent, seed, timestep, episode_return`` for every finished training episode;
- ``runs.csv``: ``agent, seed, steps_per_second`` for every run;
- ``curves.png``: per agent, the mean over seeds of the rolling mean (last ``--window`` episodes) return on a
  common grid of timesteps, with a 95% Student-t confidence band;
- ``summary.json``: per agent the final return (per seed: the mean return of its last ``--window`` episodes;
  the mean over seeds with its 95% t CI), the steps to reach ``--threshold`` (rolling mean) and steps/s; and
  the comparison of the final returns (:func:`compare_finals`): Welch's t-test of ours - SB3 with its 95% CI,
  a TOST on it within ``±delta``, Mann-Whitney's p beside them, the minimum detectable difference at these
  seeds, and the verdict. ``delta`` is ``--delta`` if given, else 5% of the threshold (CartPole-v1: 23.75),
  else 10% of |SB3's final mean|. Below :data:`MIN_SEEDS` seeds per agent there is no verdict.

Seeds ``--seed-offset .. --seed-offset + --seeds - 1``; ``--agents ours`` runs one agent, so the agents can run
in separate processes. ``--merge DIR [DIR ...]`` trains nothing: it joins the runs of several output folders
(same env, budget and config; no seed twice) and writes the same files for the union.

    textgym validate-sb3 --env Acrobot-v1 --agents ours --seeds 10 --out runs/a
    textgym validate-sb3 --env Acrobot-v1 --agents sb3 --seeds 10 --out runs/b
    textgym validate-sb3 --merge runs/a runs/b --out docs/validation/Acrobot-v1
    python -m agents.validate table docs/validation --write README.md   # the README's table
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.ppo.agent import PPOConfig

PRESETS = ("auto", "sb3", "rl-zoo-cartpole", "text-toy")
MIN_SEEDS = 5
"""fewer seeds per agent than this: the numbers, but no verdict"""
ALPHA = 0.05
"""level of Welch's test and of the TOST (whose two one-sided tests make a 90% CI the decision interval)"""
POWER = 0.8
"""power at which the minimum detectable difference is given"""


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
        return PPOConfig.sb3(n_envs=8, n_steps=64, learning_rate=1e-3, seed=seed,
                             update=dict(minibatch_size=128, n_epochs=10, ent_coef=0.01))
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="a registered Gymnasium env id with a Discrete action space "
                        "(required unless --merge)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds per agent (default: 5)")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="first seed: runs seeds OFFSET .. OFFSET + SEEDS - 1 (default: 0)")
    parser.add_argument("--total-timesteps", type=int, default=100_000, help="env steps per run (default: 100000)")
    parser.add_argument("--out", required=True, help="output folder for curves.csv, runs.csv, curves.png, "
                        "summary.json")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="train nothing: merge the runs in these output folders into --out")
    parser.add_argument("--preset", default="auto", choices=PRESETS,
                        help="shared hyperparameters (default: auto = rl-zoo-cartpole for CartPole-v1, "
                             "text-toy for TextGen ids, sb3 otherwise)")
    parser.add_argument("--n-envs", type=int, default=None, help="override the preset's number of envs")
    parser.add_argument("--n-steps", type=int, default=None, help="override the preset's steps per env per rollout")
    parser.add_argument("--minibatch-size", type=int, default=None, help="override the preset's minibatch size")
    parser.add_argument("--threshold", type=float, default=None,
                        help="return threshold for steps-to-threshold (default: the env spec's reward_threshold)")
    parser.add_argument("--window", type=int, default=None, help="episodes in the rolling mean (default: 20, or "
                        "the merged runs')")
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


def compare_finals(ours: np.ndarray, sb3: np.ndarray, delta: float) -> dict[str, Any]:
    """The test of ours - SB3 on the per-seed final returns, and its verdict.

    Welch's t-test (unequal variances: the two libraries' spreads need not agree) gives the two-sided p and the
    95% CI of the difference; a TOST on Welch's statistic (two one-sided tests at ``ALPHA``) tests
    equivalence within ``±delta``; Mann-Whitney's p is recorded beside them (no normality assumed). With
    fewer than :data:`MIN_SEEDS` seeds per agent the numbers are given but the verdict is "too few seeds".
    """
    from textgym._optional import require
    from textgym.stats import min_detectable_difference, tost_welch, welch_test

    stats = require("scipy.stats", "the validation statistics")
    n = {"ours": len(ours), "sb3": len(sb3)}
    out: dict[str, Any] = {
        "test": f"Welch's t-test of mean(ours) - mean(sb3) of the per-seed final returns (two-sided, alpha="
                f"{ALPHA}); equivalence by TOST on Welch's t within ±delta (alpha={ALPHA}, i.e. the 90% Welch "
                f"CI inside ±delta); Mann-Whitney U p for reference; no verdict below {MIN_SEEDS} seeds per agent",
        "n_seeds": n, "min_seeds": MIN_SEEDS, "delta": float(delta)}
    if min(n.values()) < 2:
        out["verdict"] = f"too few seeds for a verdict (fewer than {MIN_SEEDS} per agent)"
        return out
    w95, w90 = welch_test(ours, sb3, 0.95), welch_test(ours, sb3, 1 - 2 * ALPHA)
    pooled_sd = float(np.sqrt((np.var(ours, ddof=1) + np.var(sb3, ddof=1)) / 2))
    out.update(
        difference_ours_minus_sb3={"mean": w95.difference, "ci95": list(w95.ci), "ci90": list(w90.ci),
                                   "cohens_d": w95.difference / pooled_sd if pooled_sd > 0 else None},
        welch_p=w95.p_value, welch_df=w95.df, tost_p=tost_welch(ours, sb3, delta),
        mann_whitney_p=float(stats.mannwhitneyu(ours, sb3, alternative="two-sided").pvalue),
        min_detectable_difference={"value": min_detectable_difference(ours, sb3, ALPHA, POWER), "alpha": ALPHA,
                                   "power": POWER})
    if min(n.values()) < MIN_SEEDS:
        out["verdict"] = f"too few seeds for a verdict (fewer than {MIN_SEEDS} per agent)"
    elif out["tost_p"] < ALPHA:
        out["verdict"] = "equivalent within ±delta"
    elif out["welch_p"] < ALPHA:
        out["verdict"] = "different"
    else:
        out["verdict"] = "inconclusive: not different, and not shown equivalent within ±delta at these seeds"
    return out


def summarize(runs: dict[str, dict[int, dict[str, Any]]], threshold: float | None, window: int,
              delta: float | None) -> dict[str, Any]:
    """``summary.json``'s statistics: per agent, and (with both agents) :func:`compare_finals`."""
    from textgym.stats import mean_ci

    out: dict[str, Any] = {"window": window, "threshold": threshold, "agents": {}}
    finals: dict[str, np.ndarray] = {}
    for name, by_seed in runs.items():
        seeds = sorted(by_seed)
        final = np.array([np.mean([e[1] for e in by_seed[s]["episodes"][-window:]]) if by_seed[s]["episodes"]
                          else np.nan for s in seeds])
        finals[name] = final
        m, h = mean_ci(final)
        steps = {s: steps_to_threshold(by_seed[s]["episodes"], threshold, window) if threshold is not None else None
                 for s in seeds}
        reached = [v for v in steps.values() if v is not None]
        fps = [by_seed[s]["fps"] for s in seeds]
        out["agents"][name] = {
            "seeds": seeds, "final_return": {"mean": m, "ci95": [m - h, m + h], "per_seed": final.tolist()},
            "steps_to_threshold": {"per_seed": steps, "reached": len(reached),
                                   "median": float(np.median(reached)) if reached else None},
            "steps_per_second": {"mean": float(np.mean(fps)), "per_seed": fps},
            "n_episodes": [len(by_seed[s]["episodes"]) for s in seeds],
        }
    if {"ours", "sb3"} <= set(finals):
        if delta is None:
            delta = 0.05 * abs(threshold) if threshold is not None else 0.1 * abs(float(finals["sb3"].mean()))
        out["comparison"] = compare_finals(finals["ours"], finals["sb3"], delta)
    return out


def plot_curves(runs: dict[str, dict[int, dict[str, Any]]], grid: np.ndarray, window: int, title: str,
                out_png: Path, threshold: float | None = None) -> None:
    from textgym._optional import require
    from textgym.stats import mean_ci

    matplotlib = require("matplotlib", "plotting the validation curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, by_seed in runs.items():
        curves = np.array([rolling_curve(r["episodes"], grid, window) for r in by_seed.values()])  # (S, G)
        ok = ~np.isnan(curves).any(0)
        mean, half = np.array([mean_ci(curves[:, j]) for j in range(len(grid))]).T  # (G,) each
        half = np.nan_to_num(half)  # one seed: no band
        label = {"ours": "ours (textgym PPO)", "sb3": "SB3 PPO"}.get(name, name)
        ax.plot(grid[ok], mean[ok], label=f"{label}, {curves.shape[0]} seeds", lw=1.5)
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


def parse_agents(spec: str) -> list[str]:
    agents = [a.strip() for a in spec.split(",") if a.strip()]
    if not agents or set(agents) - {"ours", "sb3"}:
        raise ValueError(f"--agents must be a comma-separated subset of ours,sb3; got {spec!r}")
    return agents


def train_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything, then train every (seed, agent), writing the outputs after each seed (a run stopped
    early keeps the seeds it finished); returns the summary."""
    import torch

    torch.set_num_threads(args.threads)  # the same for both agents: like for like
    if args.env is None:
        raise ValueError("--env is required (unless --merge)")
    overrides = {k: v for k, v in (("n_envs", args.n_envs), ("n_steps", args.n_steps)) if v is not None}
    if args.minibatch_size is not None:
        overrides["update"] = {"minibatch_size": args.minibatch_size}
    config = preset_config(args.preset, args.env).replace(**overrides)
    agents = parse_agents(args.agents)
    if args.seed_offset < 0:
        raise ValueError(f"--seed-offset must be >= 0, got {args.seed_offset}")
    spec_threshold = check_inputs(args.env, config, args.total_timesteps, args.seeds)
    if "sb3" in agents:
        from agents.sb3_adapter import sb3_kwargs

        sb3_kwargs(config)  # raises if the config makes a choice SB3 cannot
    meta = {"env": args.env, "total_timesteps": args.total_timesteps, "preset": args.preset,
            "config": config.replace(seed=0).to_dict(), "torch_threads": args.threads,
            "threshold": args.threshold if args.threshold is not None else spec_threshold,
            "window": args.window if args.window is not None else 20}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in agents}
    for seed in range(args.seed_offset, args.seed_offset + args.seeds):
        for name in agents:
            episodes, fps = run_one(name, args.env, config.replace(seed=seed), args.total_timesteps)
            runs[name][seed] = {"episodes": episodes, "fps": fps}
            last = np.mean([e[1] for e in episodes[-meta["window"]:]]) if episodes else float("nan")
            print(f"{name:>4} seed {seed}: {len(episodes)} episodes, final rolling return {last:.3f}, "
                  f"{fps:.0f} steps/s", flush=True)
        summary = write_outputs(Path(args.out), runs, meta, args.delta)
    return summary


MERGE_KEYS = ("env", "total_timesteps", "config", "torch_threads")
"""what must agree between merged folders"""


def load_runs(folder: str | Path) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, Any]]:
    """The runs an output folder holds (``curves.csv``, ``runs.csv``) and its ``summary.json``'s metadata."""
    folder = Path(folder)
    for name in ("curves.csv", "runs.csv", "summary.json"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing; --merge takes folders written by validate-sb3")
    summary = json.loads((folder / "summary.json").read_text())
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    with (folder / "runs.csv").open() as f:
        for row in csv.DictReader(f):
            runs.setdefault(row["agent"], {})[int(row["seed"])] = {"episodes": [],
                                                                   "fps": float(row["steps_per_second"])}
    with (folder / "curves.csv").open() as f:
        for row in csv.DictReader(f):
            runs[row["agent"]][int(row["seed"])]["episodes"].append((int(row["timestep"]),
                                                                     float(row["episode_return"])))
    meta = {k: summary.get(k) for k in (*MERGE_KEYS, "preset", "threshold", "window")}
    return runs, meta


def merge_runs(folders: list[str], args: argparse.Namespace) -> tuple[dict[str, dict[int, dict[str, Any]]],
                                                                      dict[str, Any]]:
    """The union of several folders' runs; raises ``ValueError`` when they differ in env, budget or config, or
    hold the same (agent, seed) twice."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    origin: dict[tuple[str, int], str] = {}
    for folder in folders:
        part, part_meta = load_runs(folder)
        if not meta:
            meta = part_meta
        for key in MERGE_KEYS:
            if part_meta[key] != meta[key]:
                raise ValueError(f"cannot merge {folder} with {folders[0]}: their {key} differ "
                                 f"({part_meta[key]!r} vs {meta[key]!r}); merge runs of one comparison only")
        for agent, by_seed in part.items():
            for seed, run in by_seed.items():
                if (agent, seed) in origin:
                    raise ValueError(f"{agent} seed {seed} is in both {origin[agent, seed]} and {folder}; "
                                     "run the second with another --seed-offset")
                origin[agent, seed] = folder
                runs.setdefault(agent, {})[seed] = run
    if args.env is not None and args.env != meta["env"]:
        raise ValueError(f"--env {args.env} but the merged runs are on {meta['env']}")
    meta["threshold"] = args.threshold if args.threshold is not None else meta["threshold"]
    meta["window"] = args.window if args.window is not None else meta["window"]
    return runs, meta


def write_outputs(out: Path, runs: dict[str, dict[int, dict[str, Any]]], meta: dict[str, Any],
                  delta: float | None) -> dict[str, Any]:
    """Write curves.csv, runs.csv, curves.png and summary.json; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "seed", "timestep", "episode_return"])
        for name, by_seed in runs.items():
            for seed in sorted(by_seed):
                w.writerows([name, seed, e[0], f"{e[1]:.6g}"] for e in by_seed[seed]["episodes"])
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "seed", "steps_per_second"])
        w.writerows([name, seed, f"{by_seed[seed]['fps']:.6g}"] for name, by_seed in runs.items()
                    for seed in sorted(by_seed))
    grid = np.linspace(0, meta["total_timesteps"], 101)[1:]
    plot_curves(runs, grid, meta["window"], f"{meta['env']}: ours vs SB3 PPO (mean ± 95% CI)", out / "curves.png",
                meta["threshold"])
    summary = summarize(runs, meta["threshold"], meta["window"], delta)
    summary.update({k: meta[k] for k in ("env", "total_timesteps", "preset", "config", "torch_threads")},
                   seeds={name: sorted(by_seed) for name, by_seed in runs.items()})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(args: argparse.Namespace) -> int:
    if args.window is not None and args.window < 1:
        raise ValueError(f"--window must be positive, got {args.window}")
    out = Path(args.out)
    summary = write_outputs(out, *merge_runs(args.merge, args), args.delta) if args.merge else train_runs(args)
    print(format_summary(summary))
    print(f"wrote {out / 'curves.csv'}, {out / 'runs.csv'}, {out / 'curves.png'}, {out / 'summary.json'}")
    return 0


def _ci(x: dict[str, Any] | list[float], digits: int) -> str:
    lo, hi = x["ci95"] if isinstance(x, dict) else x
    return f"({lo:.{digits}f}, {hi:.{digits}f})"


def format_summary(summary: dict[str, Any]) -> str:
    """The per-agent table and the comparison, as ``validate-sb3`` prints them."""
    rows = ["| agent | seeds | final return (95% CI) | steps to threshold (median, reached) | steps/s |",
            "|---|---|---|---|---|"]
    for name, a in summary["agents"].items():
        fr, st = a["final_return"], a["steps_to_threshold"]
        med = "n/a" if st["median"] is None else f"{st['median']:.0f}"
        rows.append(f"| {name} | {len(a['seeds'])} | {fr['mean']:.3f} {_ci(fr, 3)} | {med} "
                    f"({st['reached']}/{len(a['seeds'])}) | {a['steps_per_second']['mean']:.0f} |")
    c = summary.get("comparison")
    if c is not None:
        rows.append(f"\ntest: {c['test']}")
        if "difference_ours_minus_sb3" in c:
            d, mdd = c["difference_ours_minus_sb3"], c["min_detectable_difference"]
            rows.append(f"ours - sb3 = {d['mean']:.3f}, 95% CI {_ci(d['ci95'], 3)}, 90% CI {_ci(d['ci90'], 3)}; "
                        f"Welch p = {c['welch_p']:.3g}, TOST p (delta {c['delta']:.3g}) = {c['tost_p']:.3g}, "
                        f"Mann-Whitney p = {c['mann_whitney_p']:.3g}; minimum detectable difference "
                        f"{mdd['value']:.3g} (alpha {mdd['alpha']}, power {mdd['power']})")
        rows.append(f"seeds: ours {c['n_seeds']['ours']}, sb3 {c['n_seeds']['sb3']}; verdict: {c['verdict']}")
    return "\n".join(rows)


TABLE_START, TABLE_END = "<!-- validation-table:start -->", "<!-- validation-table:end -->"


def table_row(s: dict[str, Any]) -> str:
    """One README row from a ``summary.json``: returns with 1 decimal when SB3's mean is 100 or more, else 2."""
    ours, sb3, c = s["agents"]["ours"], s["agents"]["sb3"], s["comparison"]
    digits = 1 if abs(sb3["final_return"]["mean"]) >= 100 else 2

    def ci(mean: float, lo_hi: list[float]) -> str:
        return f"{mean:.{digits}f} ({lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f})"

    cells = [f"{s['env']} ({s['total_timesteps'] // 1000}k, {len(ours['seeds'])}/{len(sb3['seeds'])})",
             *(ci(a["final_return"]["mean"], a["final_return"]["ci95"]) for a in (ours, sb3))]
    med = [a["steps_to_threshold"]["median"] for a in (ours, sb3)]
    cells.append(" / ".join("never" if m is None else f"{m:.0f}" for m in med) + " (" + ", ".join(
        f"{a['steps_to_threshold']['reached']}/{len(a['seeds'])}" for a in (ours, sb3)) + f") to {s['threshold']:g}")
    if "difference_ours_minus_sb3" in c:
        d = c["difference_ours_minus_sb3"]
        cells += [ci(d["mean"], d["ci95"]), f"{c['welch_p']:.2g}", f"{c['tost_p']:.2g} (δ {c['delta']:.3g})",
                  f"{c['min_detectable_difference']['value']:.{digits}f}"]
    else:
        cells += ["n/a"] * 4
    cells.append(c["verdict"].split(":")[0].replace(" within ±delta", ""))
    return "| " + " | ".join(cells) + " |"


def table(folder: str | Path) -> str:
    """The README's validation table: one row per ``FOLDER/*/summary.json`` with both agents."""
    summaries = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*/summary.json"))]
    rows = ["| env (budget, seeds ours/SB3) | ours: final return (95% CI) | SB3: final return (95% CI) | "
            "steps to threshold, median (seeds reaching) ours / SB3 | ours − SB3 (95% Welch CI) | Welch p | "
            "TOST p (δ) | min. detectable difference | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    rows += [table_row(s) for s in summaries if {"ours", "sb3"} <= set(s["agents"]) and "comparison" in s]
    return "\n".join(rows)


def write_table(readme: str | Path, text: str) -> None:
    """Replace what lies between the table markers in ``readme`` with ``text``."""
    path = Path(readme)
    doc = path.read_text()
    if TABLE_START not in doc or TABLE_END not in doc:
        raise ValueError(f"{path} has no {TABLE_START} ... {TABLE_END} markers to put the table between")
    head, rest = doc.split(TABLE_START, 1)
    path.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m agents.validate", description="the README's validation table "
                                "from committed summary.json files")
    p.add_argument("command", choices=["table"])
    p.add_argument("folder", help="a folder of validate-sb3 output folders (docs/validation)")
    p.add_argument("--write", default=None, metavar="README", help="put the table between the markers of README")
    a = p.parse_args()
    md = table(a.folder)
    if a.write:
        write_table(a.write, md)
    print(md)
