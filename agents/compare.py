"""``textgym compare``: train several algorithms on one task, each with several seeds and the same flags, and
compare them with confidence intervals.

    textgym compare --task sql --algos ppo,grpo --seeds 3 --iterations 20 --out runs/cmp [any train flag]

Every (algorithm, seed) pair is one ``textgym train`` run in a child process (``python -m agents.cli train
--config OUT/train_config.json --algo A --seed S --out OUT/runs/A-seedS``), one after another, seeds in the
outer loop so that a comparison stopped early has as many seeds of each algorithm. A child isolates memory, and
its peak resident memory comes from :func:`os.wait4`'s ``rusage``; its output goes to ``OUT/runs/A-seedS/log.txt``.
Train flags given to ``compare`` apply to every run: ``OUT/train_config.json`` holds those that differ from
train's defaults (the children read it with ``--config``), ``OUT/compare.json`` the whole resolved config.

Resumable: a pair whose run is complete (its ``metrics.csv`` reaches ``--iterations``, ``final/`` is exported and
its last attempt exited 0) is not run again; a pair that was stopped continues with ``train --resume``. A second
call on the same ``--out`` with other shared flags is refused (``--algos``, ``--seeds``, the evaluation and
threshold flags may change, and ``--iterations`` may grow: the finished runs then continue).

Writes to ``--out``:

- ``curves.csv``: ``algo, seed, iteration, wall_s, score, kl`` (and ``gold_score`` when the runs log a gold
  scorer). ``wall_s`` is the run's training time: the cumulative sum of its ``time/*_s`` columns (rollout,
  forward and update of each iteration), so it leaves out process start, model loading, checkpoints and the
  before/after samples, and it adds up correctly over a resumed run. ``score`` is ``rollout/ep_rew_mean`` (the
  mean score of the iteration's rollout batch), ``kl`` is ``rlhf/kl_ref``;
- ``runs.csv``: one row per run: training seconds, seconds per iteration, the child's peak memory, the final
  score and the held-out evaluation;
- ``compare.png``: mean score across seeds vs iteration and vs wall-clock seconds, with 95% Student-t bands
  (:func:`textgym.stats.mean_ci`); on the wall-clock axis each seed is interpolated onto a common grid;
- ``summary.json`` (see :func:`summarize`): per algorithm the final score, held-out accuracy
  (:mod:`agents.eval`, greedy, ``--eval-n`` prompts), seconds per iteration (mean and 95% CI across seeds) and
  peak memory; the pairwise differences with Welch 95% CIs (:func:`textgym.stats.welch_test`) and a verdict
  only with at least :data:`MIN_SEEDS` seeds per algorithm and a CI that excludes 0; which algorithm's mean
  curve first reached ``--threshold``, in wall-clock seconds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_SEEDS = 3
"""fewer seeds than this per algorithm: the differences and their CIs, but no verdict"""
CONFIDENCE = 0.95
RUN_FIELDS = ("seed", "out", "algo")
"""train fields that compare sets per run"""
PER_RUN_FORBIDDEN = ("task", "iterations", "progress")
"""train fields that --algo-flags may not set: every run of a comparison has them alike"""
FREE_FIELDS = ("progress",)
"""train fields that may differ between two calls on the same --out (they change nothing a run computes)"""
SCORE_KEY = "rollout/ep_rew_mean"
"""the score of curves.csv and the plot: the mean score of an iteration's rollout batch"""
GRID_POINTS = 100
"""points of the common wall-clock grid"""
SIGINT_GRACE_S = 10.0
"""on Ctrl-C, how long a child has to stop on the terminal's own SIGINT before it is sent one"""


def configure(parser: argparse.ArgumentParser) -> None:
    from agents.config import add_config_arg, add_dataclass_args
    from agents.lm.rlhf import RLHFConfig

    parser.add_argument("--algos", default="ppo", help="comma-separated algorithms, as train's --algo takes them "
                                                       "(default: ppo)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per algorithm: 0 .. N-1 (default: 3)")
    parser.add_argument("--out", required=True, help="the comparison's folder: runs/, curves.csv, runs.csv, "
                                                     "compare.png, summary.json")
    parser.add_argument("--eval-n", type=int, default=64,
                        help="held-out prompts for the greedy evaluation of each run's final/ (0: none; default 64)")
    parser.add_argument("--eval-seed", type=int, default=2024, help="seed of the held-out prompts (default: 2024, "
                                                                    "textgym eval's)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="report which algorithm's mean curve of --threshold-metric reached this value first, in "
                             "wall-clock seconds")
    parser.add_argument("--threshold-metric", default=SCORE_KEY,
                        help=f"the metrics.csv column --threshold applies to (default: {SCORE_KEY}; e.g. "
                             "rollout/score_parts/correct, the rollout batch's accuracy on the SQL task)")
    parser.add_argument("--algo-flags", action="append", default=[], metavar="ALGO=FLAGS",
                        help="train flags for one algorithm only, after the shared ones, e.g. "
                             "--algo-flags 'ppo=--gae-lambda 0.9 --ppo.vf-coef 0.2' (repeatable)")
    add_dataclass_args(parser, RLHFConfig, skip=RUN_FIELDS)
    add_config_arg(parser, RLHFConfig)


