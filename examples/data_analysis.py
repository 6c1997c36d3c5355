"""RLHF on the data-analysis task (answer a question about a small CSV table; scored on the number): greedy
answer accuracy on a fixed evaluation set before and after a short PPO run.

    python examples/data_analysis.py --iterations 8 --eval-batches 2

Accuracy is the scorer's ``correct`` part (the first number in the answer within tolerance of the truth);
the mean score also credits closeness. A 135M model starts low; a short CPU run mostly teaches it to answer
with a number first. Results go to OUT (metrics.csv, plot.png, samples.md, accuracy.json) and are printed.
``--model``, ``--tokenizer``, ``--num-envs``, ``--max-new-tokens`` and ``--trainable-layers`` shrink the run
(``tests/test_examples.py`` runs it with a tiny random GPT-2 and the byte tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer
from agents.lm.train import run
from textgym.stats import mean_ci


def evaluate(trainer: RLHFTrainer, batches: int) -> dict[str, float]:
    """Greedy answers to ``batches * num_envs`` fixed prompts (seeded): accuracy and mean score."""
    correct, scores = [], []
    for b in range(batches):
        r = trainer.collect(seed=10_000 + b * trainer.cfg.num_envs, greedy=True)
        correct += [float(i.get("score_parts", {}).get("correct", np.nan)) for i in r.infos]
        scores += r.scores.tolist()
    acc, acc_ci = mean_ci(np.array(correct))
    score, score_ci = mean_ci(np.array(scores))
    return {"accuracy": acc, "accuracy_ci95": acc_ci, "score": score, "score_ci95": score_ci, "n": len(correct)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--eval-batches", type=int, default=2, help="evaluation prompts = this x num_envs")
    p.add_argument("--out", default="runs/rlhf-data-analysis")
    p.add_argument("--model", default=None, help="causal LM folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--tokenizer", default=None, help="tokenizer override (default: the model's own)")
    p.add_argument("--num-envs", type=int, default=32, help="completions per iteration")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--trainable-layers", type=int, default=4, help="train only the last N blocks")
    args = p.parse_args(argv)
    mb = min(16, args.num_envs)
    cfg = RLHFConfig(task="TextGen-DataAnalysis-v0", out=args.out, iterations=args.iterations, model=args.model,
                     tokenizer=args.tokenizer, num_envs=args.num_envs, max_new_tokens=args.max_new_tokens,
                     trainable_layers=args.trainable_layers, lr=1e-4,
                     ppo=RLHFPPOConfig(minibatch_size=mb, micro_batch_size=mb))
    before = evaluate(RLHFTrainer(cfg), args.eval_batches)
    code = run(cfg)
    if code:
        return code
    trained = RLHFTrainer(cfg)
    trained.load_state_dict(*trained.dist.load_state(args.out))  # (shared state, this process's RNG state)
    after = evaluate(trained, args.eval_batches)
    for name, m in (("before", before), ("after", after)):
        print(f"{name}: accuracy {m['accuracy']:.3f} +- {m['accuracy_ci95']:.3f}, mean score {m['score']:.3f} "
              f"+- {m['score_ci95']:.3f} (95% CIs, {m['n']} greedy answers)")
    (Path(args.out) / "accuracy.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
