"""A uniformly random agent: the baseline every learning curve must beat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces


class RandomAgent:
    """Picks actions uniformly at random from ``action_space`` (``Discrete``), among the valid ones when an
    ``action_mask`` (``info["action_mask"]``, 1 = valid) is given. ``learn`` does nothing."""

    def __init__(self, action_space: spaces.Discrete, seed: int | None = None) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"RandomAgent needs a Discrete action space, got {action_space}")
        self.action_space = action_space
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: Any, deterministic: bool = False, action_mask: np.ndarray | None = None) -> np.ndarray:
        """A random action (0-d array); with ``action_mask`` of shape ``(n, A)``, one per row (``(n,)``)."""
        n, start = int(self.action_space.n), int(self.action_space.start)
        if action_mask is None:
            return np.asarray(start + self.rng.integers(n))
        mask = np.asarray(action_mask)
        if mask.shape[-1] != n:
            raise ValueError(f"action_mask has {mask.shape[-1]} entries, the action space has {n}")
        rows = np.atleast_2d(mask).astype(bool)
        if not rows.any(axis=1).all():
            raise ValueError("action_mask allows no action in some row; at least one action must be valid")
        out = np.array([start + self.rng.choice(np.flatnonzero(r)) for r in rows])
        return out if mask.ndim == 2 else out[0]

    def learn(self, total_timesteps: int) -> RandomAgent:
        return self

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "random_agent.json").write_text(json.dumps(
            {"n": int(self.action_space.n), "start": int(self.action_space.start), "seed": self.seed}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RandomAgent:
        d = json.loads((Path(path) / "random_agent.json").read_text())
        return cls(spaces.Discrete(d["n"], start=d["start"]), seed=d["seed"])