# -- the runs ------------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What a runner reports of one child: its exit code, peak resident memory (MiB; None if unknown) and seconds."""

    returncode: int
    peak_rss_mib: float | None
    process_s: float


Runner = Callable[[list[str], Path], RunResult]
"""``runner(argv, log_path)`` runs the command ``argv`` with its output appended to ``log_path``"""


def _maxrss_mib(ru_maxrss: int) -> float:
    return ru_maxrss / 2**20 if sys.platform == "darwin" else ru_maxrss / 1024  # bytes on macOS, KiB on Linux


def run_subprocess(argv: list[str], log_path: Path) -> RunResult:
    """Run ``argv`` as a child process, stdout and stderr appended to ``log_path``; its peak RSS is
    ``ru_maxrss`` of :func:`os.wait4`. On Ctrl-C the child (train stops cleanly on SIGINT) is waited for, then
    ``KeyboardInterrupt`` is raised again."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log in the order it was written
    with log_path.open("a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} textgym compare runs: {shlex.join(argv)}\n")
        log.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:  # Ctrl-C reached the child too (same process group): let it stop cleanly
            deadline = time.monotonic() + SIGINT_GRACE_S
            while not (reaped := os.wait4(proc.pid, os.WNOHANG))[0]:
                if time.monotonic() > deadline:  # it did not get the signal (compare alone was interrupted)
                    proc.send_signal(signal.SIGINT)
                    reaped = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
            proc.returncode = os.waitstatus_to_exitcode(reaped[1])
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return RunResult(proc.returncode, _maxrss_mib(usage.ru_maxrss), time.perf_counter() - t0)


def run_name(algo: str, seed: int) -> str:
    return f"{algo}-seed{seed}"


def _read_json(path: Path, default: Any = None) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _write_json(path: Path, data: Any) -> None:
    from agents.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(x: Any) -> Any:
    """``x`` with NaN and inf floats replaced by None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv (none if it is missing or empty)."""
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return []
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def _has_final(run_dir: Path) -> bool:
    final = run_dir / "final"
    return (final / "config.json").exists() and any(final.glob("*.safetensors*"))


def run_status(run_dir: Path, iterations: int) -> str:
    """``"done"`` (metrics.csv reaches ``iterations``, final/ is exported and the last attempt exited 0),
    ``"resume"`` (a run was started: its config.json is there) or ``"new"``."""
    rows = read_rows(run_dir / "metrics.csv")
    last = int(float(rows[-1]["step"])) if rows else 0
    attempts = _read_json(run_dir / "compare_run.json", {"attempts": []})["attempts"]
    if last >= iterations and _has_final(run_dir) and (not attempts or attempts[-1]["returncode"] == 0):
        return "done"
    return "resume" if (run_dir / "config.json").exists() else "new"


def train_argv(out: Path, algo: str, seed: int, resume: bool, extra: tuple[str, ...] = ()) -> list[str]:
    """The child's command: the shared flags from ``OUT/train_config.json``, the algorithm's ``--algo-flags``
    (``extra``), then this run's own."""
    argv = [sys.executable, "-m", "agents.cli", "train", "--config", str(out / "train_config.json"), *extra,
            "--algo", algo, "--seed", str(seed),
            "--out", str(out / "runs" / run_name(algo, seed)), "--progress", "false"]
    return argv + (["--resume"] if resume else [])


def _run_pair(out: Path, algo: str, seed: int, iterations: int, runner: Runner, extra: tuple[str, ...] = ()
              ) -> str:
    """Run (or resume, or skip) one pair; returns its status before the call; raises RuntimeError if it fails."""
    run_dir = out / "runs" / run_name(algo, seed)
    status = run_status(run_dir, iterations)
    if status == "done":
        return status
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = train_argv(out, algo, seed, status == "resume", extra)
    record_path = run_dir / "compare_run.json"
    record = _read_json(record_path, {"attempts": []})
    attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": argv, "iterations": iterations,
               "resume": status == "resume", "returncode": None, "peak_rss_mib": None, "process_s": None}
    record["attempts"].append(attempt)
    _write_json(record_path, record)  # returncode None until it ends: a kill of compare leaves the pair unfinished
    result = runner(argv, run_dir / "log.txt")
    attempt.update(returncode=result.returncode, peak_rss_mib=result.peak_rss_mib, process_s=result.process_s)
    _write_json(record_path, record)
    if result.returncode != 0:
        log = run_dir / "log.txt"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else "(no log)"
        raise RuntimeError(f"{run_name(algo, seed)} failed (exit {result.returncode}); the end of {log}:\n{tail}\n"
                           "Fix it and run the same command again: finished runs are kept, this one resumes.")
    return status


