"""REINFORCE++ (Hu 2025; OpenRLHF, verl's ``compute_reinforce_plus_plus_outcome_advantage``): no critic and no
group; the per-token reward holds the k1 KL penalty (``-kl_coef * (log pi - log pi_ref)``) and the score at the
last token, the advantage of token t is the return ``G_t = sum_{s >= t} gamma^(s-t) r_s``, whitened over the
whole batch (every process's tokens, under data parallelism). Works with any ``--group-size``."""

from __future__ import annotations

from typing import Any

import torch

from agents.ppo.core import masked_whiten


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``(N, T)`` returns ``G_t = r_t + gamma * G_{t+1}`` of right-padded per-token rewards (0 on padding)."""
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


class ReinforcePP:
    name = "reinforce++"
    needs_critic = False
    min_group_size = 1

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, group_size: int,
                   cfg: Any, dist: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        returns = discounted_returns(rewards, mask, cfg.gamma)  # (N, T)
        all_reduce = dist.all_reduce_sum if dist is not None else None
        return masked_whiten(returns, mask, all_reduce=all_reduce), None  # batch-normalised (global) returns
