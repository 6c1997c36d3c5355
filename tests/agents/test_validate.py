"""agents/validate.py: the statistics, the command end to end on a tiny budget, and its input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from agents import validate  # noqa: E402
from agents.cli import main as cli_main  # noqa: E402
from agents.validate import rolling_curve, steps_to_threshold, summarize  # noqa: E402


def test_rolling_curve_and_steps_to_threshold():
    eps = [(10, 1.0), (20, 3.0), (30, 5.0), (40, 7.0)]
    assert rolling_curve(eps, np.array([5, 10, 25, 40]), 2)[1:].tolist() == [1.0, 2.0, 6.0]
    assert np.isnan(rolling_curve(eps, np.array([5]), 2)[0])
    assert steps_to_threshold(eps, 4.0, 2) == 30  # mean(3, 5) = 4 at the episode ending at 30
    assert steps_to_threshold(eps, 100.0, 2) is None
    assert steps_to_threshold(eps, 0.0, 5) is None  # never a full window


def _runs(a, b):
    return {"ours": {i: {"episodes": [(1, x)], "fps": 1.0} for i, x in enumerate(a)},
            "sb3": {i: {"episodes": [(1, x)], "fps": 1.0} for i, x in enumerate(b)}}


def test_verdicts_follow_welch_and_tost():
    same = summarize(_runs([100, 101, 99, 100, 100.5], [100, 99, 101, 100, 99.5]), None, 1, delta=5.0)["comparison"]
    assert same["verdict"] == "equivalent within ±delta" and same["tost_p"] < 0.05 and same["delta"] == 5.0
    far = summarize(_runs([10, 11, 9, 10, 10.5], [100, 99, 101, 100, 99.5]), None, 1, delta=5.0)["comparison"]
    assert far["verdict"] == "different" and far["welch_p"] < 0.05
    wide = summarize(_runs([50, 150, 80, 120, 100], [60, 140, 90, 130, 95]), None, 1, delta=5.0)["comparison"]
    assert wide["verdict"].startswith("inconclusive") and wide["min_detectable_difference"]["value"] > 5.0


def test_no_verdict_below_five_seeds():
    """The issue's case: a few seeds far apart got "different" from a bootstrap; now the numbers, no verdict."""
    c = summarize(_runs([10, 11, 9, 10], [100, 99, 101, 100]), None, 1, delta=5.0)["comparison"]
    assert c["verdict"] == "too few seeds for a verdict (fewer than 5 per agent)" and c["welch_p"] < 0.05
    assert summarize(_runs([10], [100]), None, 1, delta=5.0)["comparison"]["verdict"].startswith("too few")


def _validate(out, *extra):
    return cli_main(["validate-sb3", "--env", "CartPole-v1", "--total-timesteps", "256", "--out", str(out),
                     "--n-envs", "2", "--n-steps", "64", "--minibatch-size", "64", *extra])


def test_validate_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "v"
    assert _validate(out, "--seeds", "2") == 0
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "agent,seed,timestep,episode_return"
    assert {ln.split(",")[0] for ln in lines[1:]} == {"ours", "sb3"}
    assert (out / "runs.csv").read_text().splitlines()[0] == "agent,seed,steps_per_second"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    s = json.loads((out / "summary.json").read_text())
    assert set(s["agents"]) == {"ours", "sb3"} and s["threshold"] == 475.0 and s["seeds"] == {"ours": [0, 1],
                                                                                                "sb3": [0, 1]}
    assert {"mean", "ci95"} <= set(s["agents"]["ours"]["final_return"])
    assert s["agents"]["ours"]["steps_per_second"]["mean"] > 0
    c = s["comparison"]
    assert "Welch" in c["test"] and "TOST" in c["test"] and c["delta"] == 23.75
    assert c["verdict"].startswith("too few seeds") and len(c["difference_ours_minus_sb3"]["ci95"]) == 2
    printed = capsys.readouterr().out
    assert "Welch p" in printed and "minimum detectable difference" in printed and "too few seeds" in printed