# -- checks before anything runs -----------------------------------------------------------------------------

def parse_algos(spec: str) -> list[str]:
    algos = [a.strip() for a in spec.split(",") if a.strip()]
    if not algos:
        raise ValueError(f"--algos must name at least one algorithm, e.g. ppo,grpo; got {spec!r}")
    dupes = sorted({a for a in algos if algos.count(a) > 1})
    if dupes:
        raise ValueError(f"--algos names {', '.join(dupes)} twice; name each algorithm once")
    return algos


def parse_algo_flags(specs: list[str], algos: list[str]) -> dict[str, list[str]]:
    """``{algo: [flag tokens]}`` from ``--algo-flags ALGO=FLAGS`` (shell-split)."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        algo, sep, flags = spec.partition("=")
        algo = algo.strip()
        if not sep or not algo:
            raise ValueError(f"--algo-flags takes ALGO=FLAGS, e.g. 'ppo=--gae-lambda 0.9'; got {spec!r}")
        if algo not in algos:
            raise ValueError(f"--algo-flags {algo}=...: {algo!r} is not in --algos ({', '.join(algos)})")
        out[algo] = out.get(algo, []) + shlex.split(flags)
    return out


def algo_config(args: argparse.Namespace, tokens: list[str]) -> Any:
    """The train config of one algorithm: the shared flags of ``args``, then its ``tokens`` (train flags)."""
    from agents.config import add_dataclass_args, dataclass_from_args
    from agents.lm.rlhf import RLHFConfig
    from textgym.registration import resolve_task

    ns = argparse.Namespace(**vars(args))
    if tokens:
        p = argparse.ArgumentParser(prog="--algo-flags", add_help=False, exit_on_error=False)
        add_dataclass_args(p, RLHFConfig, skip=RUN_FIELDS + PER_RUN_FORBIDDEN)
        try:
            _, unknown = p.parse_known_args(tokens, namespace=ns)
        except argparse.ArgumentError as e:
            unknown, why = [], str(e)
        else:
            why = f"unknown or not per-algorithm: {' '.join(unknown)}" if unknown else ""
        if why:
            raise ValueError(f"--algo-flags {shlex.join(tokens)!r}: {why}; it takes train flags (not "
                             f"{', '.join('--' + f for f in RUN_FIELDS + PER_RUN_FORBIDDEN)})")
    cfg = dataclass_from_args(RLHFConfig, ns, out=str(Path(args.out) / "runs"), seed=0)
    cfg.task = resolve_task(cfg.task)
    return cfg


def check_algos(cfgs: dict[str, Any]) -> None:
    """Each algorithm's config (``{algo: config}``) passes train's own checks (:func:`agents.lm.rlhf.validate`:
    an unknown algorithm is refused there, with the list; so are a group size it cannot use and critic flags
    given to a critic-free algorithm), before any run starts."""
    from agents.lm.rlhf import validate

    for algo, cfg in cfgs.items():
        try:
            validate(cfg)
        except ValueError as e:
            raise ValueError(f"--algos {algo}: {e}") from None


def shared_config(cfg: Any) -> dict[str, Any]:
    """The resolved train config every run shares (the per-run fields left out)."""
    from agents.lm.rlhf import config_dict

    return {k: v for k, v in config_dict(cfg).items() if k not in RUN_FIELDS}


def _diff_from(d: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``d`` that differ from ``base`` (nested dicts of dataclass fields compared inside)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and set(v) <= set(base[k]):
            sub = _diff_from(v, base[k])
            if sub:
                out[k] = sub
        elif base.get(k) != v:
            out[k] = v
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two shared configs, ``--iterations`` and :data:`FREE_FIELDS` aside."""
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys
            if k not in (*FREE_FIELDS, "iterations") and saved.get(k) != now.get(k)]


