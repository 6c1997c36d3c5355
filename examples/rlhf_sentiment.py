"""RLHF on the sentiment task: make SmolLM2-135M-Instruct's completions of movie-review openers more positive
(VADER compound score in [-1, 1]), then print the first and last iterations' mean scores with 95% CIs.

    python examples/rlhf_sentiment.py                 # ~12 iterations, CPU-friendly settings
    python examples/rlhf_sentiment.py --iterations 30 --out runs/sentiment-long

The same run as ``textgym train --task TextGen-Sentiment-v0 --trainable-layers 4 --lr 1e-4 ...``; see
docs/rlhf.md. Output: OUT/metrics.csv, OUT/plot.png, OUT/samples.md, OUT/final/.
"""

from __future__ import annotations

import argparse
import csv
import sys

from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig
from agents.lm.train import run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--out", default="runs/rlhf-sentiment")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    cfg = RLHFConfig(task="TextGen-Sentiment-v0", out=args.out, iterations=args.iterations, num_envs=32,
                     max_new_tokens=12, trainable_layers=4, lr=1e-4,
                     ppo=RLHFPPOConfig(minibatch_size=16, micro_batch_size=16))
    code = run(cfg, resume=args.resume)
    if code:
        return code
    with open(f"{args.out}/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in (rows[0], rows[-1]):
        print(f"iteration {row['step']}: reward {float(row['rollout/ep_rew_mean']):.3f} "
              f"+- {float(row['rollout/ep_rew_ci95']):.3f} (95% CI), "
              f"KL to reference {float(row['rlhf/kl_ref']):.2f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
