"""RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to basics"): no critic; each prompt gets K completions and
a completion's baseline is the mean reward of the *other* K - 1 completions of its prompt (leave-one-out), an
unbiased baseline: ``A_i = R_i - (sum_j R_j - R_i) / (K - 1)``. No std scaling (TRL's RLOOTrainer and verl's
``compute_rloo_outcome_advantage`` alike)."""

from __future__ import annotations

from typing import Any

import torch

from agents.lm.algos import check_groups, sequence_rewards


def rloo_advantages(seq_rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N,)`` leave-one-out advantages of ``(N,)`` rewards, rows grouped by ``group_size`` consecutive rows."""
    if group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2 (a leave-one-out baseline of the others), got {group_size}")
    g = seq_rewards.reshape(check_groups(seq_rewards.numel(), group_size), group_size).float()  # (G, K)
    others_mean = (g.sum(-1, keepdim=True) - g) / (group_size - 1)  # (G, K)
    return (g - others_mean).reshape(-1)


class RLOO:
    name = "rloo"
    needs_critic = False
    min_group_size = 2

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None, group_size: int,
                   cfg: Any, dist: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        adv = rloo_advantages(sequence_rewards(rewards, mask), group_size)  # (N,)
        return adv[:, None] * mask, None  # (N, T)
