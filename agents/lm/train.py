"""``textgym train``: RLHF of a causal-LM policy on a textgym task, with PPO or a critic-free algorithm.

    textgym train --task TextGen-Sentiment-v0 --iterations 12 --out runs/demo [--model FOLDER] [--resume]
    textgym train --task TextGen-Sentiment-v0 --algo grpo --group-size 4   # or rloo, reinforce++ (docs/rlhf.md)

Writes ``DIR/config.json``, ``DIR/metrics.csv`` (one row per iteration: ``rollout/ep_rew_mean``,
``rollout/ep_rew_ci95``, ``rlhf/kl_ref``, ``rlhf/*``, ``train/*``, ``time/*``), TensorBoard events in
``DIR/tb``, ``DIR/plot.png`` (reward, KL to the reference, entropy loss, value loss per iteration),
``DIR/samples.md`` (greedy completions before and after), ``DIR/checkpoint/`` (atomic, for ``--resume``) and
``DIR/final/`` (``save_pretrained`` export that plain transformers loads). Every field of
:class:`agents.lm.rlhf.RLHFConfig` is a flag (``--ppo.n-epochs``...).
``--config run.yaml`` (or ``.toml``, or a run's ``config.json``) sets fields from a file, and flags override it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from agents.config import add_config_arg, add_dataclass_args, dataclass_from_args

PLOT_KEYS = ("rollout/ep_rew_mean", "rlhf/kl_ref", "train/entropy_loss", "train/value_loss")
"""plotted per iteration (a critic-free algo has no value loss: its plot shows the policy-gradient loss)"""


def configure(parser: argparse.ArgumentParser) -> None:
    from agents.lm.rlhf import RLHFConfig

    add_dataclass_args(parser, RLHFConfig)
    add_config_arg(parser, RLHFConfig)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (same config required)")


def _truncate_csv(path: Path, last_step: int) -> None:
    """Keep the header and the rows up to ``last_step``: rows logged after the checkpoint are computed again,
    and a line a kill cut short (no newline at its end) is dropped. Rewritten atomically, so a kill here loses
    nothing."""
    from agents.atomic import atomic_write_text

    if not path.exists():
        return
    text = path.read_text()
    text = text[: text.rfind("\n") + 1]  # whole lines only
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:  # empty, or a header cut short
        atomic_write_text(path, "")
        return
    rows = [r for r in reader if int(float(r["step"])) <= last_step]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=reader.fieldnames)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _rebuild_tensorboard(out: Path) -> None:
    """Rewrite ``out/tb`` from ``metrics.csv`` (already truncated to the checkpoint) on resume, so the events a
    killed run logged after its checkpoint are not shown twice. The scalars are exactly the CSV's, as
    :class:`agents.logger.MetricsLogger` logs them (the wall times are those of the rewrite). The new folder is
    written beside and swapped in; a kill meanwhile leaves CSV and checkpoint as they were, and the next
    resume rewrites it again."""
    import math
    import shutil
    import tempfile

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    for stale in out.glob(".tb-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tb-tmp-", dir=out))
    writer = SummaryWriter(log_dir=str(tmp))
    csv_path = out / "metrics.csv"
    for row in (csv.DictReader(csv_path.open(newline="")) if csv_path.exists() else []):
        step = int(float(row["step"]))
        for k, v in row.items():
            if k != "step" and v not in (None, "") and math.isfinite(float(v)):
                writer.add_scalar(k, float(v), step)
    writer.close()
    tb = out / "tb"
    if tb.exists():
        trash = Path(tempfile.mkdtemp(prefix=".tb-tmp-", dir=out))
        os.replace(tb, trash)
        os.replace(tmp, tb)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, tb)


def _samples(trainer: Any, n: int) -> list[dict[str, Any]]:
    """Greedy completions of a fixed set of prompts (the same before and after training)."""
    r = trainer.collect(seed=987_654, greedy=True)
    return [{"prompt": r.prompts[i], "completion": r.completions[i], "score": float(r.scores[i])}
            for i in range(min(n, len(r.prompts)))]


def _write_samples_md(path: Path, before: list[dict[str, Any]], after: list[dict[str, Any]], title: str) -> None:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", "", "Greedy completions of the same prompts before and after training.", ""]
    if before and after:
        mb = sum(s["score"] for s in before) / len(before)
        ma = sum(s["score"] for s in after) / len(after)
        lines += [f"Mean score: before {mb:.3f}, after {ma:.3f}", ""]
    lines += ["| prompt | before | score | after | score |", "|---|---|---|---|---|"]
    for b, a in zip(before, after or [{"completion": "", "score": float("nan")}] * len(before)):
        lines.append(f"| {cell(b['prompt'])} | {cell(b['completion'])} | {b['score']:.3f} | "
                     f"{cell(a['completion'])} | {a['score']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def _check_out(cfg: Any, resume: bool) -> str | None:
    """Why ``cfg.out`` cannot be used (None if it can): nothing to resume, another config, a run already there.

    ``--resume`` of a run killed before its first checkpoint (``config.json`` is there) starts it again."""
    from agents.lm.checkpoint import find_checkpoint
    from agents.lm.rlhf import config_differences

    out = Path(cfg.out)
    ckpt = find_checkpoint(out)
    if resume:
        if ckpt is None and not (out / "config.json").exists():
            return f"--resume: no run in {out} (no checkpoint, no config.json); run without --resume to start one"
        saved = json.loads((out / "config.json").read_text())
        diffs = config_differences(saved, cfg)
        if diffs:
            hint = (" Runs made before kl_horizon's default became one iteration (None) saved kl_horizon 10000: "
                    "pass --kl-horizon 10000 to resume one as it ran." if saved.get("kl_horizon") == 10000 and
                    cfg.kl_horizon is None else "")
            return (f"--resume: {out} holds a run with another config ({'; '.join(diffs)}). Pass the same flags as "
                    f"that run (only --iterations and where/how it runs may change), or another --out.{hint}")
    elif ckpt is not None or (out / "metrics.csv").exists():
        return f"{out} already holds a run; pass --resume to continue it, or choose another --out"
    return None


def run(cfg: Any, resume: bool = False, model: Any = None) -> int:
    """Run (or resume) the RLHF job described by ``cfg``; returns an exit code.

    Under ``accelerate launch`` every process runs this: rank 0 checks ``--out`` and tells the others (so they
    all stop on the same error), writes config, logs, plot, samples and the export; every process takes part in
    the checkpoint (:meth:`agents.distributed.Dist.save_state`: one file with every rank's RNG state).
    """
    from agents.lm.rlhf import make_dist, validate

    validate(cfg)
    dist = make_dist(cfg)
    try:
        return _run(cfg, resume, model, dist)
    finally:  # on every path, errors included: a process group left to interpreter exit can abort it (SIGABRT)
        dist.end()


def _run(cfg: Any, resume: bool, model: Any, dist: Any) -> int:
    from agents.atomic import atomic_write_text
    from agents.lm.checkpoint import find_checkpoint
    from agents.lm.rlhf import RLHFTrainer, config_dict
    from agents.logger import MetricsLogger, plot_metrics
    from textgym._optional import require

    out = Path(cfg.out)
    problem = dist.broadcast_object(_check_out(cfg, resume) if dist.is_main else None)
    if problem is not None:
        raise ValueError(problem)

    trainer = RLHFTrainer(cfg, model=model, dist=dist)
    before_path = out / "samples_before.json"
    if resume:
        ckpt = find_checkpoint(out)  # None: killed before its first checkpoint, so it starts again
        if ckpt is not None:
            state, rank_state = dist.load_state(out, map_location="cpu")  # same number of processes, or error
            trainer.load_state_dict(state, rank_state)
        if dist.is_main:
            _truncate_csv(out / "metrics.csv", trainer.iteration)
            if cfg.tensorboard or (out / "tb").exists():
                _rebuild_tensorboard(out)
        dist.print(f"resuming {out} from iteration {trainer.iteration} ({ckpt or 'no checkpoint yet'})",
                   file=sys.stderr)
    elif dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config_dict(cfg), indent=2) + "\n")
    if dist.is_main and not before_path.exists():  # every file a resume reads is written atomically
        atomic_write_text(before_path, json.dumps(_samples(trainer, cfg.n_samples), indent=1))
    before = json.loads(before_path.read_text()) if dist.is_main else []

    tqdm = require("tqdm", "the progress bar").tqdm
    logger = MetricsLogger(out, tensorboard=cfg.tensorboard, resume=resume) if dist.is_main else None
    status = 0
    try:
        bar = tqdm(range(trainer.iteration, cfg.iterations), initial=trainer.iteration, total=cfg.iterations,
                   desc="rlhf", disable=not (cfg.progress and dist.is_main), file=sys.stderr)
        for _ in bar:
            try:
                metrics = trainer.run_iteration()
            except FloatingPointError as e:  # raised on every process alike (ppo_update checks together)
                last = find_checkpoint(out)
                kept = f"the last good checkpoint ({last}) is kept" if last else "no checkpoint was written yet"
                who = f"[rank {dist.rank}] " if dist.distributed else ""
                print(f"{who}error: {e} at iteration {trainer.iteration + 1}; {kept}. Try a lower --lr.",
                      file=sys.stderr)
                status = 1
                break
            if logger is not None:
                logger.log(trainer.iteration, metrics)
            bar.set_postfix(reward=f"{metrics['rollout/ep_rew_mean']:.3f}", kl=f"{metrics['rlhf/kl_ref']:.2f}")
            if trainer.iteration % cfg.checkpoint_every == 0 or trainer.iteration == cfg.iterations:
                dist.save_state(out, trainer.shared_state_dict, trainer.rank_state_dict())
    finally:
        if logger is not None:
            logger.close()
    if status:
        dist.barrier()  # every process stopped at the same step: leave together (a launcher kills the slower)
        return status
    if dist.is_main:
        if (out / "metrics.csv").stat().st_size > 0 and trainer.iteration > 0:
            keys = [k if k != "train/value_loss" or trainer.algo.needs_critic else "train/policy_gradient_loss"
                    for k in PLOT_KEYS] + (["rlhf/gold_score_mean"] if cfg.gold_scorer is not None else [])
            plot_metrics(out / "metrics.csv", keys, out / "plot.png", title=f"RLHF on {cfg.task}")
        after = _samples(trainer, cfg.n_samples)
        _write_samples_md(out / "samples.md", before, after, f"RLHF on {cfg.task}: samples")
        hf_tok = getattr(trainer.env.tokenizer, "hf", None)
        trainer.policy.save_pretrained(out / "final", tokenizer=hf_tok)
        print(f"wrote {out}/metrics.csv, plot.png, samples.md, checkpoint/, final/", file=sys.stderr)
        summary = reward_summary(out / "metrics.csv")
        if summary:
            print(summary, file=sys.stderr)
    dist.barrier()
    return 0


def reward_summary(csv_path: Path) -> str | None:
    """First vs last iteration's mean score with 95% CIs (half-widths from ``rollout/ep_rew_ci95``), and whether the
    intervals are disjoint: the demo's evidence that the reward rose beyond noise."""
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    ma, ca, mb, cb = (float(a["rollout/ep_rew_mean"]), float(a["rollout/ep_rew_ci95"]),
                      float(b["rollout/ep_rew_mean"]), float(b["rollout/ep_rew_ci95"]))
    verdict = ("rise beyond noise (95% CIs disjoint)" if mb - cb > ma + ca else
               "drop beyond noise (95% CIs disjoint)" if mb + cb < ma - ca else "not beyond noise (95% CIs overlap)")
    kl_max = max(float(r["rlhf/kl_ref"]) for r in rows)
    return (f"reward: iteration {a['step']} {ma:.3f} ± {ca:.3f} -> iteration {b['step']} {mb:.3f} ± {cb:.3f}: "
            f"{verdict}; max KL to the reference {kl_max:.2f} nats per completion")


def main(args: argparse.Namespace) -> int:
    from agents.lm.rlhf import RLHFConfig
    from textgym.registration import resolve_task

    cfg = dataclass_from_args(RLHFConfig, args)
    try:
        cfg.task = resolve_task(cfg.task)  # config.json records the full id
        return run(cfg, resume=bool(getattr(args, "resume", False)))
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