def prepare_out(out: Path, shared: dict[str, Any], given: dict[str, Any], algos: list[str], seeds: int,
                algo_flags: dict[str, list[str]]) -> None:
    """Refuse an ``--out`` that holds something else or another comparison (other shared flags, other
    ``--algo-flags`` for an algorithm it has run); then record this one."""
    saved = _read_json(out / "compare.json")
    if saved is None and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no compare.json: it is not a textgym compare folder; "
                         "choose another --out")
    if saved is not None:
        changes = config_changes(saved["config"], shared)
        if changes:
            raise ValueError(f"{out} holds a comparison with other shared flags ({'; '.join(changes)}). Pass the same "
                             "train flags as that comparison (--algos, --seeds, --eval-n, --eval-seed, --threshold, "
                             "--threshold-metric and --progress may change, --iterations may grow, and a new "
                             "algorithm may get --algo-flags), or choose another --out")
        if shared["iterations"] < saved["config"]["iterations"]:
            raise ValueError(f"{out} holds a comparison of {saved['config']['iterations']} iterations; --iterations "
                             f"{shared['iterations']} cannot shorten its runs: pass >= "
                             f"{saved['config']['iterations']} or another --out")
        for algo in sorted(set(algos) & set(saved["algos"])):
            before, now = saved["algo_flags"].get(algo, []), algo_flags.get(algo, [])
            if before != now:
                raise ValueError(f"{out} ran {algo} with --algo-flags {shlex.join(before)!r}, not "
                                 f"{shlex.join(now)!r}; pass the same, or another --out")
        algos = [*saved["algos"], *(a for a in algos if a not in saved["algos"])]  # every algorithm it has run
        algo_flags = {**saved["algo_flags"], **algo_flags}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "train_config.json", given)  # what the children read with --config
    _write_json(out / "compare.json", {"format": 1, "algos": algos, "seeds": seeds, "config": shared,
                                       "train_flags": given, "algo_flags": algo_flags,
            "command": "textgym compare " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["compare"] else None})


# -- curves and statistics (pure functions; tests check them by hand) ------------------------------------------

def run_curve(rows: list[dict[str, str]], iterations: int, metric: str = SCORE_KEY) -> dict[str, np.ndarray]:
    """``iteration, wall_s, score, kl`` (and ``gold_score``) arrays of one run's metrics rows up to
    ``iterations``, and ``metric`` (the threshold's column: the score by default) as ``"threshold_metric"``;
    ``wall_s`` is the cumulative sum of the ``time/*_s`` columns."""
    rows = [r for r in rows if int(float(r["step"])) <= iterations]
    if rows and metric not in rows[0]:
        raise ValueError(f"--threshold-metric {metric!r} is not a column of the runs' metrics.csv; it has "
                         f"{', '.join(sorted(rows[0]))}")
    time_cols = [c for c in (rows[0] if rows else {}) if c.startswith("time/") and c.endswith("_s")]

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows], dtype=float)

    curve = {"iteration": col("step").astype(int), "wall_s": np.cumsum(sum((col(c) for c in time_cols),
                                                                            np.zeros(len(rows)))),
             "score": col(SCORE_KEY), "kl": col("rlhf/kl_ref")}
    if rows and "rlhf/gold_score_mean" in rows[0]:
        curve["gold_score"] = col("rlhf/gold_score_mean")
    curve["threshold_metric"] = col(metric)
    return curve


def band(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise ``(mean, half-width)`` of a ``(seeds, points)`` array: the Student-t CI of the mean across
    seeds (:func:`textgym.stats.mean_ci`); NaN values are left out; NaN half-width with fewer than 2 values."""
    from textgym.stats import mean_ci

    values = np.atleast_2d(values)
    stats = [mean_ci(c[~np.isnan(c)], confidence) for c in values.T]
    return np.array([s[0] for s in stats]), np.array([s[1] for s in stats])


def wall_grid(walls: list[np.ndarray], points: int = GRID_POINTS) -> np.ndarray:
    """The common wall-clock grid of several seeds: from the latest first point to the earliest last point, so
    that every seed covers every grid point (no extrapolation, and no mean over the seeds that happen to last
    longest). Empty when the seeds' ranges do not overlap (one seed's first iteration ended after another seed's
    last): there is then no mean curve on the wall-clock axis."""
    lo, hi = max(float(w[0]) for w in walls), min(float(w[-1]) for w in walls)
    if lo > hi:
        return np.array([])
    return np.linspace(lo, hi, points) if hi > lo else np.array([lo])


def on_grid(wall: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``y(wall)`` interpolated linearly at ``grid`` (NaN outside the seed's range)."""
    return np.interp(grid, wall, y, left=np.nan, right=np.nan)


