"""RLHF speed benchmarks, all ratios measured in one run on one machine (JSON + a markdown table).

1. rollout: our KV-cached rollout through ``BatchedTextGenEnv`` vs bare ``model.generate`` (same model, batch,
   length, sampling), and vs naive stepping that re-encodes the whole prefix every step (targets: >= 0.9 and
   >= 10x at batch 8, 64 new tokens), and the rollout's matmul FLOP/s as a fraction of a bf16 (and an fp32)
   matmul's measured in the same run (the physical floor);
2. update: ``ppo_update`` tokens/s vs a plain causal-LM training step (cross-entropy, backward, Adam) on the
   same tokens (target >= 0.6);
3. memory: peak resident memory (and CUDA peak allocation) of one PPO iteration, with and without LoRA, each
   in a fresh subprocess.

Throughput counts *row-steps* (batch rows x steps computed), the work both loops do whether or not a row has
ended; ``generate`` runs with ``min_new_tokens`` so it never stops early.

    python benchmarks/rlhf_rollout.py                       # default model, batch 8, 64 new tokens
    python benchmarks/rlhf_rollout.py --model tiny --skip-memory   # seconds, for a smoke test
    python benchmarks/rlhf_rollout.py --batch 64 --out benchmarks/results/rlhf_cuda_b64.json   # on a GPU
    python benchmarks/rlhf_rollout.py --batch 256 --micro 32 --skip-naive --out benchmarks/results/rlhf_cuda_b256.json

The device is picked automatically (``--device auto``: CUDA when available, then bf16 autocast as in training);
timings alternate the two sides of each ratio and keep the best of ``--repeats``, so a shared machine's load
hits both alike. On a shared CPU, ``--threads 1`` keeps torch's threads from fighting other processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents.device import resolve_device
from agents.lm.policy import model_inputs
from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer
from agents.lm.rollout import rollout, sample_tokens
from agents.ppo.core import ppo_update, sequence_gae


def tiny_model(layers: int = 2) -> Any:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   eos_token_id=2, pad_token_id=2)
    return transformers.LlamaForCausalLM(cfg).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Any, device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Best (minimum) wall time of ``repeats`` calls, after one warm-up call if ``warmup``."""
    return timed_pair([fn], device, repeats, warmup)[0]


def timed_pair(fns: list[Any], device: torch.device, repeats: int, warmup: bool = True) -> list[float]:
    """Best-of-``repeats`` wall time of each of ``fns``, the calls alternated (a, b, a, b, ...) so that load
    from other processes on a shared machine hits every side alike; the minimum is the least disturbed run."""
    if warmup:
        for fn in fns:
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            best[j] = min(best[j], time.perf_counter() - t)
    return best


def make_trainer(args: argparse.Namespace, lora: bool = False) -> RLHFTrainer:
    cfg = RLHFConfig(task="TextGen-Sentiment-v0", num_envs=args.batch, max_new_tokens=args.new_tokens,
                     lora=lora, device=args.device, precision=args.precision, progress=False, tensorboard=False,
                     ppo=RLHFPPOConfig(n_epochs=1, minibatch_size=args.batch, micro_batch_size=args.micro))
    return RLHFTrainer(cfg, model=tiny_model() if args.model == "tiny" else None)


