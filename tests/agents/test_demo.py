"""agents/demo.py: the demo command with the random agent and a saved PPO agent."""

from __future__ import annotations

import pytest

from agents.cli import main as cli_main


def test_demo_random_on_a_text_task(capsys):
    assert cli_main(["demo", "--env", "TextGen-Copy-v0", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("episode ") == 2 and "│" in out and "mean return" in out


def test_demo_saved_ppo_agent(tmp_path, capsys):
    pytest.importorskip("torch")
    from agents.ppo.agent import PPOAgent, PPOConfig

    cfg = PPOConfig.sb3(n_steps=32, update=dict(minibatch_size=32, n_epochs=1))
    PPOAgent("CartPole-v1", cfg).learn(32).save(tmp_path / "a")
    assert cli_main(["demo", "--env", "CartPole-v1", "--agent", str(tmp_path / "a"), "--deterministic"]) == 0
    assert "mean return" in capsys.readouterr().out


def test_demo_bad_input(tmp_path):
    with pytest.raises(ValueError, match="neither 'random' nor a folder"):
        cli_main(["demo", "--env", "CartPole-v1", "--agent", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown env id"):
        cli_main(["demo", "--env", "Nope-v0"])
