"""``textgym eval``: held-out accuracy of one or more causal LMs on a textgym task, side by side.

    textgym eval --task sql --n 128 --k 8 --out runs/eval                      # the default model
    textgym eval --task sql --model default --model runs/sql --out runs/eval   # before / after, one command

For each ``--model`` (``default``, a model folder, or a ``textgym train`` run folder, whose ``final/`` is used):

- **greedy**: one greedy completion per held-out prompt; accuracy (the scorer's ``--success-part``, ``correct``
  by default) overall and per question kind (``meta["kind"]``) with 95% Wilson intervals
  (:func:`textgym.stats.proportion_ci`), the mean score (Student-t CI) and the mean of every score part;
- **pass@k** (``--k`` > 0): ``k`` sampled completions per prompt at ``--temperature``; a prompt passes if any is
  correct (the unbiased estimator of Chen et al. 2021 with n = k), per kind with Wilson intervals;
- **fluency** of the greedy completions, as RL4LMs reports it: the perplexity of the completion tokens under a
  reference model (``--ref-model``, default the first ``--model``) and distinct-1/2 (unique word n-grams over
  all n-grams of all completions);
- **gold** (``--gold-scorer SPEC``): a second scorer's mean over the same greedy completions, beside the task's.

The ``--n`` prompts are drawn from the task's prompt source with ``SeedSequence([EVAL_TAG, --seed])``; training
seeds its envs with plain integers, so these streams are not the ones training draws. A run folder's training
seed equal to ``--seed`` draws a warning all the same. Completions come from the training rollout
(:func:`agents.lm.rollout.rollout`) through the task's env, so prompts (chat template), stop strings, EOS ids
and scores are exactly those of training. Writes ``OUT/eval.json`` and ``OUT/eval.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

EVAL_TAG = 0x7E57  # the first entropy word of every held-out prompt stream


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None,
                        help="'default', a model folder, or a train run folder (its final/ is used); repeat to "
                             "compare models side by side (default: the embedded default model)")
    parser.add_argument("--task", default="TextGen-SQL-v0",
                        help="registered id or short name (sql, data-analysis, ...)")
    parser.add_argument("--n", type=int, default=128, help="held-out prompts")
    parser.add_argument("--prompt-kwargs", default=None,
                        help='arguments of the task\'s prompt generator as JSON, e.g. \'{"kinds": ["max", "min"]}\'')
    parser.add_argument("--k", type=int, default=0, help="samples per prompt for pass@k (0: greedy only)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the held-out prompts (and the samples)")
    parser.add_argument("--out", default="runs/eval", help="folder for eval.json and eval.png")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for pass@k")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="completion budget (default: the task's)")
    parser.add_argument("--batch-size", type=int, default=32, help="completions generated together")
    parser.add_argument("--success-part", default="correct", help="the score part that counts as a success")
    parser.add_argument("--gold-scorer", default=None, help="a second scorer (name, 'NAME:VALUE' or JSON object) "
                                                            "scored on the same greedy completions")
    parser.add_argument("--ref-model", default=None, help="reference model for the perplexity (default: the first "
                                                          "--model); 'none' to skip")
    parser.add_argument("--tokenizer", default=None, help="tokenizer override (default: the model's own, or the "
                                                          "task's for the default model)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument("--num-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--all-examples", action="store_true",
                        help="write every greedy completion to eval.json (default: the first 16)")
    parser.add_argument("--train-seed", type=int, action="append", default=None,
                        help="seeds training used, to warn if --seed equals one (read from a run folder's "
                             "config.json when there is one)")


# -- small pure helpers (tests import them) ------------------------------------------------------------------
def held_out_prompts(task: str, n: int, seed: int, prompt_kwargs: dict[str, Any] | None = None) -> list[Any]:
    """``n`` prompts of ``task``'s source, drawn from ``SeedSequence([EVAL_TAG, seed])`` (never a training stream)."""
    from textgym.prompts import load_prompts
    from textgym.registration import TASKS, resolve_task

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--n must be a positive int (the number of held-out prompts), got {n!r}")
    kwargs = TASKS[resolve_task(task)][1]
    source = load_prompts(kwargs["prompts"], **(prompt_kwargs or {}))
    rng = np.random.default_rng(np.random.SeedSequence([EVAL_TAG, int(seed)]))
    return [source.sample(rng) for _ in range(n)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word ``n``-grams over all word ``n``-grams of ``texts`` (corpus-level distinct-n, RL4LMs); NaN if none."""
    grams: Counter[tuple[str, ...]] = Counter()
    for t in texts:
        words = t.split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else float("nan")


def pass_at_k(n_samples: int, n_correct: int, k: int) -> float:
    """Chen et al. 2021's unbiased pass@k from ``n_samples`` samples, ``n_correct`` of them right:
    ``1 - C(n - c, k) / C(n, k)``."""
    if n_samples - n_correct < k:
        return 1.0
    return 1.0 - math.comb(n_samples - n_correct, k) / math.comb(n_samples, k)


def by_kind(kinds: list[str], successes: np.ndarray) -> dict[str, dict[str, float]]:
    """``{"all": ..., kind: ...}`` of ``{"mean", "low", "high", "n"}`` (Wilson 95% intervals) from 0/1 successes."""
    from textgym.stats import proportion_ci

    out = {}
    groups = {"all": np.arange(len(kinds)), **{k: np.flatnonzero(np.array(kinds) == k) for k in sorted(set(kinds))}}
    for name, idx in groups.items():
        s = successes[idx]
        m, lo, hi = proportion_ci(int(round(float(s.sum()))), int(s.size))
        out[name] = {"mean": m, "low": lo, "high": hi, "n": int(s.size)}
    return out


def resolve_model(spec: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """``(path or None for the default model, the training config of a run folder or None)``."""
    if spec in (None, "default"):
        return None, None
    p = Path(spec)
    if (p / "final" / "config.json").exists():  # a run folder
        cfg = p / "config.json"
        return str(p / "final"), json.loads(cfg.read_text()) if cfg.exists() else None
    if not p.exists():
        raise ValueError(f"--model {spec!r}: no such folder; pass 'default', a model folder or a train run folder")
    parent_cfg = p.parent / "config.json"
    if p.name == "final" and parent_cfg.exists():  # a run's final/
        return str(p), json.loads(parent_cfg.read_text())
    return str(p), None


# -- generation through the training rollout ------------------------------------------------------------------
class _Generator:
    """A model, its policy and a batched env of the task; generates completions of given prompts in batches."""

    def __init__(self, model: str | None, task: str, batch_size: int, max_new_tokens: int | None,
                 temperature: float, tokenizer: str | None, device: Any,
                 prompt_kwargs: dict[str, Any] | None = None) -> None:
        from agents.lm.policy import CausalLMPolicy
        from textgym.envs.vector import BatchedTextGenEnv
        from textgym.registration import TASKS, resolve_task
        from textgym.tokenizers import make_tokenizer

        self.policy = CausalLMPolicy(model, temperature=temperature, value_head=False).to(device).eval()
        kwargs = dict(TASKS[resolve_task(task)][1])
        if tokenizer is not None:
            kwargs["tokenizer"] = tokenizer
        elif model is not None:
            kwargs["tokenizer"] = model  # the model's own tokenizer files
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = max_new_tokens
        if prompt_kwargs:  # the env's prompt bound must be that of the held-out prompts' source
            kwargs["prompt_kwargs"] = prompt_kwargs
        kwargs["tokenizer"] = make_tokenizer(kwargs["tokenizer"])
        self.policy.vocab_size = int(kwargs["tokenizer"].vocab_size)
        self.batch_size = batch_size
        self.env = BatchedTextGenEnv(batch_size, autoreset_mode="disabled", action_size=self.policy.out_size, **kwargs)
        self.device = device

    def generate(self, prompts: list[Any], greedy: bool, row_seeds: list[int] | None = None) -> list[dict[str, Any]]:
        """One finished episode per prompt: the env's final info (``completion``, ``score``, ``score_parts``, ...)
        plus ``_completion_ids``; ``self.batches`` keeps each rollout's ``(input_ids, attention_mask,
        completion_mask, rows)`` for the perplexity."""
        import torch

        from agents.lm.rollout import rollout

        out: list[dict[str, Any]] = []
        self.batches: list[tuple[Any, Any, Any, int]] = []
        B = self.batch_size
        for start in range(0, len(prompts), B):
            chunk = prompts[start : start + B]
            padded = chunk + [chunk[-1]] * (B - len(chunk))  # the env has B rows: repeat the last, drop it after
            gens = None
            if not greedy:
                seeds = (row_seeds[start : start + B] if row_seeds else []) + [0] * (B - len(chunk))
                gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
            r = rollout(self.policy, self.env, prompts=padded, greedy=greedy, generator=gens)
            self.batches.append((r.input_ids, r.attention_mask, r.completion_mask, len(chunk)))
            for i in range(len(chunk)):
                info = dict(r.infos[i])
                info["_completion_ids"] = r.completion_ids[i][r.completion_mask[i].bool()].tolist()
                out.append(info)
        return out


def _perplexity(ref: Any, batches: list[tuple[Any, Any, Any, int]]) -> float:
    """exp(-mean log-prob) of all completion tokens under ``ref`` (token-weighted over the completions), one
    forward pass per rollout batch (rows past ``rows`` are padding of the last batch)."""
    total, count = 0.0, 0
    device = ref.device
    for ids, mask, comp_mask, rows in batches:
        T = comp_mask.shape[1]
        lp = ref.sequence_logprobs(ids[:rows].to(device), mask[:rows].to(device), T)  # (rows, T)
        m = comp_mask[:rows].bool().to(lp.device)
        total += float(lp[m].sum())
        count += int(m.sum())
    return math.exp(-total / count) if count else float("nan")


def evaluate_model(spec: str | None, args: argparse.Namespace, prompts: list[Any], ref: Any, device: Any,
                   prompt_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of one model (see the module docstring), as a JSON-ready dict; ``prompt_kwargs``: those the
    held-out ``prompts`` were drawn with (the env's prompt bound comes from the same source)."""
    from textgym.scorers import make_scorer, score_batch
    from textgym.stats import mean_ci

    path, train_cfg = resolve_model(spec)
    seeds = set(args.train_seed or [])
    if train_cfg is not None and "seed" in train_cfg:
        seeds.add(int(train_cfg["seed"]))
    if args.seed in seeds:
        warnings.warn(f"--seed {args.seed} equals a seed the model was trained with; the held-out prompts come "
                      "from their own stream, but pass another --seed to be sure they are unseen", stacklevel=2)
    gen = _Generator(path, args.task, min(args.batch_size, len(prompts)), args.max_new_tokens,
                     args.temperature, args.tokenizer, device, prompt_kwargs)
    kinds = [str(p.meta.get("kind", "all")) for p in prompts]
    greedy = gen.generate(prompts, greedy=True)
    greedy_batches = gen.batches
    scores = np.array([ep["score"] for ep in greedy], dtype=np.float64)
    part_names = sorted(greedy[0].get("score_parts", {}))
    parts = {k: np.array([ep["score_parts"][k] for ep in greedy]) for k in part_names}
    m, h = mean_ci(scores)
    result: dict[str, Any] = {
        "model": spec or "default", "path": path, "n": len(prompts),
        "score": {"mean": m, "ci95": h}, "parts": {k: float(v.mean()) for k, v in parts.items()},
        "end_reasons": dict(Counter(str(ep.get("end_reason")) for ep in greedy)),
    }
    if args.success_part in parts:
        result["greedy_accuracy"] = by_kind(kinds, parts[args.success_part])
        for k in part_names:
            result.setdefault("greedy_parts_by_kind", {})[k] = by_kind(kinds, parts[k])
    texts = [str(ep.get("completion", "")) for ep in greedy]
    result["fluency"] = {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
                         "mean_length_tokens": float(np.mean([len(ep["_completion_ids"]) for ep in greedy]))}
    if ref is not None:
        if ref.out_size != gen.policy.out_size:
            result["fluency"]["ref_perplexity"] = None
            result["fluency"]["note"] = "the reference model has another vocabulary: no perplexity"
        else:
            result["fluency"]["ref_perplexity"] = _perplexity(ref, greedy_batches)
    if args.gold_scorer:
        gold = make_scorer(args.gold_scorer)
        base = gen.env
        samples = [base.make_sample(p, base.encode_prompt(p), ep["_completion_ids"]) for p, ep in zip(prompts, greedy)]
        g, _ = score_batch(gold, samples)
        gm, gh = mean_ci(g)
        result["gold"] = {"scorer": args.gold_scorer, "mean": gm, "ci95": gh}
    if args.k > 0:
        if args.success_part not in parts:
            raise ValueError(f"--k needs the score part {args.success_part!r} (the task's scorer gives "
                             f"{part_names}); pass --success-part")
        rep = [p for p in prompts for _ in range(args.k)]
        row_seeds = [int(np.random.SeedSequence([EVAL_TAG, args.seed, i, j]).generate_state(1)[0])
                     for i in range(len(prompts)) for j in range(args.k)]
        sampled = gen.generate(rep, greedy=False, row_seeds=row_seeds)
        ok = np.array([ep["score_parts"][args.success_part] for ep in sampled]).reshape(len(prompts), args.k)
        passed = np.array([pass_at_k(args.k, int(round(c)), args.k) for c in ok.sum(1)])
        result["pass_at_k"] = {"k": args.k, "temperature": args.temperature, **by_kind(kinds, passed)}
        result["sample_accuracy"] = float(ok.mean())
    n_examples = len(prompts) if args.all_examples else 16
    result["examples"] = [{"prompt": p.text, "kind": kinds[i], "completion": texts[i],
                           "completion_ids": greedy[i]["_completion_ids"], "score": float(scores[i]),
                           **({"sql_error": greedy[i]["sql_error"]} if "sql_error" in greedy[i] else {})}
                          for i, p in enumerate(prompts[:n_examples])]
    return result


