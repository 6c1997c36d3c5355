"""PPO (Schulman et al. 2017) as RLHF runs it (Ziegler et al. 2019; Huang et al. 2024): a value head is the
baseline, advantages by GAE over each completion's per-token rewards; :func:`agents.ppo.core.ppo_update`
whitens them over the batch and adds the value loss."""

from __future__ import annotations

from typing import Any

import torch

from agents.ppo.core import sequence_gae


class PPO:
    name = "ppo"
    needs_critic = True
    min_group_size = 1

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, group_size: int,
                   cfg: Any, dist: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if values is None:
            raise ValueError("ppo needs the value head's values")
        return sequence_gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)  # (N, T) each
