"""The language-model algorithms behind ``textgym train --algo``: one small object per file.

An RLHF iteration (:meth:`agents.lm.rlhf.RLHFTrainer.run_iteration`) reads

    rollout -> per-token rewards (score at the last token, -kl_coef * k1 at every token) -> **advantages**
    -> **policy loss** (:func:`agents.ppo.core.ppo_update`: clipped ratio, optional k3 KL loss) -> update

and an :class:`Algorithm` supplies the advantage estimator and says whether it needs a critic (value head).
The policy loss is the same clipped surrogate for all of them (GRPO, RLOO and REINFORCE++ as TRL, verl and
OpenRLHF run them: PPO's ratio clipping over the epochs of one batch); they differ in the baseline.

The registry holds ``"module:attr"`` strings, imported on use (``textgym._optional.load_entry``, the house
registry style).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from textgym._optional import load_entry

if TYPE_CHECKING:
    import torch

    from agents.distributed import Dist

ALGORITHMS: dict[str, str] = {
    "ppo": "agents.lm.algos.ppo:PPO",
    "grpo": "agents.lm.algos.grpo:GRPO",
    "rloo": "agents.lm.algos.rloo:RLOO",
    "reinforce++": "agents.lm.algos.reinforce_pp:ReinforcePP",
}
"""``--algo`` name -> the class that implements it"""


class Algorithm(Protocol):
    """What the trainer needs of an algorithm."""

    name: str
    needs_critic: bool
    """True: the policy gets a value head, trained with the value loss, saved in checkpoints"""
    min_group_size: int
    """the fewest completions per prompt (``--group-size``) its baseline works with"""

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None,
                   group_size: int, cfg: object, dist: Dist | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(advantages (N, T), returns (N, T) or None)`` from per-token rewards ``(N, T)`` of this process's rows;
        rows ``g * group_size ... (g + 1) * group_size - 1`` are the completions of one prompt."""
        ...


def make_algorithm(name: str) -> Algorithm:
    """The :class:`Algorithm` registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return load_entry(ALGORITHMS[name])()


def sequence_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` each completion's total reward (score plus its per-token KL penalties and env rewards): the
    outcome that group baselines compare (gamma 1, as GRPO and RLOO)."""
    return (rewards * mask).sum(-1)


def check_groups(n: int, group_size: int) -> int:
    """The number of groups of ``n`` rows; ``ValueError`` when ``group_size`` does not divide ``n``."""
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size={group_size} must divide the {n} rows of the batch")
    return n // group_size
