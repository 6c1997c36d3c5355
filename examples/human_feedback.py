"""Human feedback end to end: samples -> ratings -> reward model -> (PPO against it).

    python examples/human_feedback.py --out runs/human_feedback [--backbone tiny|minilm]

1. Generate samples: here, review completions built from word lists stand in for a policy's completions
   (with a policy, write ``Sample``s from the env's ``info`` with ``RatingStore.add_samples``).
2. Rate them. This script uses a scripted stand-in rater (likes positive words). A person does it with
   ``textgym serve runs/human_feedback/ratings.db`` (open http://127.0.0.1:8765/, type a name, press 1-5, or
   click tokens, or compare A/B) or ``textgym rate runs/human_feedback/ratings.db`` in a terminal.
3. Train a reward model on the ratings (``textgym train-rm DB --out DIR`` does the same from the shell).
4. Check it against a held-out rater (a second scripted rater with its own taste noise) on new samples.

Not done here yet: PPO of a language-model policy against the reward model (the RLHF agent, ``agents.lm``,
takes ``scorer={"name": "reward-model", "path": DIR}`` once it is wired up), and the held-out rater's ratings
of the policy's samples before and after it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from textgym.core import Sample
from textgym.human.reward_model import RewardModelScorer, RMConfig, spearman, train_reward_model
from textgym.human.store import RatingStore

POSITIVE = ["great", "lovely", "wonderful", "good", "happy", "excellent", "fun", "brilliant"]
NEGATIVE = ["awful", "bad", "boring", "terrible", "sad", "dull", "poor", "horrible"]
NEUTRAL = ["the", "film", "was", "plot", "and", "a", "story", "actors", "it", "very", "quite", "ending"]


def make_samples(n_prompts: int, per_prompt: int, rng: np.random.Generator) -> list[Sample]:
    out = []
    for p in range(n_prompts):
        for _ in range(per_prompt):
            words = list(rng.choice(NEUTRAL, size=5))
            for lexicon in (POSITIVE, NEGATIVE):
                for _ in range(int(rng.integers(0, 3))):
                    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(lexicon)))
            tokens = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
            out.append(Sample(f"Review {p}:", "".join(tokens), completion_ids=tuple(range(len(tokens))), tokens=tokens))
    return out


def scripted_rater(sample: Sample, rng: np.random.Generator, noise: float = 0.0) -> int:
    """1-5: 3 + (positive - negative words) + noise, clipped: a stand-in for a person."""
    words = sample.completion.split()
    raw = 3 + sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words) + noise * rng.normal()
    return int(np.clip(round(raw), 1, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/human_feedback")
    parser.add_argument("--backbone", default="tiny", help="tiny (seconds) or minilm (minutes on CPU)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    # 1-2. samples, rated by the stand-in rater (a person: `textgym serve DB`)
    db = out / "ratings.db"
    db.unlink(missing_ok=True)
    store = RatingStore(db, scale="1-5")
    samples = make_samples(40, 4, rng)
    for i, s in zip(store.add_samples(samples, run_id="example"), samples):
        store.add_rating(i, "scripted", score=scripted_rater(s, rng))
    print(f"rated {len(samples)} samples in {db}")

    # 3. reward model
    cfg = RMConfig(backbone=args.backbone, steps=args.steps, batch_size=8, lr=3e-3 if args.backbone == "tiny" else 5e-5,
                   head_lr=3e-3, max_length=32, seed=args.seed)
    _, metrics = train_reward_model(store, out / "reward_model", cfg)
    ev = metrics["eval"]
    print(f"held-out split: pairwise accuracy {ev['pairwise_accuracy']:.3f}, Spearman {ev['spearman']:.3f}")

    # 4. a held-out rater (noisier taste) on new samples: does the reward model agree with them?
    scorer = RewardModelScorer(out / "reward_model")
    fresh = make_samples(20, 4, np.random.default_rng(args.seed + 1))
    held_out = np.array([scripted_rater(s, rng, noise=0.5) for s in fresh])
    predicted = scorer.score(fresh)
    best = [max(range(4), key=lambda j: predicted[4 * p + j]) for p in range(20)]
    picked = np.mean([held_out[4 * p + j] for p, j in enumerate(best)])
    print(f"new samples: Spearman(reward model, held-out rater) {spearman(predicted, held_out):.3f}; held-out rater's "
          f"mean rating of the reward model's best-of-4 {picked:.2f} vs. of all samples {held_out.mean():.2f}")


if __name__ == "__main__":
    main()
