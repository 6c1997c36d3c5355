"""Benchmark: scoring overlapped with generation (issue 6, item 3), in one run.

A rollout generates ``K`` chunks of ``B`` completions with a causal LM (``model.generate``, greedy, so every
mode generates the same tokens) and scores each chunk with a slow scorer. Four timings, same run:

- ``generate``: the K chunks, no scoring;  ``score``: scoring the K chunks, no generation;
- ``sequential``: generate chunk k, score it (blocking), generate chunk k+1 ... (what a synchronous env does);
- ``overlapped``: :class:`textgym.scorers.async_.ScoringPipeline`: chunk k is scored in a worker thread
  while chunk k+1 is generated; the scores of all chunks come back in order at the end.

The ideal overlapped wall time is about ``max(generate, score) + one chunk of the other``; ``sequential`` is
about ``generate + score``. Scorers: ``sleep`` (waits ``--sleep`` s per chunk: a remote reward model, a
service, a person; it needs no CPU) and ``minilm`` (the MiniLM similarity scorer on this CPU: it competes
with generation for the same cores, so on a CPU-only machine the overlap gains less).

    python benchmarks/async_scoring.py                    # tiny GPT-2, sleep scorer
    python benchmarks/async_scoring.py --scorer minilm    # a real CPU-bound scorer
    python benchmarks/async_scoring.py --model default    # the embedded SmolLM2-135M (slower)

Writes ``benchmarks/results/async_scoring[_SCORER].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textgym.core import Sample
from textgym.scorers import score_batch
from textgym.scorers.async_ import ScoringPipeline


class SleepScorer:
    """Waits ``delay`` seconds per batch (without using the CPU), then scores by completion length."""

    name = "sleep"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def score(self, samples):
        time.sleep(self.delay)
        return np.array([float(len(s.completion)) for s in samples])


class Generator:
    """``model.generate`` on a fixed set of prompts per chunk (greedy: the same tokens in every mode)."""

    def __init__(self, model_spec: str, batch: int, new_tokens: int, device: torch.device) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

        self.device, self.batch, self.new_tokens = device, batch, new_tokens
        if model_spec == "tiny":  # a 4-layer GPT-2 with random weights on bytes: no files needed
            torch.manual_seed(0)
            cfg = GPT2Config(vocab_size=257, n_positions=256, n_embd=256, n_layer=4, n_head=4,
                             bos_token_id=256, eos_token_id=256, pad_token_id=256)
            self.model, self.tok = GPT2LMHeadModel(cfg), None
            self.name = "tiny GPT-2 (4 layers, d=256, random weights)"
        else:
            path = model_spec
            if model_spec == "default":
                from textgym.default_model import default_model_dir

                path = str(default_model_dir())
            self.model = AutoModelForCausalLM.from_pretrained(path)
            self.tok = AutoTokenizer.from_pretrained(path)
            self.tok.padding_side = "left"
            if self.tok.pad_token is None:
                self.tok.pad_token = self.tok.eos_token
            self.name = model_spec
        self.model.to(device).eval()

    def prompts(self, k: int) -> list[str]:
        return [f"Review {k}-{i}: the film was" for i in range(self.batch)]

    @torch.no_grad()
    def chunk(self, k: int) -> list[Sample]:
        prompts = self.prompts(k)
        if self.tok is None:
            ids = torch.tensor([list(p.encode())[:24] + [32] * (24 - len(p.encode()[:24])) for p in prompts])
            inputs = {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids).to(self.device)}
        else:
            inputs = self.tok(prompts, return_tensors="pt", padding=True).to(self.device)
        P = inputs["input_ids"].shape[1]
        out = self.model.generate(**inputs, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                                  do_sample=False, pad_token_id=self.model.config.pad_token_id
                                  if self.tok is None else self.tok.pad_token_id)
        comp = out[:, P:].cpu()
        if self.tok is None:
            texts = [bytes(x for x in row.tolist() if x < 256).decode("latin-1") for row in comp]
        else:
            texts = self.tok.batch_decode(comp, skip_special_tokens=True)
        return [Sample(prompt=p, completion=t, completion_ids=tuple(c.tolist()), meta={"reference": "a great film"})
                for p, t, c in zip(prompts, texts, comp)]


def run_modes(gen: Generator, scorer: Any, K: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    chunks = [gen.chunk(k) for k in range(K)]
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = np.concatenate([score_batch(scorer, c)[0] for c in chunks])
    t_score = time.perf_counter() - t0

    t0 = time.perf_counter()
    seq = np.concatenate([score_batch(scorer, gen.chunk(k))[0] for k in range(K)])
    t_seq = time.perf_counter() - t0

    t0 = time.perf_counter()
    with ScoringPipeline(scorer) as pipe:
        for k in range(K):
            pipe.put(gen.chunk(k))  # chunk k is scored while chunk k+1 is generated
        ovl = pipe.results()
    t_ovl = time.perf_counter() - t0
    if not (np.array_equal(ref, seq) and np.array_equal(ref, ovl)):
        raise RuntimeError("the modes scored different samples; generation is not deterministic here")
    return {"generate_s": t_gen, "score_s": t_score, "sequential_s": t_seq, "overlapped_s": t_ovl,
            "wait_at_end_s": pipe.wait_s}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (random 4-layer GPT-2), 'default' (SmolLM2-135M) or a path")
    p.add_argument("--scorer", default="sleep", choices=["sleep", "minilm"], help="the slow scorer")
    p.add_argument("--sleep", type=float, default=None, help="seconds per chunk for --scorer sleep (default: the "
                   "measured time to generate one chunk, the case where overlap helps most)")
    p.add_argument("--chunks", type=int, default=4, help="K chunks per rollout")
    p.add_argument("--batch", type=int, default=8, help="completions per chunk")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per completion")
    p.add_argument("--repeats", type=int, default=3, help="repeat every mode; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for generation")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda'")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/async_scoring[_minilm].json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gen = Generator(args.model, args.batch, args.new_tokens, device)
    gen.chunk(0)  # warm-up
    t0 = time.perf_counter()
    gen.chunk(0)
    one_chunk = time.perf_counter() - t0
    if args.scorer == "sleep":
        scorer: Any = SleepScorer(args.sleep if args.sleep is not None else one_chunk)
        scorer_desc = f"sleep {scorer.delay:.3f} s per chunk"
    else:
        from textgym.scorers.similarity import SimilarityScorer

        scorer = SimilarityScorer(reference="a great film")
        score_batch(scorer, gen.chunk(0))  # load the model before timing
        scorer_desc = "MiniLM similarity on CPU"

    runs = [run_modes(gen, scorer, args.chunks) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = med["generate_s"] + med["score_s"]
    result = {
        "model": gen.name, "scorer": scorer_desc, "device": str(device), "chunks": args.chunks,
        "batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": args.threads,
        "median": med, "runs": runs,
        "generate_plus_score_s": total,
        "sequential_over_sum": med["sequential_s"] / total,
        "overlapped_over_sum": med["overlapped_s"] / total,
        "speedup_overlapped_vs_sequential": med["sequential_s"] / med["overlapped_s"],
        "ideal_overlapped_s": max(med["generate_s"], med["score_s"])
        + min(med["generate_s"], med["score_s"]) / args.chunks,
        "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    suffix = "" if args.scorer == "sleep" else f"_{args.scorer}"
    out = Path(args.out or f"benchmarks/results/async_scoring{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{gen.name}; scorer: {scorer_desc}; {args.chunks} chunks x {args.batch} completions x "
          f"{args.new_tokens} tokens on {device} (median of {args.repeats})")
    rows = [("generate only", med["generate_s"]), ("score only", med["score_s"]),
            ("generate + score (sum)", total), ("sequential (wall)", med["sequential_s"]),
            ("overlapped (wall)", med["overlapped_s"]), ("ideal overlapped", result["ideal_overlapped_s"])]
    for name, v in rows:
        print(f"  {name:<24} {v:8.3f} s   {v / total:6.2f} x sum")
    print(f"  overlapped is {result['speedup_overlapped_vs_sequential']:.2f}x faster than sequential; "
          f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
