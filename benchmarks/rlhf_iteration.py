"""Time of one RLHF iteration at the demo's settings: every block in every pass (the path before trunk reuse)
against trunk reuse, in fp32 and (where the device has native bf16) bf16; peak resident memory of each.

The sides run in one process, alternated (a, b, c, a, b, c, ...), best of ``--repeats`` after a warm-up, so
that load from other processes on a shared machine hits each side alike. Every side is a full
:meth:`RLHFTrainer.run_iteration` (rollout, forward, PPO epochs), the same seeds; the breakdown comes from
its ``time/*`` metrics. Peak RSS: one iteration per side in a fresh subprocess (``/proc`` VmHWM, reset after
set-up), as in ``rlhf_rollout.py``.

    python benchmarks/rlhf_iteration.py --threads 2                    # the demo's settings, default model
    python benchmarks/rlhf_iteration.py --model tiny --repeats 1 --skip-memory   # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer, cpu_supports_bf16

sys.path.insert(0, str(Path(__file__).parent))
from rlhf_rollout import _rss_mib, tiny_model  # noqa: E402  (the sibling benchmark's helpers)

SIDES = {  # name: (trunk_reuse, precision)
    "before (every block, fp32)": (False, "fp32"),
    "trunk reuse, fp32": (True, "fp32"),
    "trunk reuse, bf16": (True, "bf16"),
}


def make_trainer(args: argparse.Namespace, reuse: bool, precision: str) -> RLHFTrainer:
    cfg = RLHFConfig(task="TextGen-Sentiment-v0", num_envs=args.num_envs, max_new_tokens=args.new_tokens,
                     stop_strings=list(args.stop_strings) or None, trainable_layers=args.trainable_layers,
                     lr=args.lr, device=args.device, precision=precision,
                     trunk_reuse=reuse, progress=False, tensorboard=False,
                     ppo=RLHFPPOConfig(n_epochs=args.epochs, minibatch_size=args.minibatch,
                                       micro_batch_size=args.minibatch))
    return RLHFTrainer(cfg, model=tiny_model(layers=max(2, args.trainable_layers + 1)) if args.model == "tiny"
                       else None)


def bf16_available(device: str) -> bool:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    return torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_supports_bf16()


def memory_child(args: argparse.Namespace) -> None:
    reuse, precision = SIDES[args.memory_child]
    tr = make_trainer(args, reuse, precision)
    m = _rss_mib()
    out = {"rss_before_iteration_mib": m["VmRSS"], "peak_rss_setup_mib": m["VmHWM"]}
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    tr.run_iteration()
    out["peak_rss_iteration_mib"] = _rss_mib()["VmHWM"]
    if tr.device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M) or 'tiny' (random small Llama)")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=24, help="the completion budget (make demo's; 8 before issue 11)")
    p.add_argument("--stop-strings", nargs="*", default=[".", "!", "?"], help="make demo's (none before issue 11)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--trainable-layers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--minibatch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default="benchmarks/results/rlhf_iteration.json")
    p.add_argument("--memory-child", choices=list(SIDES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    sides = [s for s in SIDES if SIDES[s][1] != "bf16" or bf16_available(args.device)]
    trainers = {s: make_trainer(args, *SIDES[s]) for s in sides}
    times: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    for rep in range(args.warmup + args.repeats):  # the first --warmup rounds are not timed
        for s in sides:
            t = time.perf_counter()
            m = trainers[s].run_iteration()
            if rep >= args.warmup:
                times[s].append({"iteration_s": time.perf_counter() - t,
                                 **{k: m[k] for k in ("time/rollout_s", "time/forward_s", "time/update_s")}})
    dev = next(iter(trainers.values())).device
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": bf16_available(args.device),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "settings": vars(args),
        "sides": {s: min(v, key=lambda x: x["iteration_s"]) for s, v in times.items()},
        "all_runs": times,
    }
    if "trunk reuse, bf16" not in sides:
        res["bf16_not_measured"] = "no native bf16 on this device (torch reports neither AMX nor AVX512-BF16)"
    before = res["sides"][sides[0]]["iteration_s"]
    res["speedup_vs_before"] = {s: before / res["sides"][s]["iteration_s"] for s in sides}
    if not args.skip_memory:
        del trainers
        res["memory"] = {}
        for s in sides:
            cmd = [sys.executable, __file__, "--memory-child", s] + [
                x for k, v in vars(args).items() if k not in ("memory_child", "skip_memory", "out", "repeats", "warmup")
                and v is not None for x in (f"--{k.replace('_', '-')}", *(map(str, v) if isinstance(v, list)
                                                                          else [str(v)]))]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res["memory"][s] = json.loads(proc.stdout.strip().splitlines()[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"device: {res['device']} ({res['cpu_capability']}), {args.model}, {args.num_envs} envs x "
          f"{args.new_tokens} tokens, last {args.trainable_layers} blocks train, {args.epochs} epochs, "
          f"{res['torch_threads']} threads")
    print("| side | iteration s | rollout s | forward s | update s | speed-up | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for s in sides:
        t = res["sides"][s]
        mem = res.get("memory", {}).get(s, {}).get("peak_rss_iteration_mib")
        print(f"| {s} | {t['iteration_s']:.2f} | {t['time/rollout_s']:.2f} | {t['time/forward_s']:.2f} | "
              f"{t['time/update_s']:.2f} | {res['speedup_vs_before'][s]:.2f}x | "
              f"{'' if mem is None else f'{mem:.0f}'} |")
    if "bf16_not_measured" in res:
        print(f"bf16: not measured ({res['bf16_not_measured']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