def first_reach(x: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    """The first ``x`` at which ``y >= threshold`` (None if never)."""
    hit = np.flatnonzero(np.asarray(y) >= threshold)
    return float(x[hit[0]]) if hit.size else None


def _int(x: float | None) -> int | None:
    return None if x is None else int(x)


def _stat(values: list[float | None], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``{"mean", "ci95": [low, high], "n", "per_seed"}`` across seeds (missing values left out)."""
    from textgym.stats import mean_ci

    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    m, h = mean_ci(x, confidence)
    return {"mean": m, "ci95": [m - h, m + h] if math.isfinite(h) else None, "n": int(x.size), "per_seed": values}


def difference(a: str, b: str, xa: list[float], xb: list[float], higher_is_better: bool = True,
               min_seeds: int = MIN_SEEDS, better: str = "better") -> dict[str, Any]:
    """``mean(a) - mean(b)`` with the Welch 95% CI (:func:`textgym.stats.welch_test`) and the verdict: ``"A better
    than B"`` only with ``min_seeds`` or more seeds on each side and a CI that excludes 0; otherwise
    ``"inconclusive: N seeds"`` (too few seeds) or ``"inconclusive: the 95% CI of the difference includes 0"``."""
    from textgym.stats import welch_test

    xa = [v for v in xa if v is not None and math.isfinite(v)]
    xb = [v for v in xb if v is not None and math.isfinite(v)]
    n = min(len(xa), len(xb))
    out: dict[str, Any] = {"a": a, "b": b, "n": {a: len(xa), b: len(xb)}, "difference": None, "ci95": None,
                           "welch_p": None}
    if n == 0:
        out["verdict"] = "inconclusive: 0 seeds"
        return out
    out["difference"] = float(np.mean(xa) - np.mean(xb))
    if n >= 2:
        w = welch_test(xa, xb, CONFIDENCE)
        out.update(ci95=list(w.ci), welch_p=w.p_value)
    if n < min_seeds:
        out["verdict"] = f"inconclusive: {n} seed{'s' if n != 1 else ''}"
    elif out["ci95"][0] <= 0 <= out["ci95"][1]:
        out["verdict"] = "inconclusive: the 95% CI of the difference includes 0"
    else:
        a_wins = (out["difference"] > 0) == higher_is_better
        out["verdict"] = f"{a if a_wins else b} {better} than {b if a_wins else a}"
    return out


# -- held-out evaluation -------------------------------------------------------------------------------------

def heldout_eval(run_dir: Path, cfg: dict[str, Any], n: int, seed: int, prompts: list[Any] | None = None
                 ) -> dict[str, Any]:
    """:func:`agents.eval.evaluate_model` on the run's final/: ``n`` held-out prompts, greedy, the task's scorer,
    the run's tokenizer and completion budget. Cached in ``run_dir/heldout_eval.json`` (recomputed when the
    prompts or the exported weights change)."""
    final = run_dir / "final"
    weights = sorted(final.glob("*.safetensors*"))
    key = {"n": n, "seed": seed, "task": cfg["task"], "max_new_tokens": cfg["max_new_tokens"],
           "tokenizer": cfg["tokenizer"], "prompt_kwargs": _eval_prompt_kwargs(cfg),
           "weights_mtime_ns": [w.stat().st_mtime_ns for w in weights]}
    cache = _read_json(run_dir / "heldout_eval.json")
    if cache is not None and cache.get("key") == key:
        return cache["result"]
    import torch

    from agents.device import resolve_device
    from agents.eval import evaluate_model, held_out_prompts

    if prompts is None:
        prompts = held_out_prompts(cfg["task"], n, seed, _eval_prompt_kwargs(cfg))
    if cfg.get("num_threads") is not None:
        torch.set_num_threads(cfg["num_threads"])
    args = argparse.Namespace(task=cfg["task"], seed=seed, batch_size=min(32, n), max_new_tokens=cfg["max_new_tokens"],
                              temperature=1.0, tokenizer=cfg["tokenizer"], success_part="correct", gold_scorer=None,
                              k=0, all_examples=False, train_seed=None)
    result = evaluate_model(str(run_dir), args, prompts, None, resolve_device(cfg["device"]), _eval_prompt_kwargs(cfg))
    _write_json(run_dir / "heldout_eval.json", {"key": key, "result": result})
    return _finite(result)


def _eval_prompt_kwargs(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The training prompt generator's arguments, for held-out prompts of the same kinds (a curriculum's stages
    are not one distribution: then the task's own)."""
    kw = cfg.get("prompt_kwargs")
    return None if kw is None or "curriculum" in kw else kw


# -- outputs -------------------------------------------------------------------------------------------------

def summarize(curves: dict[str, dict[int, dict[str, np.ndarray]]], records: dict[str, dict[int, dict[str, Any]]],
              evals: dict[str, dict[int, dict[str, Any] | None]], threshold: float | None,
              meta: dict[str, Any], threshold_metric: str = SCORE_KEY) -> dict[str, Any]:
    """``summary.json``: per algorithm, the final score (last iteration's ``rollout/ep_rew_mean``), final KL,
    held-out eval score and accuracy, seconds per iteration (training seconds / iterations), the child process's
    whole seconds (start, loading, checkpoints and samples included; summed over attempts), peak RSS, each as mean
    and 95% CI across seeds with the per-seed values; for each pair of algorithms the differences of final
    score, held-out accuracy (or eval score, when the scorer gives no ``correct`` part) and seconds per
    iteration (:func:`difference`); with ``threshold``, the wall-clock second at which each algorithm's mean
    curve of ``threshold_metric`` (on :func:`wall_grid`) first reached it, and which was first."""
    algos = list(curves)
    out: dict[str, Any] = {**meta, "min_seeds_for_verdict": MIN_SEEDS, "confidence": CONFIDENCE,
                           "wall_clock": "training seconds: the cumulative sum of each run's time/*_s columns "
                                         "(rollout, forward, update); process start, model loading, checkpoints and "
                                         "samples are left out", "algorithms": {}, "comparisons": []}
    per_algo: dict[str, dict[str, list[float | None]]] = {}
    for algo in algos:
        seeds = sorted(curves[algo])
        c = [curves[algo][s] for s in seeds]
        ev = [evals[algo].get(s) for s in seeds]
        acc = [(e or {}).get("greedy_accuracy", {}).get("all", {}).get("mean") for e in ev]
        v = {"final_score": [float(x["score"][-1]) for x in c], "final_kl": [float(x["kl"][-1]) for x in c],
             "eval_score": [e["score"]["mean"] if e else None for e in ev], "eval_accuracy": acc,
             "s_per_iteration": [float(x["wall_s"][-1]) / len(x["wall_s"]) for x in c],
             "train_s": [float(x["wall_s"][-1]) for x in c],
             "process_s": [records[algo][s].get("process_s") for s in seeds],
             "peak_rss_mib": [records[algo][s].get("peak_rss_mib") for s in seeds]}
        per_algo[algo] = v
        a = {"seeds": seeds, **{k: _stat(vals) for k, vals in v.items() if k != "peak_rss_mib"}}
        rss = [r for r in v["peak_rss_mib"] if r is not None]
        a["peak_rss_mib"] = {"max": max(rss) if rss else None, "mean": float(np.mean(rss)) if rss else None,
                             "per_seed": v["peak_rss_mib"], "what": "peak resident memory of the train process "
                                                                   "(ru_maxrss; the largest over its attempts)"}
        if threshold is not None:  # run_curve put the threshold's column in "threshold_metric"
            grid = wall_grid([x["wall_s"] for x in c])
            ys = [x["threshold_metric"] for x in c]
            mean = band(np.array([on_grid(x["wall_s"], y, grid) for x, y in zip(c, ys)]))[0] if grid.size else grid
            it_mean, _ = band(np.array(ys))
            a["threshold"] = {"mean_curve_s": first_reach(grid, mean, threshold),
                              "mean_curve_iteration": _int(first_reach(c[0]["iteration"], it_mean, threshold)),
                              "per_seed_s": [first_reach(x["wall_s"], y, threshold) for x, y in zip(c, ys)]}
        out["algorithms"][algo] = a
    if threshold is not None:
        reached = {a: out["algorithms"][a]["threshold"]["mean_curve_s"] for a in algos}
        hits = {a: t for a, t in reached.items() if t is not None}
        out["threshold"] = {"value": threshold, "metric": threshold_metric,
                            "first": min(hits, key=hits.get) if hits else None,
                            "how": "the first wall-clock second at which the algorithm's mean of the metric across "
                                   "seeds (on the common wall-clock grid of compare.png) is >= the value"}
    has_acc = all(any(x is not None for x in per_algo[a]["eval_accuracy"]) for a in algos)
    for i, a in enumerate(algos):
        for b in algos[i + 1:]:
            pa, pb = per_algo[a], per_algo[b]
            comp = {"final_score": difference(a, b, pa["final_score"], pb["final_score"])}
            ek = "eval_accuracy" if has_acc else "eval_score"
            if any(x is not None for x in pa[ek] + pb[ek]):
                comp[ek] = difference(a, b, pa[ek], pb[ek])
            comp["s_per_iteration"] = difference(a, b, pa["s_per_iteration"], pb["s_per_iteration"],
                                                 higher_is_better=False, better="faster")
            out["comparisons"].append({"a": a, "b": b, **comp})
    return out


def write_curves_csv(path: Path, curves: dict[str, dict[int, dict[str, np.ndarray]]]) -> None:
    gold = any("gold_score" in c for by_seed in curves.values() for c in by_seed.values())
    cols = ["algo", "seed", "iteration", "wall_s", "score", "kl", *(["gold_score"] if gold else [])]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for algo, by_seed in curves.items():
        for seed in sorted(by_seed):
            c = by_seed[seed]
            for j in range(len(c["iteration"])):
                w.writerow([algo, seed, int(c["iteration"][j]), *(f"{c[k][j]:.6g}" if k in c else ""
                                                                   for k in cols[3:])])
    from agents.atomic import atomic_write_text

    atomic_write_text(path, buf.getvalue())


def write_runs_csv(path: Path, summary: dict[str, Any]) -> None:
    keys = ["train_s", "s_per_iteration", "process_s", "peak_rss_mib", "final_score", "final_kl", "eval_score",
            "eval_accuracy"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["algo", "seed", *keys])
    for algo, a in summary["algorithms"].items():
        for j, seed in enumerate(a["seeds"]):
            vals = [a[k]["per_seed"][j] for k in keys]
            w.writerow([algo, seed, *("" if v is None else f"{v:.6g}" for v in vals)])
    from agents.atomic import atomic_write_text

    atomic_write_text(path, buf.getvalue())


def plot(curves: dict[str, dict[int, dict[str, np.ndarray]]], out_png: Path, title: str,
         threshold: float | None = None) -> Path:
    """Mean score across seeds with 95% bands: vs iteration (left) and vs wall-clock training seconds (right: on
    :func:`wall_grid`, with each seed's own curve drawn thin)."""
    from textgym._optional import require

    matplotlib = require("matplotlib", "the comparison plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_it, ax_s) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for algo, by_seed in curves.items():
        c = [by_seed[s] for s in sorted(by_seed)]
        n = min(len(x["score"]) for x in c)
        it = c[0]["iteration"][:n]
        mean, half = band(np.array([x["score"][:n] for x in c]))
        line, = ax_it.plot(it, mean, marker="." if n < 20 else None, label=f"{algo} ({len(c)} seeds)")
        ax_it.fill_between(it, mean - np.nan_to_num(half), mean + np.nan_to_num(half), alpha=0.25,
                           color=line.get_color())
        for x in c:  # each seed, thin: how far each one ran
            ax_s.plot(x["wall_s"], x["score"], color=line.get_color(), lw=0.6, alpha=0.35)
        grid = wall_grid([x["wall_s"] for x in c])
        if grid.size:
            mean, half = band(np.array([on_grid(x["wall_s"], x["score"], grid) for x in c]))
            ax_s.plot(grid, mean, color=line.get_color(), marker="." if grid.size == 1 else None)
            ax_s.fill_between(grid, mean - np.nan_to_num(half), mean + np.nan_to_num(half), alpha=0.25,
                              color=line.get_color())
    for ax in (ax_it, ax_s):
        if threshold is not None:
            ax.axhline(threshold, color="gray", ls=":", lw=1)
        ax.grid(alpha=0.3)
    ax_it.set_xlabel("iteration")
    ax_it.set_ylabel("score (rollout/ep_rew_mean)")
    ax_s.set_xlabel("training seconds (sum of time/*_s)")
    ax_it.legend(fontsize=8)
    fig.suptitle(f"{title}: mean across seeds, 95% CI bands", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


def _fmt(s: dict[str, Any], digits: int = 3) -> str:
    if s["mean"] is None or not math.isfinite(s["mean"]):
        return "n/a"
    ci = s["ci95"]
    return f"{s['mean']:.{digits}f}" + (f" ({ci[0]:.{digits}f}, {ci[1]:.{digits}f})" if ci else "")


def format_summary(summary: dict[str, Any]) -> str:
    """The table ``compare`` prints at the end, and the pairwise differences with their verdicts."""
    acc = any(a["eval_accuracy"]["n"] for a in summary["algorithms"].values())
    ev = "held-out accuracy" if acc else "held-out score"
    rows = [f"| algorithm | seeds | final score (95% CI) | {ev} (95% CI) | s / iteration (95% CI) | peak RSS MiB |"
            + (" threshold s |" if "threshold" in summary else ""),
            "|---|---|---|---|---|---|" + ("---|" if "threshold" in summary else "")]
    for algo, a in summary["algorithms"].items():
        rss = a["peak_rss_mib"]["max"]
        row = (f"| {algo} | {len(a['seeds'])} | {_fmt(a['final_score'])} | "
               f"{_fmt(a['eval_accuracy' if acc else 'eval_score'])} | {_fmt(a['s_per_iteration'], 2)} | "
               f"{'n/a' if rss is None else f'{rss:.0f}'} |")
        if "threshold" in summary:
            t = a["threshold"]["mean_curve_s"]
            row += f" {'never' if t is None else f'{t:.1f}'} |"
        rows.append(row)
    for c in summary["comparisons"]:
        for metric, d in c.items():
            if metric in ("a", "b"):
                continue
            diff = "n/a" if d["difference"] is None else f"{d['difference']:+.3f}"
            ci = f", 95% CI ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})" if d["ci95"] else ""
            rows.append(f"{c['a']} - {c['b']} {metric}: {diff}{ci}: {d['verdict']}")
    if "threshold" in summary:
        t = summary["threshold"]
        rows.append(f"first to reach {t['metric']} >= {t['value']:g} (mean curve, wall-clock): {t['first'] or 'none'}")
    rows.append(f"(a verdict needs >= {summary['min_seeds_for_verdict']} seeds per algorithm and a 95% CI that "
                "excludes 0)")
    return "\n".join(rows)


# -- the command ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, runner: Runner = run_subprocess) -> dict[str, Any]:
    """Check everything, run the missing pairs with ``runner``, then write the outputs; returns the summary."""
    from agents.lm.rlhf import RLHFConfig, config_dict
    from textgym._optional import require

    algos = parse_algos(args.algos)
    if isinstance(args.seeds, bool) or args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if args.eval_n < 0:
        raise ValueError(f"--eval-n must be >= 0 (0: no held-out evaluation), got {args.eval_n}")
    out = Path(args.out)
    algo_flags = parse_algo_flags(args.algo_flags, algos)
    cfg = algo_config(args, [])  # the shared config
    if cfg.iterations < 1:
        raise ValueError(f"--iterations must be at least 1 for a comparison, got {cfg.iterations}")
    cfgs = {a: dataclasses.replace(algo_config(args, algo_flags.get(a, [])), algo=a) for a in algos}
    check_algos(cfgs)
    shared = shared_config(cfg)
    defaults = shared_config(RLHFConfig())
    given = {k: v for k, v in _diff_from(shared, defaults).items() if k not in FREE_FIELDS}
    given.update(task=cfg.task, iterations=cfg.iterations)  # always written: the file says what was compared
    prepare_out(out, shared, given, algos, args.seeds, algo_flags)

    tqdm = require("tqdm", "the progress bar").tqdm
    pairs = [(a, s) for s in range(args.seeds) for a in algos]  # seeds outer: a stopped comparison stays balanced
    bar = tqdm(pairs, desc="compare", unit="run", disable=not cfg.progress, file=sys.stderr)
    for algo, seed in bar:
        bar.set_postfix_str(run_name(algo, seed))
        status = _run_pair(out, algo, seed, cfg.iterations, runner, tuple(algo_flags.get(algo, [])))
        bar.write(f"{run_name(algo, seed)}: " + {"done": "finished before, kept", "resume": "resumed",
                                                  "new": "trained"}[status], file=sys.stderr)
    bar.close()

    curves: dict[str, dict[int, dict[str, np.ndarray]]] = {a: {} for a in algos}
    records: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in algos}
    evals: dict[str, dict[int, dict[str, Any] | None]] = {a: {} for a in algos}
    prompts = None
    for algo, seed in pairs:
        run_dir = out / "runs" / run_name(algo, seed)
        run_cfg = {**config_dict(cfgs[algo]), **_read_json(run_dir / "config.json", {})}  # what the run used
        curves[algo][seed] = run_curve(read_rows(run_dir / "metrics.csv"), cfg.iterations, args.threshold_metric)
        attempts = _read_json(run_dir / "compare_run.json", {"attempts": []})["attempts"]
        rss = [a["peak_rss_mib"] for a in attempts if a.get("peak_rss_mib") is not None]
        secs = [a["process_s"] for a in attempts if a.get("process_s") is not None]
        records[algo][seed] = {"peak_rss_mib": max(rss) if rss else None, "process_s": sum(secs) if secs else None}
        if args.eval_n > 0:
            if prompts is None:
                from agents.eval import held_out_prompts

                prompts = held_out_prompts(cfg.task, args.eval_n, args.eval_seed, _eval_prompt_kwargs(run_cfg))
            evals[algo][seed] = heldout_eval(run_dir, run_cfg, args.eval_n, args.eval_seed, prompts)
        else:
            evals[algo][seed] = None
    meta = {"task": cfg.task, "iterations": cfg.iterations, "algos": algos, "seeds": list(range(args.seeds)),
            "eval": ({"n": args.eval_n, "seed": args.eval_seed, "greedy": True, "scorer": "the task's",
                      "success_part": "correct", "via": "agents.eval.evaluate_model on each run's final/"}
                     if args.eval_n > 0 else None),
            "train_flags": given, "algo_flags": algo_flags,
            "command": "textgym compare " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["compare"] else None}
    summary = _finite(summarize(curves, records, evals, args.threshold, meta, args.threshold_metric))
    write_curves_csv(out / "curves.csv", curves)
    write_runs_csv(out / "runs.csv", summary)
    plot(curves, out / "compare.png", f"{cfg.task}, {cfg.iterations} iterations",
         args.threshold if args.threshold_metric == SCORE_KEY else None)  # the line only on the score's axis
    _write_json(out / "summary.json", summary)
    return summary


def main(args: argparse.Namespace) -> int:
    try:
        summary = run(args)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a run failed
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    out = Path(args.out)
    print(f"wrote {out / 'curves.csv'}, runs.csv, compare.png, summary.json; runs in {out / 'runs'}", file=sys.stderr)
    return 0