def plot(results: list[dict[str, Any]], out_png: Path, title: str) -> Path:
    """Bars per question kind: greedy accuracy (and pass@k) of each model, with the 95% intervals."""
    from textgym._optional import require

    matplotlib = require("matplotlib", "the eval plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("greedy_accuracy", "greedy accuracy")]
    if any("pass_at_k" in r for r in results):
        panels.append(("pass_at_k", f"pass@{results[0].get('pass_at_k', {}).get('k', '')}"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, (key, label) in zip(axes[:, 0], panels):
        groups = [g for g in (results[0].get(key) or {}) if g not in ("k", "temperature")]
        width = 0.8 / max(len(results), 1)
        for j, r in enumerate(results):
            d = r.get(key) or {}
            means = [d[g]["mean"] if g in d else float("nan") for g in groups]
            err = [[max(d[g]["mean"] - d[g]["low"], 0) for g in groups], [max(d[g]["high"] - d[g]["mean"], 0)
                                                                           for g in groups]]
            ax.bar(np.arange(len(groups)) + (j - (len(results) - 1) / 2) * width, means, width, yerr=err, capsize=2,
                   label=str(r["model"]))
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylim(0, 1)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


def _line(r: dict[str, Any]) -> str:
    acc = r.get("greedy_accuracy", {}).get("all")
    s = f"{r['model']}: score {r['score']['mean']:.3f} ± {r['score']['ci95']:.3f}"
    if acc:
        s += f"; greedy accuracy {acc['mean']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"
        s += " (" + ", ".join(f"{k} {v['mean']:.2f}" for k, v in r["greedy_accuracy"].items() if k != "all") + ")"
    if "pass_at_k" in r:
        p = r["pass_at_k"]["all"]
        s += f"; pass@{r['pass_at_k']['k']} {p['mean']:.3f} [{p['low']:.3f}, {p['high']:.3f}]"
    f = r["fluency"]
    ppl = f.get("ref_perplexity")
    s += f"; distinct-1/2 {f['distinct_1']:.2f}/{f['distinct_2']:.2f}" + (f"; ref ppl {ppl:.2f}" if ppl else "")
    if "gold" in r:
        s += f"; gold {r['gold']['mean']:.3f} ± {r['gold']['ci95']:.3f}"
    return s


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate every ``--model``; write ``OUT/eval.json`` and ``OUT/eval.png``; return the JSON dict."""
    import torch

    from agents.device import resolve_device
    from agents.lm.policy import CausalLMPolicy
    from textgym.registration import resolve_task
    from textgym.scorers import scorer_spec

    task = resolve_task(args.task)
    if args.k < 0:
        raise ValueError(f"--k must be >= 0 (0: greedy only), got {args.k}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    if args.gold_scorer:
        if args.gold_scorer.lstrip().startswith("{"):
            args.gold_scorer = json.loads(args.gold_scorer)
        scorer_spec(args.gold_scorer)  # before any model is loaded: says what to write
    models = args.model or ["default"]
    for m in models:
        resolve_model(m)  # a missing folder fails here, before anything loads
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    args.task = task
    try:
        prompt_kwargs = json.loads(args.prompt_kwargs) if args.prompt_kwargs else None
    except json.JSONDecodeError as e:
        raise ValueError(f"--prompt-kwargs is not valid JSON ({e}); write e.g. '{{\"kinds\": [\"max\"]}}'") from None
    prompts = held_out_prompts(task, args.n, args.seed, prompt_kwargs)
    ref = None
    ref_spec = args.ref_model if args.ref_model is not None else models[0]
    if str(ref_spec).lower() != "none":
        ref = CausalLMPolicy(resolve_model(ref_spec)[0], value_head=False).to(device).eval()  # log-probs only
    results = [evaluate_model(m, args, prompts, ref, device, prompt_kwargs) for m in models]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"task": task, "n": args.n, "k": args.k, "seed": args.seed, "eval_tag": EVAL_TAG,
              "prompt_kwargs": prompt_kwargs,
              "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
              "success_part": args.success_part, "ref_model": None if ref is None else str(ref_spec),
              "command": "textgym eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None,
              "models": results}
    (out / "eval.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    if any("greedy_accuracy" in r for r in results):
        plot(results, out / "eval.png", f"{task}: {args.n} held-out prompts (seed {args.seed})")
    return report


def main(args: argparse.Namespace) -> int:
    try:
        report = run(args)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in report["models"]:
        print(_line(r))
    print(f"wrote {Path(args.out) / 'eval.json'}" + (", eval.png" if (Path(args.out) / "eval.png").exists() else ""),
          file=sys.stderr)
    return 0
