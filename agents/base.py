"""The ``Agent`` protocol: what every agent (random, our PPO, SB3's PPO, RLHF) offers, so they are swappable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """An agent acts on observations, learns for a budget of env steps, and saves/loads itself."""

    def predict(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        """The action for one observation (a 0-d array) or a batch of observations (``(n,)``)."""
        ...

    def learn(self, total_timesteps: int) -> Agent:
        """Train for ``total_timesteps`` env steps; returns ``self``."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the agent to folder ``path``; returns it."""
        ...

    @classmethod
    def load(cls, path: str | Path) -> Agent:
        """Read an agent written by :meth:`save`."""
        ...
