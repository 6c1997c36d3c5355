"""Human feedback end to end: policy samples -> ratings -> reward model -> PPO -> a held-out rater's verdict.

    python examples/human_feedback.py --out runs/human_feedback [--quick] [--rater scripted|human]

1. Sample completions from the initial policy (a tiny GPT-2 with random weights over a 28-word vocabulary of
   review words, so the whole run takes a minute or two of CPU) and store them in ``OUT/ratings.db``.
2. Rate them. ``--rater scripted`` (default) uses a stand-in for a person: it likes positive words and dislikes
   negative ones (1-5: 3 + positive - negative, plus noise, clipped). With ``--rater human`` the script waits
   while a person rates them in a browser (``textgym serve OUT/ratings.db``) or a terminal
   (``textgym rate OUT/ratings.db``).
3. Train a reward model on the store (``textgym train-rm OUT/ratings.db --out OUT/reward_model`` is the same).
4. PPO (``agents.lm.rlhf.RLHFTrainer``) of the policy against the reward model: ``scorer={"name":
   "reward-model", "path": "OUT/reward_model"}``.
5. A held-out rater (same taste, more noise, its own random draws; it never rated training data) rates new
   samples of the initial and of the trained policy. The script prints both means with 95% confidence
   intervals and writes everything to ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

POSITIVE = ["great", "lovely", "wonderful", "good", "happy", "excellent", "fun", "brilliant"]
NEGATIVE = ["awful", "bad", "boring", "terrible", "sad", "dull", "poor", "horrible"]
NEUTRAL = ["the", "film", "was", "plot", "and", "a", "story", "actors", "it", "very", "quite", "ending"]
VOCAB = NEUTRAL + POSITIVE + NEGATIVE  # the policy's words; id len(VOCAB) is EOS
TOKENIZER = "word:" + " ".join(VOCAB)
PROMPTS = ["the film was", "the plot was", "the story was", "the ending was", "the actors", "it was", "a film",
           "a story", "the film and the plot", "the ending and the actors"]


@dataclass
class ScriptedRater:
    """A stand-in for a person on the 1-5 scale: ``3 + #positive - #negative words + noise * N(0, 1)``, rounded
    and clipped. Two instances with different ``seed`` (and ``noise``) are two different raters."""

    name: str
    noise: float = 0.5
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, completion: str) -> int:
        words = completion.split()
        raw = 3 + sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        return int(np.clip(round(raw + self.noise * self.rng.normal()), 1, 5))


@dataclass
class Settings:
    out: Path
    n_rated: int = 320  # samples of the initial policy rated for the reward model
    rm_steps: int = 150
    iterations: int = 30  # PPO iterations
    num_envs: int = 32  # completions per PPO iteration
    n_eval: int = 256  # new samples per policy rated by the held-out rater
    max_new_tokens: int = 6
    lr: float = 3e-3
    seed: int = 0
    rater: str = "scripted"


QUICK = {"n_rated": 160, "rm_steps": 80, "iterations": 15, "n_eval": 128}


def tiny_policy_model(seed: int) -> Any:
    """A 2-layer GPT-2 with random weights whose vocabulary is the word tokenizer's (28 words + EOS)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    v = len(VOCAB) + 1
    cfg = transformers.GPT2Config(vocab_size=v, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=v - 1, eos_token_id=v - 1)
    return transformers.GPT2LMHeadModel(cfg).eval()


def sample(policy: Any, n: int, max_new_tokens: int, seed: int, batch: int = 64) -> list[tuple[str, str]]:
    """``n`` sampled ``(prompt, completion)`` pairs of ``policy`` (a ``CausalLMPolicy``), prompts drawn by seed."""
    import torch

    from agents.lm.rollout import rollout
    from textgym.envs.vector import BatchedTextGenEnv

    out: list[tuple[str, str]] = []
    gen = torch.Generator().manual_seed(seed)
    for k in range(0, n, batch):
        m = min(batch, n - k)
        env = BatchedTextGenEnv(m, autoreset_mode="disabled", tokenizer=TOKENIZER, prompts=PROMPTS, scorer="length",
                                max_new_tokens=max_new_tokens, action_size=policy.out_size)  # scores unused
        r = rollout(policy, env, seed=seed * 7919 + k, generator=gen)
        out += list(zip(r.prompts, r.completions))
    return out


def rate_by_script(store: Any, ids: list[int], completions: list[str], rater: ScriptedRater) -> None:
    for i, c in zip(ids, completions):
        store.add_rating(i, rater.name, score=rater(c))


def rate_by_person(store: Any, db: Path) -> None:
    print(f"\nRate the samples now, in another terminal:\n  textgym serve {db}     (then open http://127.0.0.1:8765/)"
          f"\n  textgym rate {db}      (or in the terminal)")
    input("Press Enter here when you have rated enough of them (a few dozen at least) ... ")
    print(f"store: {store.stats()}")


