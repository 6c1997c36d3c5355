"""agents/atomic.py and what uses it outside the RLHF checkpoints: ``PPOAgent.save`` is atomic (a save that
dies leaves the previous one whole and loadable, never a mix of old and new files)."""

from __future__ import annotations

import os

import pytest

from agents.atomic import existing_dir, previous_dir, replace_dir

torch = pytest.importorskip("torch")


def test_replace_dir_swaps_and_a_kill_between_the_renames_leaves_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "saved"
    for text in ("one", "two"):
        new = tmp_path / f".new-{text}"
        new.mkdir()
        (new / "f.txt").write_text(text)
        replace_dir(new, path)
        assert (path / "f.txt").read_text() == text and not previous_dir(path).exists()

    new = tmp_path / ".new-three"
    new.mkdir()
    (new / "f.txt").write_text("three")
    real, calls = os.replace, []

    def die_on_second(src, dst):  # the first rename (path -> path.old) happens, then the process "dies"
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, path)
    monkeypatch.undo()
    assert not path.exists() and (existing_dir(path) / "f.txt").read_text() == "two"


def _agent(seed: int):
    from agents.ppo.agent import PPOAgent, PPOConfig

    return PPOAgent("CartPole-v1", PPOConfig.sb3(n_envs=1, n_steps=16, seed=seed,
                                                 update=dict(minibatch_size=16, n_epochs=1))).learn(16)


def test_ppo_agent_save_that_dies_keeps_the_previous_save(tmp_path, monkeypatch):
    from agents.ppo.agent import PPOAgent

    first = _agent(0)
    first.save(tmp_path / "m")
    second = _agent(1)  # other weights
    real_save = torch.save

    def die(*a, **k):  # optimizer.pt is the last file written: the kill comes after the weights
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", die)
    with pytest.raises(KeyboardInterrupt):
        second.save(tmp_path / "m")
    monkeypatch.setattr(torch, "save", real_save)
    loaded = PPOAgent.load(tmp_path / "m")
    for k, v in first.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[k], v), k  # not the second agent's weights

    # a kill between the two renames of replace_dir: load finds the previous save
    second.save(tmp_path / "m")
    os.replace(tmp_path / "m", previous_dir(tmp_path / "m"))
    loaded = PPOAgent.load(tmp_path / "m")
    for k, v in second.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[k], v), k
