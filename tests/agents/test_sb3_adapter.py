"""agents/sb3_adapter.py: the token features extractor, the config mapping, and SB3 training smoke runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")

from agents.base import Agent  # noqa: E402
from agents.ppo.agent import PPOConfig  # noqa: E402
from agents.sb3_adapter import SB3Agent, TokenEmbeddingExtractor, sb3_kwargs  # noqa: E402


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_token_extractor_reads_float_ids_and_ignores_padding(pool):
    env = gym.make("TextGen-Copy-v0")
    ext = TokenEmbeddingExtractor(env.observation_space, features_dim=16, pool=pool)
    ids = torch.tensor([[0.0, 1.0, 3.0, 4.0, 4.0], [2.0, 3.0, 4.0, 4.0, 4.0]])  # SB3 hands ids over as floats
    ids = torch.nn.functional.pad(ids, (0, 5), value=4.0)
    mask = torch.zeros_like(ids)
    mask[0, :3], mask[1, :2] = 1, 1
    out = ext({"input_ids": ids, "attention_mask": mask})
    assert out.shape == (2, 16)
    ids2 = ids.clone()
    ids2[:, 6:] = 0.0  # change only padding
    assert torch.allclose(out, ext({"input_ids": ids2, "attention_mask": mask}))


def test_sb3_kwargs_mapping_and_refusals():
    kw = sb3_kwargs(PPOConfig.rl_zoo_cartpole())
    assert kw["batch_size"] == 256 and kw["n_epochs"] == 20 and kw["gamma"] == 0.98
    assert kw["learning_rate"](0.5) == pytest.approx(5e-4) and kw["clip_range"](0.5) == pytest.approx(0.1)
    assert kw["policy_kwargs"]["optimizer_kwargs"] == {"eps": 1e-5}
    with pytest.raises(ValueError, match="per minibatch"):
        sb3_kwargs(PPOConfig.sb3(update=dict(normalize_advantage="batch")))
    with pytest.raises(ValueError, match="clipped error alone"):
        sb3_kwargs(PPOConfig.cleanrl())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "TextGen-Copy-v0"])
def test_sb3_agent_trains_records_and_saves(env_id, tmp_path):
    cfg = PPOConfig.sb3(n_envs=2, n_steps=32, update=dict(minibatch_size=16, n_epochs=1))
    agent = SB3Agent(env_id, cfg).learn(128)
    assert isinstance(agent, Agent)
    assert agent.episodes and all(t <= 128 for t, _, _ in agent.episodes)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    a = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(int(a))
    loaded = SB3Agent.load(agent.save(tmp_path / "m"))
    assert int(loaded.predict(obs, deterministic=True)) == int(a)


def test_sb3_agent_bad_input():
    with pytest.raises(ValueError, match="unknown env id"):
        SB3Agent("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Discrete"):
        SB3Agent("Pendulum-v1", PPOConfig.sb3(n_steps=64))
    with pytest.raises(ValueError, match="smaller than one rollout"):
        SB3Agent("CartPole-v1", PPOConfig.sb3(n_steps=64)).learn(10)
    with pytest.raises(ValueError, match="no action masking"):
        SB3Agent("CartPole-v1", PPOConfig.sb3(n_steps=64)).predict(np.zeros(4, np.float32), action_mask=np.ones(2))


def test_sb3_training_leaves_no_folder_in_the_temp_dir(tmp_path, monkeypatch):
    """SB3's default logger makes an empty SB3-<date> folder in the system temp dir on every learn (23 after one
    session of validate-sb3); ours writes nothing there, before and after a save/load round trip."""
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    cfg = PPOConfig.sb3(n_envs=1, n_steps=32, update=dict(minibatch_size=32, n_epochs=1))
    agent = SB3Agent("CartPole-v1", cfg).learn(64)
    SB3Agent.load(agent.save(tmp_path / "m"), env="CartPole-v1").model.learn(32)
    assert list(temp.iterdir()) == []
    assert agent.model.logger.dir is None