def run(s: Settings, log: Any = print) -> dict[str, Any]:
    """Steps 1-5 of the module doc; returns (and writes to ``OUT/results.json``) what was measured."""
    import torch

    from agents.lm.policy import CausalLMPolicy
    from agents.lm.rlhf import RLHFConfig, RLHFPPOConfig, RLHFTrainer
    from agents.reward_model import RMConfig, train_reward_model
    from textgym.human.store import RatingStore
    from textgym.stats import mean_ci

    torch.set_num_threads(1)
    t0 = time.time()
    s.out.mkdir(parents=True, exist_ok=True)
    model = tiny_policy_model(s.seed)
    initial = CausalLMPolicy(copy.deepcopy(model))  # kept frozen, for the comparison at the end

    # 1. samples of the initial policy -> the store
    db = s.out / "ratings.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = RatingStore(db, scale="1-5")
    pairs = sample(initial, s.n_rated, s.max_new_tokens, seed=s.seed + 1)
    ids = store.add_samples([{"prompt": p, "completion": c} for p, c in pairs], run_id="initial", model_id="init")
    log(f"1. stored {len(ids)} samples of the initial policy in {db}, e.g. {pairs[0][0]!r} -> {pairs[0][1]!r}")

    # 2. ratings
    if s.rater == "human":
        rate_by_person(store, db)
    else:
        rate_by_script(store, ids, [c for _, c in pairs], ScriptedRater("scripted", noise=0.5, seed=s.seed + 2))
        log(f"2. rated them with a scripted rater (a person would run `textgym serve {db}`): {store.stats()}")

    # 3. reward model
    rm_dir = s.out / "reward_model"
    rm_cfg = RMConfig(backbone="tiny", steps=s.rm_steps, batch_size=16, lr=3e-3, head_lr=3e-3, max_length=32,
                      seed=s.seed)
    _, metrics = train_reward_model(store, rm_dir, rm_cfg, log=lambda *_: None)
    ev = metrics["eval"]
    log(f"3. reward model -> {rm_dir}: held-out pairwise accuracy {ev['pairwise_accuracy']:.3f}, "
        f"Spearman {ev['spearman']:.3f} ({metrics['seconds']:.0f} s)")

    # 4. PPO against the reward model
    cfg = RLHFConfig(task="TextGen-v0", tokenizer=TOKENIZER, prompts=str(write_prompts(s.out)),
                     scorer={"name": "reward-model", "path": str(rm_dir)},
                     out=str(s.out / "rlhf"), iterations=s.iterations, seed=s.seed, num_envs=s.num_envs,
                     max_new_tokens=s.max_new_tokens, lr=s.lr, device="cpu", num_threads=1,
                     tensorboard=False, progress=False,
                     ppo=RLHFPPOConfig(n_epochs=2, minibatch_size=16, micro_batch_size=None))
    trainer = RLHFTrainer(cfg, model=model)
    history = []
    for it in range(s.iterations):
        m = trainer.run_iteration()
        history.append({"reward_mean": m["rollout/ep_rew_mean"], "reward_ci95": m["rollout/ep_rew_ci95"],
                        "kl": m["rlhf/kl_ref"]})
        if it == 0 or (it + 1) % 5 == 0 or it + 1 == s.iterations:
            log(f"4. PPO iteration {it + 1}/{s.iterations}: reward-model score {m['rollout/ep_rew_mean']:.3f} "
                f"± {m['rollout/ep_rew_ci95']:.3f}, KL to the initial policy {m['rlhf/kl_ref']:.3f}")

    # 5. the held-out rater on new samples of both policies (the same prompts and sampling seed for both)
    held_out = ScriptedRater("held-out", noise=1.0, seed=s.seed + 1000)
    trainer.policy.eval()
    result: dict[str, Any] = {}
    for name, policy in (("initial", initial), ("trained", trainer.policy)):
        fresh = sample(policy, s.n_eval, s.max_new_tokens, seed=s.seed + 500)
        ratings = [held_out(c) for _, c in fresh]
        mean, ci = mean_ci(ratings)
        result[name] = {"mean": mean, "ci95": ci, "n": len(ratings), "examples": fresh[:3]}
        log(f"5. held-out rater, {name} policy: mean rating {mean:.2f} ± {ci:.2f} (95% CI, n={len(ratings)}), "
            f"e.g. {fresh[0][1]!r}")
    result.update(reward_model_eval=ev, ppo=history, seconds=time.time() - t0, settings={
        k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()})
    (s.out / "results.json").write_text(json.dumps(result, indent=2))
    log(f"held-out rater's mean rating: {result['initial']['mean']:.2f} -> {result['trained']['mean']:.2f} "
        f"({result['seconds']:.0f} s in all; {s.out / 'results.json'})")
    return result


def write_prompts(out: Path) -> Path:
    path = out / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/human_feedback")
    p.add_argument("--quick", action="store_true", help=f"smaller run for CI: {QUICK}")
    p.add_argument("--rater", choices=["scripted", "human"], default="scripted",
                   help="who rates the initial samples: the scripted stand-in or you (through `textgym serve`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=None, help="PPO iterations (default 30, --quick 15)")
    args = p.parse_args()
    s = Settings(out=Path(args.out), seed=args.seed, rater=args.rater, **(QUICK if args.quick else {}))
    if args.iterations is not None:
        s.iterations = args.iterations
    run(s)


if __name__ == "__main__":
    main()
