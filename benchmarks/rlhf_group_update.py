"""Time of one GRPO iteration on TextGen-SQL-v0 (``make demo-sql``'s model, groups, batch and sampling; the valid
bonus only and the default KL penalty, as demo-sql had when this was written) with the group's shared prompt run
through the trainable top blocks once per distinct prompt, against once per row (the path before).

With trunk reuse, the forward (old and reference log-probs) and the update run only the top blocks, but over
every column: the prompt (schema, rows, question and the chat template: ~150 tokens) and the completion
(~20-48). With ``--group-size 8`` the 8 rows of a group have the same prompt, so running it once per prompt and
copying its KV cache (with gradient) to the rows divides the prompt's share of that work by up to 8
(:meth:`agents.lm.policy.CausalLMPolicy._shared_prompt_hidden`; equal results are tested in
``tests/agents/lm/test_lm_policy.py``). The rollout shares the prompt on both sides.

Both sides run in one process, alternated, the same seeds, best of ``--repeats`` after ``--warmup`` rounds.

    python benchmarks/rlhf_group_update.py --threads 2             # the default model (minutes)
    python benchmarks/rlhf_group_update.py --model tiny --repeats 1  # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer

sys.path.insert(0, str(Path(__file__).parent))
from rlhf_rollout import tiny_model  # noqa: E402  (the sibling benchmark's helper)

SIDES = {"every row (before)": False, "shared prompt": True}
KEYS = ("time/rollout_s", "time/forward_s", "time/update_s")


def make_trainer(args: argparse.Namespace, share: bool) -> RLHFTrainer:
    cfg = RLHFConfig(task="TextGen-SQL-v0", algo="grpo", group_size=args.group_size, num_envs=args.num_envs,
                     trainable_layers=args.trainable_layers, lr=args.lr, temperature=0.7, top_k=50,
                     scorer={"name": "sql", "valid_weight": 0.1}, device=args.device, progress=False,
                     tensorboard=False, ppo=RLHFPPOConfig(n_epochs=1, minibatch_size=args.minibatch,
                                                          micro_batch_size=args.minibatch))
    tr = RLHFTrainer(cfg, model=tiny_model(layers=max(2, args.trainable_layers + 1)) if args.model == "tiny"
                     else None)
    tr.policy.share_prompts = share
    return tr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M) or 'tiny' (random small Llama)")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--trainable-layers", type=int, default=4)
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/rlhf_group_update.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trainers = {s: make_trainer(args, share) for s, share in SIDES.items()}
    times: dict[str, list[dict[str, float]]] = {s: [] for s in SIDES}
    for rep in range(args.warmup + args.repeats):
        for s, tr in trainers.items():
            t = time.perf_counter()
            m = tr.run_iteration()
            if rep >= args.warmup:
                times[s].append({"iteration_s": time.perf_counter() - t, **{k: m[k] for k in KEYS},
                                 "ep_len_mean": m["rollout/ep_len_mean"]})
    dev = next(iter(trainers.values())).device
    best = {s: {k: min(r[k] for r in v) for k in ("iteration_s", *KEYS)} for s, v in times.items()}
    before, after = (best[s] for s in SIDES)
    fu = {s: b["time/forward_s"] + b["time/update_s"] for s, b in best.items()}
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "settings": vars(args),
        "best": best, "all_runs": times,
        "speedup_iteration": before["iteration_s"] / after["iteration_s"],
        "speedup_forward_plus_update": fu["every row (before)"] / fu["shared prompt"],
        "note": "best of the repeats per column; both sides roll out the same prompts with the same seeds",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"device: {res['device']}, {args.model}, {args.num_envs} envs in groups of {args.group_size}, last "
          f"{args.trainable_layers} blocks train, {res['torch_threads']} threads")
    print("| side | iteration s | rollout s | forward s | update s |")
    print("|---|---|---|---|---|")
    for s, b in best.items():
        print(f"| {s} | {b['iteration_s']:.2f} | {b['time/rollout_s']:.2f} | {b['time/forward_s']:.2f} | "
              f"{b['time/update_s']:.2f} |")
    print(f"speed-up: {res['speedup_iteration']:.2f}x per iteration, {res['speedup_forward_plus_update']:.2f}x on "
          f"forward + update; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