def bench_rollout(tr: RLHFTrainer, args: argparse.Namespace) -> dict[str, float]:
    policy, env, device = tr.policy, tr.env, tr.device
    model = policy.hf_model
    N, T = args.batch, args.new_tokens
    ac = tr._maybe_autocast
    steps = {}

    def ours() -> None:
        with ac():
            r = rollout(policy, env, seed=0, generator=torch.Generator(device=device).manual_seed(0))
        steps["ours"] = r.completion_ids.shape[1]

    obs, _ = env.reset(seed=0)
    from textgym.envs.layout import obs_to_left_padded

    ids = torch.as_tensor(obs["input_ids"], device=device)
    mask = torch.as_tensor(obs["attention_mask"], device=device)
    p_ids, p_mask = obs_to_left_padded(ids, mask, env.pad_token_id)

    def generate() -> None:
        with torch.no_grad(), ac():
            model.generate(p_ids, attention_mask=p_mask, do_sample=True, max_new_tokens=T, min_new_tokens=T,
                           pad_token_id=env.pad_token_id, top_k=0, top_p=1.0)

    @torch.no_grad()
    def naive() -> None:  # the whole prefix through the model at every step, no cache, as a plain
        # `model(input_ids)` call does it (logits at every position); the same sampler as ours
        o, _ = env.reset(seed=0)
        g = torch.Generator(device=device).manual_seed(0)
        n = 0
        while not env.done.all():
            w = int(env.lengths.max())  # the longest prefix: no columns of pure padding are encoded
            x = torch.as_tensor(o["input_ids"][:, :w], device=device)
            m = torch.as_tensor(o["attention_mask"][:, :w], device=device)
            last = m.sum(-1) - 1  # (N,) column of each prefix's last token
            with ac():
                logits, _, _ = policy(**model_inputs(x, m))  # (N, L, V)
            logits = logits[torch.arange(N, device=device), last]
            a = sample_tokens(logits, g)
            o, *_ = env.step(a.cpu().numpy())
            n += 1
        steps["naive"] = n

    t_ours, t_gen = timed_pair([ours, generate], device, args.repeats)
    P = int(p_mask.shape[1])
    out = {"rollout_gflop": rollout_flops(model, N, P, steps["ours"]) / 1e9,
        "ours_row_steps_per_s": N * steps["ours"] / t_ours,
        "generate_row_steps_per_s": N * T / t_gen,
        "ours_steps": steps["ours"], "ours_s": t_ours, "generate_s": t_gen,
    }
    out["ratio_vs_generate"] = out["ours_row_steps_per_s"] / out["generate_row_steps_per_s"]
    out["rollout_gflop_per_s"] = out["rollout_gflop"] / t_ours
    if not args.skip_naive:  # its own alternated pairs with ours (a naive run takes ~10x longer)
        t_ours_n, t_naive = timed_pair([ours, naive], device, args.naive_repeats, warmup=False)
        out["naive_row_steps_per_s"] = N * steps["naive"] / t_naive
        out["naive_s"], out["ours_s_beside_naive"] = t_naive, t_ours_n
        out["speedup_vs_naive"] = (N * steps["ours"] / t_ours_n) / out["naive_row_steps_per_s"]
    return out


def rollout_flops(model: Any, N: int, P: int, T: int) -> float:
    """Matmul FLOPs of a KV-cached rollout of ``N`` rows, ``P`` prompt columns, ``T`` steps (approximate: 2 per
    weight per token for every linear layer, the output layer only at the decoded positions, plus attention's
    ``4 d ctx`` per block and token; norms, activations and sampling are left out)."""
    head = model.get_output_embeddings()
    lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    cfg = model.config
    d, layers = int(getattr(cfg, "hidden_size", 0) or cfg.n_embd), int(getattr(cfg, "num_hidden_layers", 0)
                                                                      or cfg.n_layer)
    tokens = N * (P + T - 1)  # the prompt once, then one column per step
    ctx = sum(P + t for t in range(T)) * N  # keys attended by each decoded column
    return 2.0 * lin * tokens + 2.0 * head.weight.numel() * N * T + 4.0 * d * layers * (ctx + N * P * P / 2)


def matmul_gflops(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a (1024, 576) x (576, 1536) matmul: the default model's MLP at a
    training-sized batch, the physical reference for the rollout's FLOP/s."""
    a = torch.randn(1024, 576, dtype=dtype, device=device)
    b = torch.randn(576, 1536, dtype=dtype, device=device)
    t = timed(lambda: a @ b, device, repeats)
    return 2 * 1024 * 576 * 1536 / t / 1e9


def bench_update(tr: RLHFTrainer, args: argparse.Namespace) -> dict[str, float]:
    r = tr.collect(seed=1)
    mask = r.completion_mask.float()
    adv, ret = sequence_gae(r.scores[:, None] * mask, r.values, mask, 1.0, 0.95)
    batch = {"actions": r.completion_ids, "logprobs": r.logprobs, "values": r.values, "advantages": adv,
             "returns": ret, "mask": mask, "input_ids": r.input_ids, "attention_mask": r.attention_mask}
    tokens = float(r.attention_mask.sum())
    model = tr.policy.hf_model
    plain_opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-7)

    def ppo() -> None:
        tr.policy.train()
        ppo_update(tr.policy, tr.optimizer, batch, tr.cfg.ppo, autocast=tr.autocast())

    def plain() -> None:  # one causal-LM step on the same tokens, same micro-batching
        plain_opt.zero_grad(set_to_none=True)
        for s in range(0, args.batch, args.micro):
            ids, m = r.input_ids[s : s + args.micro], r.attention_mask[s : s + args.micro]
            labels = ids.masked_fill(m == 0, -100)
            with tr._maybe_autocast():
                loss = model(**model_inputs(ids, m), labels=labels).loss
            loss.backward()
        plain_opt.step()

    t_ppo, t_plain = timed_pair([ppo, plain], tr.device, args.repeats)
    return {"ppo_tokens_per_s": tokens / t_ppo, "plain_tokens_per_s": tokens / t_plain,
            "ratio_ppo_vs_plain": t_plain / t_ppo, "tokens": tokens}


