"""agents/random_agent.py and the Agent protocol."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from agents.base import Agent
from agents.random_agent import RandomAgent


def test_uniform_and_seeded():
    a, b = RandomAgent(spaces.Discrete(4), seed=0), RandomAgent(spaces.Discrete(4), seed=0)
    xs = [int(a.predict(None)) for _ in range(400)]
    assert xs == [int(b.predict(None)) for _ in range(400)]
    assert set(xs) == {0, 1, 2, 3}


def test_respects_action_mask():
    agent = RandomAgent(spaces.Discrete(5), seed=1)
    mask = np.array([0, 1, 0, 1, 0], np.int8)
    assert {int(agent.predict(None, action_mask=mask)) for _ in range(100)} == {1, 3}
    batch = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert agent.predict(None, action_mask=batch).tolist() == [0, 4]
    with pytest.raises(ValueError, match="no action"):
        agent.predict(None, action_mask=np.zeros(5))
    with pytest.raises(ValueError, match="entries"):
        agent.predict(None, action_mask=np.ones(3))


def test_protocol_and_save_load(tmp_path):
    agent = RandomAgent(spaces.Discrete(3, start=1), seed=2)
    assert isinstance(agent, Agent)
    assert agent.learn(100) is agent
    loaded = RandomAgent.load(agent.save(tmp_path))
    assert loaded.action_space == agent.action_space
    fresh = RandomAgent(spaces.Discrete(3, start=1), seed=2)
    xs = [int(loaded.predict(None)) for _ in range(20)]
    assert xs == [int(fresh.predict(None)) for _ in range(20)] and set(xs) <= {1, 2, 3}


def test_rejects_non_discrete():
    with pytest.raises(TypeError, match="Discrete"):
        RandomAgent(spaces.Box(0, 1, (2,)))
