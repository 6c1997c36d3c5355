"""What each private torch path of the old PPO buys end to end: CartPole-v1 with rl-zoo's hyperparameters, our PPO
with one private path at a time swapped for torch's public API, and SB3 in the same run (issue 13, item 2).

The private paths are those of commit 57e475d (before issue 13 removed them): ``FlatAdam`` (``_foreach_copy_``),
``run_layers`` (bypasses ``nn.Module.__call__``), ``sample_categorical`` (``torch.multinomial``'s draw without its
checks), ``clip_grad_norm`` (``torch._foreach_norm``) and a hand-written ``zero_grad``. Each variant replaces one
of them by the public call that gives the same numbers (``torch.optim.Adam(foreach=True)``, ``layers(x)``,
``torch.multinomial``, ``torch.nn.utils.clip_grad_norm_``, ``optimizer.zero_grad(set_to_none=True)``); ``public``
replaces all five. Every run is timed against SB3 in the same run (steps per CPU second of the process, steadier
than wall clock on a shared machine; both recorded); the order rotates by seed. Run it in a
checkout of that commit (the paths it swaps exist only there):

    mkdir /tmp/old && git archive 57e475d | tar x -C /tmp/old && cd /tmp/old && PYTHONPATH=. \\
      python $OLDPWD/benchmarks/cartpole_internals.py --seeds 4 --out $OLDPWD/benchmarks/results/cartpole_internals.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def public_sample_categorical(logits: torch.Tensor, deterministic: bool, generator: torch.Generator | None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    logp = logits.log_softmax(-1)
    action = logp.argmax(-1) if deterministic else torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
    return action, logp.gather(-1, action[:, None]).squeeze(-1)


def public_swaps() -> dict[str, tuple[Any, str, Any]]:
    """variant -> (module, attribute, public replacement)."""
    import agents.ppo.agent as agent
    import agents.ppo.core as core
    import agents.ppo.policies as policies

    for mod, name in ((agent, "FlatAdam"), (policies, "run_layers"), (policies, "sample_categorical"),
                      (core, "clip_grad_norm"), (core, "zero_grad")):
        if not hasattr(mod, name):
            raise SystemExit(f"{mod.__name__}.{name} is not there: run this in a checkout of commit 57e475d")
    return {
        "no-FlatAdam": (agent, "FlatAdam", lambda params, lr, eps: torch.optim.Adam(params, lr=lr, eps=eps,
                                                                                     foreach=True)),
        "no-run_layers": (policies, "run_layers", lambda layers, x: layers(x)),
        "no-sample_categorical": (policies, "sample_categorical", public_sample_categorical),
        "no-foreach-clip_grad_norm": (core, "clip_grad_norm", lambda params, max_norm, one_group=None:
                                      torch.nn.utils.clip_grad_norm_(params, max_norm)),
        "no-zero_grad": (core, "zero_grad", lambda opt: opt.zero_grad(set_to_none=True)),
    }


@contextlib.contextmanager
def swapped(variant: str) -> Iterator[None]:
    swaps = public_swaps()
    chosen = list(swaps.values()) if variant == "public" else [swaps[variant]] if variant in swaps else []
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in chosen]
    for mod, name, fn in chosen:
        setattr(mod, name, fn)
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def steps_per_second(variant: str, seed: int, total: int) -> tuple[float, float]:
    """``(steps per wall-clock second, steps per CPU second of this process)`` of one ``learn``."""
    from agents.ppo.agent import PPOAgent, PPOConfig

    if variant == "sb3":
        from agents.sb3_adapter import SB3Agent

        agent: Any = SB3Agent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=seed))
    else:
        with swapped(variant):
            agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=seed))
    with swapped(variant):
        t0, c0 = time.perf_counter(), time.process_time()
        agent.learn(total)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = agent.model.num_timesteps if variant == "sb3" else agent.num_timesteps
    return steps / wall, steps / cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--total-timesteps", type=int, default=20_000)
    p.add_argument("--out", default="benchmarks/results/cartpole_internals.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    variants = ["internals", *public_swaps(), "public"]
    names = [*variants, "sb3"]
    fps: dict[str, list[float]] = {n: [] for n in names}
    cpu_fps: dict[str, list[float]] = {n: [] for n in names}
    for seed in range(args.seeds):
        k = seed % len(names)
        for name in names[k:] + names[:k]:  # rotate who goes first
            wall, cpu = steps_per_second(name, seed, args.total_timesteps)
            fps[name].append(wall)
            cpu_fps[name].append(cpu)
            print(f"{name:>26} seed {seed}: {wall:7.0f} steps/s, {cpu:7.0f} steps per CPU second", flush=True)
    # the machine is shared: steps per CPU second of this process are far steadier than per wall-clock second
    ratio = {v: float(np.mean(cpu_fps[v]) / np.mean(cpu_fps["sb3"])) for v in variants}
    wall_ratio = {v: float(np.mean(fps[v]) / np.mean(fps["sb3"])) for v in variants}
    buys = {v: ratio["internals"] / ratio[v] - 1 for v in variants if v != "internals"}
    out = {"env": "CartPole-v1", "preset": "rl_zoo_cartpole", "total_timesteps": args.total_timesteps,
           "seeds": args.seeds, "torch_threads": 1, "code_commit": "57e475d",
           "machine": {"platform": platform.platform(), "torch": torch.__version__, "note": "2-core CPU shared "
                       "with other jobs; ratios are against SB3 in the same run"},
           "steps_per_second": fps, "steps_per_cpu_second": cpu_fps, "ratio_over_sb3": ratio,
           "ratio_over_sb3_wall_clock": wall_ratio,
           "what_the_private_path_buys": {v.removeprefix("no-"): b for v, b in buys.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("\n| variant | steps per CPU s | ratio over SB3 (CPU; wall clock) | the private path(s) buy |")
    print("|---|---|---|---|")
    for v in names:
        r = f"{ratio[v]:.2f}; {wall_ratio[v]:.2f}" if v in ratio else "1"
        b = f"{100 * buys[v]:+.1f}%" if v in buys else ""
        print(f"| {v} | {np.mean(cpu_fps[v]):.0f} | {r} | {b} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