def test_merged_runs_are_the_union_and_get_a_verdict(tmp_path):
    """Seeds 0-1 in one folder, 2-4 in another (--seed-offset), one agent per run as on two cores: merged, 5 seeds
    per agent and a verdict; a seed twice, or another budget, is refused."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _validate(a, "--seeds", "2") == 0
    assert _validate(b, "--seeds", "3", "--seed-offset", "2", "--agents", "ours") == 0
    assert _validate(c, "--seeds", "3", "--seed-offset", "2", "--agents", "sb3") == 0
    m = tmp_path / "m"
    assert cli_main(["validate-sb3", "--merge", str(a), str(b), str(c), "--out", str(m)]) == 0
    s = json.loads((m / "summary.json").read_text())
    assert s["seeds"] == {"ours": [0, 1, 2, 3, 4], "sb3": [0, 1, 2, 3, 4]}
    assert s["comparison"]["n_seeds"] == {"ours": 5, "sb3": 5}
    assert not s["comparison"]["verdict"].startswith("too few")
    rows = sorted((m / "curves.csv").read_text().splitlines()[1:])
    assert rows == sorted(sum(((d / "curves.csv").read_text().splitlines()[1:] for d in (a, b, c)), []))
    sa = json.loads((a / "summary.json").read_text())  # seeds 0-1 keep their final returns through the merge
    assert s["agents"]["ours"]["final_return"]["per_seed"][:2] == sa["agents"]["ours"]["final_return"]["per_seed"]
    with pytest.raises(ValueError, match="ours seed 2 is in both"):
        cli_main(["validate-sb3", "--merge", str(b), str(b), "--out", str(tmp_path / "x")])
    other = tmp_path / "o"
    assert cli_main(["validate-sb3", "--env", "CartPole-v1", "--total-timesteps", "128", "--out", str(other),
                     "--n-envs", "2", "--n-steps", "64", "--minibatch-size", "64", "--seeds", "1",
                     "--seed-offset", "7", "--agents", "ours"]) == 0
    with pytest.raises(ValueError, match="total_timesteps differ"):
        cli_main(["validate-sb3", "--merge", str(a), str(other), "--out", str(tmp_path / "y")])


def test_readme_table_from_summaries(tmp_path):
    folder = tmp_path / "validation"
    for env, (x, y) in {"A-v0": ([100, 101, 99, 100, 100.5], [100, 99, 101, 100, 99.5]),
                        "B-v0": ([10, 11, 9], [100, 99, 101])}.items():
        s = summarize(_runs(x, y), 50.0, 1, delta=5.0)
        s.update(env=env, total_timesteps=20_000)
        (folder / env).mkdir(parents=True)
        (folder / env / "summary.json").write_text(json.dumps(s))
    table = validate.table(folder).splitlines()
    assert len(table) == 4 and table[2].startswith("| A-v0 (20k, 5/5) |") and "| equivalent |" in table[2]
    assert table[3].startswith("| B-v0 (20k, 3/3) |") and table[3].endswith("| too few seeds for a verdict (fewer "
                                                                            "than 5 per agent) |")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{validate.TABLE_START}\nold\n{validate.TABLE_END}\nrest\n")
    validate.write_table(readme, "\n".join(table))
    assert readme.read_text() == f"intro\n{validate.TABLE_START}\n" + "\n".join(table) + \
        f"\n{validate.TABLE_END}\nrest\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no table here\n")
    with pytest.raises(ValueError, match="markers"):
        validate.write_table(plain, "x")


@pytest.mark.parametrize("argv, match", [
    (["--env", "Pendulum-v1", "--preset", "sb3", "--total-timesteps", "4096"], "Discrete"),
    (["--env", "CartPol-v1"], "unknown env id"),
    (["--env", "CartPole-v1", "--total-timesteps", "100"], "smaller than one rollout"),
    (["--env", "CartPole-v1", "--minibatch-size", "100"], "not a multiple"),
    (["--env", "CartPole-v1", "--minibatch-size", "1000"], "larger than the batch"),
    (["--env", "CartPole-v1", "--seeds", "0"], "--seeds"),
])
def test_validate_rejects_bad_input_before_training(tmp_path, argv, match):
    out = tmp_path / "v"
    with pytest.raises(ValueError, match=match):
        cli_main(["validate-sb3", *argv, "--out", str(out)] + ([] if "--total-timesteps" in argv else
                                                                ["--total-timesteps", "1000"]))
    assert not out.exists()  # nothing trained, nothing written
