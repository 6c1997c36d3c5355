"""agents/validate.py: the statistics, the command end to end on a tiny budget, and its input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from agents.cli import main as cli_main  # noqa: E402
from agents.validate import bootstrap_diff, rolling_curve, steps_to_threshold, summarize, t_ci  # noqa: E402


def test_rolling_curve_and_steps_to_threshold():
    eps = [(10, 1.0), (20, 3.0), (30, 5.0), (40, 7.0)]
    assert rolling_curve(eps, np.array([5, 10, 25, 40]), 2)[1:].tolist() == [1.0, 2.0, 6.0]
    assert np.isnan(rolling_curve(eps, np.array([5]), 2)[0])
    assert steps_to_threshold(eps, 4.0, 2) == 30  # mean(3, 5) = 4 at the episode ending at 30
    assert steps_to_threshold(eps, 100.0, 2) is None
    assert steps_to_threshold(eps, 0.0, 5) is None  # never a full window


def test_t_ci_and_bootstrap():
    m, lo, hi = t_ci(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / np.sqrt(3)) and hi == pytest.approx(2 + 4.303 / np.sqrt(3))
    cis = bootstrap_diff(np.array([10.0, 10.0, 10.0]), np.array([1.0, 1.0, 1.0]), (0.9, 0.95))
    assert cis[0.9] == (9.0, 9.0)


def test_equivalence_verdicts():
    def runs(a, b):
        return {"ours": {i: {"episodes": [(1, x)], "fps": 1.0} for i, x in enumerate(a)},
                "sb3": {i: {"episodes": [(1, x)], "fps": 1.0} for i, x in enumerate(b)}}

    same = summarize(runs([100, 101, 99, 100], [100, 99, 101, 100]), None, 1, delta=5.0)
    assert same["equivalent"] is True and same["delta"] == 5.0
    far = summarize(runs([10, 11, 9, 10], [100, 99, 101, 100]), None, 1, delta=5.0)
    assert far["equivalent"] is False and far["verdict"].startswith("different")


def test_validate_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "v"
    rc = cli_main(["validate-sb3", "--env", "CartPole-v1", "--seeds", "2", "--total-timesteps", "256", "--out",
                   str(out), "--n-envs", "2", "--n-steps", "64", "--minibatch-size", "64"])
    assert rc == 0
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "agent,seed,timestep,episode_return"
    assert {ln.split(",")[0] for ln in lines[1:]} == {"ours", "sb3"}
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    s = json.loads((out / "summary.json").read_text())
    assert set(s["agents"]) == {"ours", "sb3"} and s["threshold"] == 475.0
    assert {"mean", "ci95"} <= set(s["agents"]["ours"]["final_return"])
    assert s["agents"]["ours"]["steps_per_second"]["mean"] > 0
    assert isinstance(s["equivalent"], bool) and "TOST" in s["equivalence_test"] and s["delta"] == 23.75
    assert len(s["difference_ours_minus_sb3"]["ci90_bootstrap"]) == 2


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
