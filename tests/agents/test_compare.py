"""``textgym compare`` (agents/compare.py): the band, grid and difference maths by hand on synthetic curves; the
pair loop with an injected runner (what runs, what is skipped, what resumes, what is refused); the child runner's
peak memory; and the whole command on a tiny GPT-2 with two algorithms x two seeds x two iterations."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

from agents import compare  # noqa: E402
from agents.cli import build_parser  # noqa: E402
from agents.cli import main as cli  # noqa: E402
from agents.config import dataclass_from_args  # noqa: E402
from agents.lm.rlhf import RLHFConfig  # noqa: E402

T_975_DF1 = 12.706204736174698  # scipy.stats.t.ppf(0.975, 1)
T_975_DF4 = 2.7764451051977987  # scipy.stats.t.ppf(0.975, 4)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the maths, by hand ----------------------------------------------------------------------------------------

def test_wall_grid_interpolation_and_band_by_hand():
    walls = [np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0])]
    scores = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0])]
    grid = compare.wall_grid(walls, points=3)
    assert grid.tolist() == [2.0, 2.5, 3.0]  # the range both seeds cover: latest start, earliest end
    values = np.array([compare.on_grid(w, s, grid) for w, s in zip(walls, scores)])
    assert values.tolist() == [[1.0, 1.5, 2.0], [0.0, 0.5, 1.0]]  # linear interpolation
    mean, half = compare.band(values)
    assert mean.tolist() == [0.5, 1.0, 1.5]
    # two values a and a+1: sd = 1/sqrt(2), sem = 1/2, half-width = t(0.975, df=1) / 2
    assert half == pytest.approx([T_975_DF1 / 2] * 3)
    assert np.isnan(compare.on_grid(walls[1], scores[1], np.array([1.0]))).all()  # before a seed starts: no value
    # seeds whose ranges do not overlap have no common grid, so no mean curve (a mean over whichever seeds
    # cover a point would follow the slowest seed alone)
    assert compare.wall_grid([np.array([0.0, 1.0]), np.array([2.0, 3.0])]).size == 0
    assert compare.wall_grid([np.array([0.0, 2.0]), np.array([2.0, 3.0])]).tolist() == [2.0]
    _, half = compare.band(np.array([[1.0, 2.0]]))  # one seed: the mean, no band
    assert np.isnan(half).all()


def test_difference_and_verdict_by_hand():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    d = compare.difference("x", "y", a, b)
    # Welch: se = sqrt(1/3 + 1/3), df = 4 (equal variances and sizes), CI = -3 +- t(0.975, 4) * se
    se = math.sqrt(2 / 3)
    assert d["difference"] == pytest.approx(-3.0)
    assert d["ci95"] == pytest.approx([-3 - T_975_DF4 * se, -3 + T_975_DF4 * se])
    assert d["verdict"] == "y better than x" and d["n"] == {"x": 3, "y": 3}
    assert compare.difference("x", "y", a, b, higher_is_better=False, better="faster")["verdict"] == "x faster than y"
    close = compare.difference("x", "y", a, [1.5, 2.5, 3.5])
    assert close["ci95"][0] < 0 < close["ci95"][1]
    assert close["verdict"] == "inconclusive: the 95% CI of the difference includes 0"
    two = compare.difference("x", "y", a[:2], [11.0, 12.0])  # the CI is given, the verdict is not: too few seeds
    assert two["ci95"] is not None and two["ci95"][1] < 0 and two["verdict"] == "inconclusive: 2 seeds"
    one = compare.difference("x", "y", [1.0], [2.0])
    assert one["difference"] == -1.0 and one["ci95"] is None and one["verdict"] == "inconclusive: 1 seed"


def test_run_curve_sums_the_time_columns():
    rows = [{"step": str(i), "rollout/ep_rew_mean": str(0.1 * i), "rlhf/kl_ref": "0.5", "time/rollout_s": "1.0",
             "time/update_s": "0.5", "time/fps": "1000"} for i in (1, 2, 3)]
    c = compare.run_curve(rows, iterations=2)  # rows past --iterations are left out
    assert c["iteration"].tolist() == [1, 2]
    assert c["wall_s"].tolist() == [1.5, 3.0]  # cumulative rollout + update seconds; time/fps is not a time
    assert c["score"] == pytest.approx([0.1, 0.2]) and "gold_score" not in c
    assert compare.first_reach(c["wall_s"], c["score"], 0.15) == 3.0
    assert compare.first_reach(c["wall_s"], c["score"], 0.5) is None


# -- the pair loop, with an injected runner ------------------------------------------------------------------

def parse(argv):
    return build_parser(only="compare").parse_args(["compare", *argv])


class FakeRunner:
    """Writes what a finished train run leaves (config.json, metrics.csv, final/) with synthetic scores:
    ``score = offset[algo] + 0.1 * iteration + 0.01 * seed``, 1 s per iteration for ppo, 0.5 s otherwise; records
    each command. ``fail`` = a run name: that run is cut after its first iteration and exits 137 (a kill);
    ``interrupt`` = a run name: that run writes all its files, then compare gets Ctrl-C before it returns."""

    def __init__(self, fail=None, offset=None, num_envs=4, interrupt=None):
        self.calls, self.fail, self.offset, self.num_envs = [], fail, offset or {}, num_envs
        self.interrupt = interrupt

    def __call__(self, argv, log_path):
        self.calls.append(argv)
        cfg = build_parser(only="train").parse_args(argv[3:])
        run_dir = log_path.parent
        given = json.loads((run_dir.parent.parent / "train_config.json").read_text())
        algo = run_dir.name.rsplit("-seed", 1)[0]
        seed = int(argv[argv.index("--seed") + 1])
        killed = run_dir.name == self.fail
        n = 1 if killed else given["iterations"]
        (run_dir / "config.json").write_text(json.dumps({**given, "seed": seed}))
        with (run_dir / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "rollout/ep_rew_mean", "rlhf/kl_ref", "time/rollout_s", "time/fps",
                        "rollout/score_parts/correct"])
            for i in range(1, n + 1):
                w.writerow([i, self.offset.get(algo, 0.0) + 0.1 * i + 0.01 * seed, 0.01 * i,
                            1.0 if algo == "ppo" else 0.5, 9, 0.25 * i])
        if not killed:
            (run_dir / "final").mkdir(exist_ok=True)
            (run_dir / "final" / "config.json").write_text("{}")
            (run_dir / "final" / "model.safetensors").write_text("")
        log_path.write_text(f"fake run of {run_dir.name}; resume={'--resume' in argv}\n")
        assert cfg.config["num_envs"] == self.num_envs  # the shared flags reach every run through --config
        if run_dir.name == self.interrupt:
            raise KeyboardInterrupt
        return compare.RunResult(137 if killed else 0, 100.0 + seed, 0.1)


def fake_argv(out, *extra, algos="ppo,grpo", seeds=2, iterations=2):
    return ["--task", "sql", "--algos", algos, "--seeds", str(seeds), "--iterations", str(iterations), "--num-envs",
            "4", "--group-size", "2", "--ppo.minibatch-size", "4", "--out", str(out), "--eval-n", "0", "--progress",
            "false", *extra]


def ran(runner):
    return [(a[a.index("--out") + 1].rsplit("/", 1)[1], "--resume" in a) for a in runner.calls]


def test_pairs_run_once_then_are_kept_and_a_killed_pair_resumes(tmp_path):
    out = tmp_path / "cmp"
    runner = FakeRunner(fail="ppo-seed1")
    with pytest.raises(RuntimeError, match=r"ppo-seed1 failed \(exit 137\)[\s\S]*fake run of ppo-seed1"):
        compare.run(parse(fake_argv(out)), runner=runner)
    assert ran(runner) == [("ppo-seed0", False), ("grpo-seed0", False), ("ppo-seed1", False)]  # stops there
    runner = FakeRunner()
    summary = compare.run(parse(fake_argv(out)), runner=runner)
    assert ran(runner) == [("ppo-seed1", True), ("grpo-seed1", False)]  # the killed pair continues with --resume
    runner = FakeRunner()
    again = compare.run(parse(fake_argv(out)), runner=runner)
    assert runner.calls == [] and again == summary  # nothing runs the second time, the same summary
    runner = FakeRunner(interrupt="grpo-seed0")  # Ctrl-C: compare never saw the run end, whatever its files say
    with pytest.raises(KeyboardInterrupt):
        compare.run(parse(fake_argv(out, iterations=3)), runner=runner)  # more iterations: every run continues
    assert ran(runner) == [("ppo-seed0", True), ("grpo-seed0", True)]
    runner = FakeRunner()
    compare.run(parse(fake_argv(out, iterations=3)), runner=runner)
    assert ran(runner) == [("grpo-seed0", True), ("ppo-seed1", True), ("grpo-seed1", True)]
    record = json.loads((out / "runs" / "ppo-seed1" / "compare_run.json").read_text())
    assert [a["returncode"] for a in record["attempts"]] == [137, 0, 0]
    record = json.loads((out / "runs" / "grpo-seed0" / "compare_run.json").read_text())
    assert [a["returncode"] for a in record["attempts"]] == [0, None, 0]


def test_summary_curves_and_verdicts_from_synthetic_runs(tmp_path):
    out = tmp_path / "cmp"
    runner = FakeRunner(offset={"grpo": 1.0})
    summary = compare.run(parse(fake_argv(out, "--threshold", "1.2")), runner=runner)
    rows = read_csv(out / "curves.csv")
    assert [(r["algo"], r["seed"], r["iteration"]) for r in rows] == [
        (a, s, i) for a in ("ppo", "grpo") for s in "01" for i in "12"]
    grpo1 = [r for r in rows if r["algo"] == "grpo" and r["seed"] == "1"]
    assert [float(r["wall_s"]) for r in grpo1] == [0.5, 1.0] and float(grpo1[1]["score"]) == pytest.approx(1.21)
    ppo, grpo = summary["algorithms"]["ppo"], summary["algorithms"]["grpo"]
    assert ppo["final_score"]["per_seed"] == pytest.approx([0.2, 0.21])
    assert ppo["final_score"]["mean"] == pytest.approx(0.205)
    half = T_975_DF1 * 0.01 / math.sqrt(2) / math.sqrt(2)  # sd of (0.2, 0.21) is 0.01/sqrt(2); sem = sd / sqrt(2)
    assert ppo["final_score"]["ci95"] == pytest.approx([0.205 - half, 0.205 + half])
    assert ppo["s_per_iteration"]["mean"] == 1.0 and grpo["s_per_iteration"]["mean"] == 0.5
    assert ppo["peak_rss_mib"]["per_seed"] == [100.0, 101.0] and ppo["peak_rss_mib"]["max"] == 101.0
    (c,) = summary["comparisons"]
    assert (c["a"], c["b"]) == ("ppo", "grpo") and "eval_score" not in c  # --eval-n 0: no held-out figures
    assert c["final_score"]["difference"] == pytest.approx(-1.0)
    assert c["final_score"]["verdict"] == "inconclusive: 2 seeds"  # the CI excludes 0, but 2 seeds give no verdict
    assert c["final_score"]["ci95"][1] < 0
    # the threshold: grpo's mean curve goes linearly from 1.105 at 0.5 s to 1.205 at 1 s, so it crosses 1.2 at
    # 0.975 s: the first point of the 100-point grid over [0.5, 1] at or after that; ppo never gets there
    assert 0.975 <= grpo["threshold"]["mean_curve_s"] <= 0.975 + 0.5 / 99
    assert ppo["threshold"]["mean_curve_s"] is None
    assert summary["threshold"]["first"] == "grpo"
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    runs = read_csv(out / "runs.csv")
    assert [(r["algo"], r["seed"], r["peak_rss_mib"], r["process_s"]) for r in runs] == [
        (a, s, rss, "0.1") for a in ("ppo", "grpo") for s, rss in (("0", "100"), ("1", "101"))]
    table = compare.format_summary(summary)
    assert "| grpo | 2 | 1.205" in table and "ppo - grpo final_score: -1.000" in table
    assert "first to reach rollout/ep_rew_mean >= 1.2 (mean curve, wall-clock): grpo" in table
    # another column: every algorithm's "correct" is 0.25 per iteration, reached 0.5 at iteration 2: ppo at 2 s,
    # grpo at 1 s (the same call on the same --out: nothing runs again)
    argv = fake_argv(out, "--threshold", "0.5", "--threshold-metric", "rollout/score_parts/correct")
    again = compare.run(parse(argv), runner=runner)
    assert [again["algorithms"][a]["threshold"]["mean_curve_s"] for a in ("ppo", "grpo")] == [2.0, 1.0]
    assert again["algorithms"]["ppo"]["threshold"]["mean_curve_iteration"] == 2
    assert again["threshold"]["first"] == "grpo" and again["threshold"]["metric"] == "rollout/score_parts/correct"
    with pytest.raises(ValueError, match="--threshold-metric 'nope' is not a column"):
        compare.run(parse(fake_argv(out, "--threshold", "0.5", "--threshold-metric", "nope")), runner=runner)
    assert len(runner.calls) == 4
    # three seeds, and the CI of the difference excludes 0: a verdict
    three = compare.run(parse(fake_argv(tmp_path / "three", seeds=3)), runner=FakeRunner(offset={"grpo": 1.0}))
    assert three["comparisons"][0]["final_score"]["verdict"] == "grpo better than ppo"
    assert three["comparisons"][0]["s_per_iteration"]["verdict"] == "grpo faster than ppo"


def test_algo_flags_reach_only_their_algorithm_and_cannot_change(tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(ValueError, match="--algos grpo: --ppo.vf-coef 0.2 is a setting of PPO's critic"):
        compare.run(parse(fake_argv(out, "--ppo.vf-coef", "0.2", seeds=1)), runner=FakeRunner())  # shared: refused
    runner = FakeRunner()
    compare.run(parse(fake_argv(out, "--algo-flags", "ppo=--ppo.vf-coef 0.2 --lr 1e-4", seeds=1)), runner=runner)
    ppo_argv, grpo_argv = runner.calls
    assert "--lr" not in grpo_argv and "--ppo.vf-coef" not in grpo_argv
    i = ppo_argv.index("--ppo.vf-coef")  # after the shared --config FILE, so it overrides the file
    assert ppo_argv[i - 2] == "--config" and ppo_argv[i:i + 4] == ["--ppo.vf-coef", "0.2", "--lr", "1e-4"]
    parsed = build_parser(only="train").parse_args(ppo_argv[3:])
    assert parsed.lr == 1e-4 and parsed.ppo__vf_coef == 0.2 and parsed.config["num_envs"] == 4
    for flags in (["--algo-flags", "ppo=--lr 1e-3"], []):  # other flags for ppo, or none: refused
        with pytest.raises(ValueError, match="ran ppo with --algo-flags '--ppo.vf-coef 0.2 --lr 1e-4', not"):
            compare.run(parse(fake_argv(out, *flags, seeds=1)), runner=runner)
    with pytest.raises(ValueError, match="not per-algorithm: --iterations 3"):
        compare.run(parse(fake_argv(tmp_path / "b", "--algo-flags", "ppo=--iterations 3")), runner=runner)
    with pytest.raises(ValueError, match="'rloo' is not in --algos"):
        compare.run(parse(fake_argv(tmp_path / "b", "--algo-flags", "rloo=--lr 1")), runner=runner)
    assert len(runner.calls) == 2


def test_a_config_file_and_flags_reach_every_run(tmp_path):
    (tmp_path / "shared.json").write_text(json.dumps({"num_envs": 8, "kl_coef": 0.1, "ppo": {"n_epochs": 3}}))
    argv = fake_argv(tmp_path / "cmp", "--config", str(tmp_path / "shared.json"), "--kl-coef", "0.2", seeds=1)
    argv[argv.index("--num-envs"):argv.index("--num-envs") + 2] = []  # from the file
    runner = FakeRunner(num_envs=8)
    compare.run(parse(argv), runner=runner)
    given = json.loads((tmp_path / "cmp" / "train_config.json").read_text())
    assert (given["num_envs"], given["kl_coef"], given["ppo"]) == (8, 0.2, {"n_epochs": 3, "minibatch_size": 4})
    for cmd in runner.calls:  # what the child parses: the file's values, the flag over the file
        cfg = dataclass_from_args(RLHFConfig, build_parser(only="train").parse_args(cmd[3:]))
        assert (cfg.num_envs, cfg.kl_coef, cfg.ppo.n_epochs, cfg.group_size) == (8, 0.2, 3, 2)


def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    for extra, message in [(["--seeds", "0"], "--seeds must be at least 1, got 0"),
                           (["--algos", "ppo,nope"], "--algos nope: unknown algo 'nope'; choose one of ppo, grpo"),
                           (["--algos", "ppo,rloo", "--group-size", "1"], "--algos rloo: --algo rloo needs"),
                           (["--algos", "ppo,ppo"], "--algos names ppo twice"),
                           (["--algos", " , "], "--algos must name at least one algorithm"),
                           (["--eval-n", "-1"], "--eval-n must be >= 0"),
                           (["--num-envs", "0"], "num_envs must be >= 1")]:
        runner = FakeRunner()
        with pytest.raises(ValueError, match=message):  # a flag given twice: the last counts
            compare.run(parse(fake_argv(out, *extra, algos="ppo")), runner=runner)
        assert runner.calls == [] and not out.exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no compare.json"):
        compare.run(parse(fake_argv(tmp_path / "other", algos="ppo")), runner=FakeRunner())
    compare.run(parse(fake_argv(out, algos="ppo", seeds=1)), runner=FakeRunner())
    runner = FakeRunner()
    with pytest.raises(ValueError, match=r"other shared flags \(kl_coef: 0.05 -> 0.5\)"):
        compare.run(parse(fake_argv(out, "--kl-coef", "0.5", algos="ppo", seeds=1)), runner=runner)
    with pytest.raises(ValueError, match="cannot shorten"):
        compare.run(parse(fake_argv(out, algos="ppo", seeds=1, iterations=1)), runner=runner)
    assert runner.calls == []
    assert cli(["compare", *fake_argv(out, "--kl-coef", "0.5", algos="ppo", seeds=1)]) == 2  # the CLI: exit 2
    assert "error:" in capsys.readouterr().err


def test_run_subprocess_logs_the_output_and_reads_peak_memory(tmp_path):
    log = tmp_path / "run" / "log.txt"
    r = compare.run_subprocess([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]);"
                                                      "print('hello'); raise SystemExit(3)"], log)
    assert r.returncode == 3 and r.peak_rss_mib > 300  # the child's own peak, from wait4's rusage
    assert "hello" in log.read_text() and "textgym compare runs:" in log.read_text()


def test_run_subprocess_on_ctrl_c_stops_the_child_and_reaps_it(tmp_path, monkeypatch):
    import os
    import signal
    import threading
    import time

    monkeypatch.setattr(compare, "SIGINT_GRACE_S", 0.3)  # the child here never got the terminal's SIGINT
    # a suite started in the background (`nohup make test &`) inherits SIGINT ignored: install the terminal's
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            compare.run_subprocess([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                                   tmp_path / "log.txt")
    finally:
        signal.signal(signal.SIGINT, old_handler)
    assert time.perf_counter() - t0 < 20  # it was stopped, not waited out
    assert "started" in (tmp_path / "log.txt").read_text()


# -- the whole command on a tiny GPT-2 ------------------------------------------------------------------------

def in_process(argv, log_path):
    """Run the train command in this process (the children's imports would cost seconds each in CI)."""
    with log_path.open("a") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        return compare.RunResult(cli(argv[3:]), None, 0.0)


def test_compare_end_to_end_on_a_tiny_model(byte_gpt2_dir, tmp_path):
    """ppo and grpo x 2 seeds x 2 iterations; the first call runs one seed for one iteration, so the second
    resumes those runs with train --resume (and starts seed 1); the third runs nothing."""
    out = tmp_path / "cmp"
    argv = ["--task", "sql", "--model", str(byte_gpt2_dir), "--tokenizer", "byte", "--algos", "ppo,grpo",
            "--num-envs", "4", "--group-size", "2", "--max-new-tokens", "6", "--ppo.minibatch-size", "4",
            "--ppo.micro-batch-size", "4", "--ppo.n-epochs", "1", "--n-samples", "1", "--tensorboard", "false",
            "--checkpoint-every", "1", "--eval-n", "4", "--out", str(out), "--progress", "false"]
    calls = []

    def runner(cmd, log_path):
        calls.append((cmd[cmd.index("--out") + 1].rsplit("/", 1)[1], "--resume" in cmd))
        return in_process(cmd, log_path)

    compare.run(parse([*argv, "--seeds", "1", "--iterations", "1"]), runner=runner)
    assert calls == [("ppo-seed0", False), ("grpo-seed0", False)]
    calls.clear()
    summary = compare.run(parse([*argv, "--seeds", "2", "--iterations", "2"]), runner=runner)
    assert calls == [("ppo-seed0", True), ("grpo-seed0", True), ("ppo-seed1", False), ("grpo-seed1", False)]
    rows = read_csv(out / "curves.csv")
    assert [(r["algo"], r["seed"], r["iteration"]) for r in rows] == [
        (a, s, i) for a in ("ppo", "grpo") for s in "01" for i in "12"]
    for algo in ("ppo", "grpo"):
        a = summary["algorithms"][algo]
        assert {"final_score", "eval_accuracy", "eval_score", "s_per_iteration", "peak_rss_mib"} <= set(a)
        assert a["s_per_iteration"]["n"] == 2 and a["s_per_iteration"]["mean"] > 0
        for seed in (0, 1):
            run_dir = out / "runs" / f"{algo}-seed{seed}"
            config = json.loads((run_dir / "config.json").read_text())
            assert (config["algo"], config["seed"], config["num_envs"], config["group_size"]) == (algo, seed, 4, 2)
            metrics = read_csv(run_dir / "metrics.csv")
            mine = [r for r in rows if r["algo"] == algo and r["seed"] == str(seed)]
            assert [float(r["score"]) for r in mine] == pytest.approx([float(m["rollout/ep_rew_mean"])
                                                                        for m in metrics])
            assert 0 < float(mine[0]["wall_s"]) < float(mine[1]["wall_s"])
            ev = json.loads((run_dir / "heldout_eval.json").read_text())["result"]
            assert ev["n"] == 4 and a["eval_accuracy"]["per_seed"][seed] == ev["greedy_accuracy"]["all"]["mean"]
            assert a["final_score"]["per_seed"][seed] == pytest.approx(float(metrics[-1]["rollout/ep_rew_mean"]))
    (c,) = summary["comparisons"]
    assert (c["a"], c["b"]) == ("ppo", "grpo") and {"final_score", "eval_accuracy", "s_per_iteration"} <= set(c)
    assert c["final_score"]["verdict"] == "inconclusive: 2 seeds"
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text()) == summary
    calls.clear()
    mtime = (out / "runs" / "ppo-seed1" / "metrics.csv").stat().st_mtime_ns
    assert compare.run(parse([*argv, "--seeds", "2", "--iterations", "2"]), runner=runner) == summary
    assert calls == [] and (out / "runs" / "ppo-seed1" / "metrics.csv").stat().st_mtime_ns == mtime


def test_the_command_runs_train_in_a_child_process(byte_gpt2_dir, tmp_path, capsys):
    """The real runner: ``python -m agents.cli train`` children, their logs and peak memory, the printed table."""
    out = tmp_path / "cmp"
    assert cli(["compare", "--task", "sql", "--model", str(byte_gpt2_dir), "--tokenizer", "byte", "--algos", "grpo",
                "--group-size", "2", "--num-envs", "2", "--max-new-tokens", "4", "--ppo.minibatch-size", "2",
                "--n-samples", "1", "--tensorboard", "false", "--num-threads", "1", "--seeds", "1", "--iterations",
                "1", "--eval-n", "2", "--out", str(out), "--progress", "false"]) == 0
    log = (out / "runs" / "grpo-seed0" / "log.txt").read_text()
    assert "agents.cli train --config" in log and "wrote " in log  # train's last words, from the child
    (run,) = read_csv(out / "runs.csv")
    assert float(run["peak_rss_mib"]) > 100  # torch and a model in the child, not this process's figure
    assert "| grpo | 1 |" in capsys.readouterr().out