def _rss_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def memory_child(args: argparse.Namespace) -> None:
    """One PPO iteration in this (fresh) process; prints its memory as JSON. Peaks come from /proc's VmHWM, not
    getrusage's ru_maxrss, which Linux carries over exec from the parent (it read the benchmark parent's peak,
    the same figure for both children)."""
    tr = make_trainer(args, lora=args.memory_child == "lora")
    out: dict[str, float] = {}
    if Path("/proc/self/clear_refs").exists():
        m = _rss_mib()
        out["rss_before_iteration_mib"], out["peak_rss_setup_mib"] = m["VmRSS"], m["VmHWM"]
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
        tr.run_iteration()
        out["peak_rss_iteration_mib"] = _rss_mib()["VmHWM"]  # the peak while the iteration ran
        out["peak_rss_mib"] = max(out["peak_rss_setup_mib"], out["peak_rss_iteration_mib"])
    else:  # no /proc: the process's peak (ru_maxrss is KiB on Linux, bytes on macOS)
        tr.run_iteration()
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin"
                                                                                    else 1024)
    if tr.device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M) or 'tiny' (random 2-layer Llama)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--micro", type=int, default=8, help="micro-batch rows for the update benchmarks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-repeats", type=int, default=2, help="alternated (ours, naive) pairs for the naive ratio")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto|fp32|bf16 (as textgym train --precision)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-update", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default="benchmarks/results/rlhf_rollout.json")
    p.add_argument("--memory-child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    device = resolve_device(args.device)
    tr = make_trainer(args)
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "model": args.model, "batch": args.batch,
        "new_tokens": args.new_tokens, "dtype": "bf16 autocast" if tr.autocast() else "fp32",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    res["rollout"] = bench_rollout(tr, args)
    res["matmul_gflop_per_s"] = {"fp32": matmul_gflops(torch.float32, device),
                                 "bf16": matmul_gflops(torch.bfloat16, device)}
    for dt in ("bf16", "fp32"):
        res["rollout"][f"fraction_of_{dt}_matmul"] = res["rollout"]["rollout_gflop_per_s"] / \
            res["matmul_gflop_per_s"][dt]
    if not args.skip_update:
        res["update"] = bench_update(tr, args)
    if not args.skip_memory:
        res["memory"] = {}
        for kind in ("full", "lora"):
            cmd = [sys.executable, __file__, "--memory-child", kind, "--model", args.model, "--batch",
                   str(args.batch), "--new-tokens", str(args.new_tokens), "--micro", str(args.micro), "--device",
                   args.device, "--precision", args.precision] + (
                       ["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res["memory"][kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    ro, mm = res["rollout"], res["matmul_gflop_per_s"]
    rows = [("rollout vs generate (row-steps/s)", f"{ro['ours_row_steps_per_s']:.1f} vs "
             f"{ro['generate_row_steps_per_s']:.1f}", f"{ro['ratio_vs_generate']:.2f}", ">= 1.0"),
            ("rollout GFLOP/s vs a matmul's (bf16 / fp32)", f"{ro['rollout_gflop_per_s']:.1f} vs {mm['bf16']:.1f} / "
             f"{mm['fp32']:.1f}", f"{ro['fraction_of_bf16_matmul']:.2f} / {ro['fraction_of_fp32_matmul']:.2f}", "")]
    if "speedup_vs_naive" in ro:
        rows.append(("rollout vs naive re-encoding", f"{ro['ours_row_steps_per_s']:.1f} vs "
                     f"{ro['naive_row_steps_per_s']:.1f}", f"{ro['speedup_vs_naive']:.1f}x", ">= 10x"))
    if "update" in res:
        up = res["update"]
        rows.append(("PPO update vs plain LM step (tokens/s)", f"{up['ppo_tokens_per_s']:.0f} vs "
                     f"{up['plain_tokens_per_s']:.0f}", f"{up['ratio_ppo_vs_plain']:.2f}", ">= 0.6"))
    for kind, m in res.get("memory", {}).items():
        peak = m.get("peak_rss_iteration_mib", m["peak_rss_mib"])
        rows.append((f"peak RSS, one PPO iteration ({kind})", f"{peak:.0f} MiB"
                     + (f" (before it: {m['rss_before_iteration_mib']:.0f})" if "rss_before_iteration_mib" in m
                        else "") + (f", CUDA peak {m['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in m else ""),
                     "", ""))
    print(f"device: {res['device']}, model {args.model}, batch {args.batch}, {args.new_tokens} new tokens, "
          f"{res['dtype']}, {res['torch_threads']} threads")
    print("| measure | values | ratio | target |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
