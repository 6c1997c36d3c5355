"""Benchmark the env's hot paths (issue 2, item 10).

(a) ``TextGenEnv.step`` overhead per token: the unwrapped env, a char tokenizer, sequence mode and a scorer
    that does almost nothing, so what is timed is the env itself (µs per step, episode ends included).
(b) ``BatchedTextGenEnv(16)`` against Gymnasium's ``SyncVectorEnv`` of 16 ``TextGenEnv``: sub-env steps per
    second (one vector step = 16 sub-env steps), same scorer, same random actions, in the same run.

Targets: (a) <= 10 µs per step; (b) batched >= 5x SyncVectorEnv.

Timed in CPU time of this process (``time.process_time``; everything here is single-threaded), so that a
shared machine's load does not count; ``--clock wall`` times wall-clock time instead.

    python benchmarks/env_step.py            # writes benchmarks/results/env_step.json and prints a table
    python benchmarks/env_step.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from textgym.envs.text_gen import TextGenEnv
from textgym.envs.vector import BatchedTextGenEnv

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
PROMPTS = ["the cat", "a dog ran", "hello", "once upon a time", "xyz"]
TARGET_STEP_US = 10.0
TARGET_SPEEDUP = 5.0
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


class CheapScorer:
    """Scores by completion length: a scripted scorer that costs next to nothing."""

    name = "cheap"

    def score(self, samples):
        return np.array([float(len(s.completion_ids)) for s in samples])


def env_kwargs(max_new_tokens: int) -> dict:
    return dict(tokenizer="char:" + ALPHABET, prompts=PROMPTS, scorer=CheapScorer(), max_new_tokens=max_new_tokens)


def bench_single(n_steps: int, max_new_tokens: int, repeats: int, clock=time.process_time) -> dict:
    env = TextGenEnv(**env_kwargs(max_new_tokens))
    # actions: letters only (never EOS), so every episode ends by the budget; ints, as a policy's .item() gives
    actions = np.random.default_rng(0).integers(0, len(ALPHABET), size=n_steps).tolist()
    best = float("inf")
    resets = 0
    for _ in range(repeats):
        env.reset(seed=0)
        step, reset = env.step, env.reset
        t0 = clock()
        for a in actions:
            _, _, terminated, _, _ = step(a)
            if terminated:
                reset()
                resets += 1
        best = min(best, clock() - t0)
    return {"steps": n_steps, "max_new_tokens": max_new_tokens, "us_per_step": 1e6 * best / n_steps,
            "note": "includes the resets and scorer calls at episode ends (every max_new_tokens steps)"}


def _time_steps(venv, actions: np.ndarray, clock) -> float:
    venv.reset(seed=0)
    t0 = clock()
    for a in actions:
        venv.step(a)
    return clock() - t0


def bench_vector(num_envs: int, n_steps: int, max_new_tokens: int, repeats: int, clock=time.process_time) -> dict:
    kw = env_kwargs(max_new_tokens)
    batched = BatchedTextGenEnv(num_envs, **kw)
    sync = gym.vector.SyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(num_envs)])
    actions = np.random.default_rng(0).integers(0, len(ALPHABET), size=(n_steps, num_envs))
    # the two alternate, best of `repeats` each: on a shared machine the load changes between runs
    best_b = best_s = float("inf")
    for _ in range(repeats):
        best_b = min(best_b, _time_steps(batched, actions, clock))
        best_s = min(best_s, _time_steps(sync, actions, clock))
    b, s = n_steps * num_envs / best_b, n_steps * num_envs / best_s
    return {"num_envs": num_envs, "vector_steps": n_steps, "max_new_tokens": max_new_tokens,
            "batched_steps_per_s": b, "sync_steps_per_s": s, "speedup": b / s}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a few seconds)")
    p.add_argument("--out", default="benchmarks/results/env_step.json", help="where to write the JSON results")
    p.add_argument("--num-envs", type=int, default=16, help="sub-envs in the vector benchmark")
    p.add_argument("--max-new-tokens", type=int, default=24, help="episode budget")
    p.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                   help="cpu: this process's CPU time (default; robust to a shared machine's load); wall: wall time")
    args = p.parse_args(argv)
    clock = CLOCKS[args.clock]
    n_single, n_vec, repeats = (20_000, 1_000, 3) if args.quick else (200_000, 10_000, 5)

    single = bench_single(n_single, args.max_new_tokens, repeats, clock)
    vector = bench_vector(args.num_envs, n_vec, args.max_new_tokens, repeats, clock)
    result = {
        "step_overhead": {**single, "target_us": TARGET_STEP_US, "met": single["us_per_step"] <= TARGET_STEP_US},
        "vector": {**vector, "target_speedup": TARGET_SPEEDUP, "met": vector["speedup"] >= TARGET_SPEEDUP},
        "quick": args.quick, "clock": args.clock, "python": platform.python_version(), "numpy": np.__version__,
        "gymnasium": gym.__version__, "machine": platform.machine(), "processor": platform.processor(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    rows = [
        ("TextGenEnv.step overhead", f"{single['us_per_step']:.2f} µs/step", f"<= {TARGET_STEP_US:g} µs",
         result["step_overhead"]["met"]),
        (f"BatchedTextGenEnv({args.num_envs})", f"{vector['batched_steps_per_s']:,.0f} steps/s", "", None),
        (f"SyncVectorEnv({args.num_envs})", f"{vector['sync_steps_per_s']:,.0f} steps/s", "", None),
        ("batched / sync", f"{vector['speedup']:.1f}x", f">= {TARGET_SPEEDUP:g}x", result["vector"]["met"]),
    ]
    print(f"{'measure':<28} {'value':>20} {'target':>10}  met")
    for name, value, target, met in rows:
        print(f"{name:<28} {value:>20} {target:>10}  {'' if met is None else ('yes' if met else 'NO')}")
    print(f"(written to {out})")
    return result


if __name__ == "__main__":
    main()
