"""GRPO (Shao et al. 2024, DeepSeekMath): no critic; each prompt gets K completions and a completion's
advantage is its reward minus the mean of its group, divided by the group's std (``--group-std-scaling``,
on by default; Dr.GRPO, Liu et al. 2025, turns it off and aggregates the loss with ``--loss-agg
seq-mean-token-sum-norm``). Every token of a completion gets the completion's advantage.

As verl's ``compute_grpo_outcome_advantage`` and TRL's ``GRPOTrainer``: the std is the unbiased one, and a group
whose rewards are all equal gets advantage 0 (``(r - mean) / (0 + eps)``)."""

from __future__ import annotations

from typing import Any

import torch

from agents.lm.algos import check_groups, sequence_rewards

EPS = 1e-6  # verl's epsilon in (r - mean) / (std + eps)


def grpo_advantages(seq_rewards: torch.Tensor, group_size: int, scale_std: bool = True) -> torch.Tensor:
    """``(N,)`` group-relative advantages of ``(N,)`` rewards, rows grouped by ``group_size`` consecutive rows."""
    g = seq_rewards.reshape(check_groups(seq_rewards.numel(), group_size), group_size).float()  # (G, K)
    adv = g - g.mean(-1, keepdim=True)
    if scale_std:
        adv = adv / (g.std(-1, keepdim=True) + EPS)  # unbiased std, as torch.std, verl and TRL
    return adv.reshape(-1)


class GRPO:
    name = "grpo"
    needs_critic = False
    min_group_size = 2

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, group_size: int,
                   cfg: Any, dist: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        adv = grpo_advantages(sequence_rewards(rewards, mask), group_size, cfg.group_std_scaling)  # (N,)
        return adv[:, None] * mask, None  # (N, T): the completion's advantage at each of its tokens
