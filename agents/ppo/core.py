"""The PPO algorithm as small pure functions plus one update loop, shared by every policy.

Both the toy-task agent (one action per sample) and the RLHF agent (one sequence of tokens per sample)
call :func:`ppo_update`: a batch is a dict of tensors of shape ``(N, T)`` with a ``mask``; the toy agent
uses ``T = 1``. The policy only has to implement ``evaluate(minibatch) -> (logprob, entropy, value)``,
each ``(n, T)``.

Sources: Schulman et al. 2017 (PPO), 2016 (GAE); CleanRL ``ppo.py``; SB3 ``ppo/ppo.py``; TRL and
"The N Implementation Details of RLHF with PPO" (Huang et al. 2024) for the masked statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------------
# masked statistics (padding never counts), on one process or, with ``all_reduce``, over every process
# --------------------------------------------------------------------------------------------------------
AllReduce = Callable[[torch.Tensor], torch.Tensor]
"""sums a tensor over processes (:meth:`agents.distributed.Dist.all_reduce_sum`; the identity on one process)"""


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor, all_reduce: AllReduce | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1; 0 when the mask is empty. With ``all_reduce``: over the union of every
    process's entries (processes may hold different numbers of them)."""
    total, count = masked_sum(x, mask), mask.sum()
    if all_reduce is not None:
        total, count = all_reduce(torch.stack([total, count.to(total.dtype)]))
    return total / count.clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True,
               all_reduce: AllReduce | None = None) -> torch.Tensor:
    """Variance of ``x`` where ``mask`` is 1 (with ``all_reduce``: over every process: two collectives, the mean
    and then the squared deviations)."""
    var = masked_mean((x - masked_mean(x, mask, all_reduce)) ** 2, mask, all_reduce)
    if unbiased:  # Bessel's correction, as torch.std and TRL do
        n = mask.sum().to(var.dtype)
        n = all_reduce(n) if all_reduce is not None else n
        var = var * n / (n - 1).clamp_min(1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  all_reduce: AllReduce | None = None) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (of every process, with ``all_reduce``); padding stays 0.
    ``shift_mean=False`` keeps the mean (TRL whitens rewards that way)."""
    mean = masked_mean(x, mask, all_reduce)
    out = (x - mean) * torch.rsqrt(masked_var(x, mask, True, all_reduce) + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor,
                       all_reduce: AllReduce | None = None) -> float:
    """1 - Var[y - y_pred] / Var[y] over masked entries (SB3's ``train/explained_variance``); nan if Var[y]=0."""
    var_y = masked_var(y_true, mask, False, all_reduce)
    if var_y.item() == 0:
        return float("nan")
    return float(1 - masked_var(y_true - y_pred, mask, False, all_reduce) / var_y)


# --------------------------------------------------------------------------------------------------------
# advantages
# --------------------------------------------------------------------------------------------------------
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    next_nonterminal: torch.Tensor,
    episode_continues: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; every tensor is time-major ``(T, ...)``.

    - ``next_values[t]``: V of the observation after step t (the final observation of a truncated
      episode, not the reset one).
    - ``next_nonterminal[t]``: 0 if step t *terminated* the episode (no bootstrap), else 1.
    - ``episode_continues[t]``: 0 if the episode ended at step t for any reason (terminated or truncated),
      so the recursion does not carry advantages across episodes.

    ``delta_t = r_t + gamma * next_nonterminal_t * next_values_t - values_t`` and
    ``A_t = delta_t + gamma * lambda * episode_continues_t * A_{t+1}``; returns ``(advantages, returns)``
    with ``returns = advantages + values``. With ``lambda = 1`` and no bootstrap this is the Monte-Carlo
    advantage ``sum_k gamma^k r_{t+k} - V(s_t)``.

    Takes torch tensors or numpy arrays (the same operations either way; numpy costs a fraction of torch's
    per-operation overhead on the ``(N,)`` rows of a vectorised rollout) and returns the same kind.
    """
    zeros_like = torch.zeros_like if isinstance(rewards, torch.Tensor) else np.zeros_like
    advantages = zeros_like(rewards)
    last = zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_nonterminal[t] * next_values[t] - values[t]
        last = delta + gamma * gae_lambda * episode_continues[t] * last
        advantages[t] = last
    return advantages, advantages + values


def sequence_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                 gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE for batches of finished sequences ``(B, T)`` right-padded by ``mask``: each sequence is one
    episode ending (terminated) at its last real token, as in RLHF. Returns ``(advantages, returns)``,
    zero on padding."""
    mask = mask.to(values.dtype)
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, T)
    next_mask = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)  # 0 at the last real token
    adv, ret = compute_gae((rewards * mask).T, values.T, next_values.T, next_mask.T, next_mask.T, gamma, gae_lambda)
    return adv.T * mask, ret.T * mask


# --------------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------------
def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float, clip_range_high: float | None = None,
                weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``, as a masked *sum* (the caller
    divides; ``weight`` ``(n, T)``: a per-token weighted sum instead, for other loss aggregations), and detached
    statistics: ``approx_kl`` (Schulman's ``(r - 1) - log r`` estimator, as SB3/CleanRL) and ``clip_fraction``,
    masked sums too. ``clip_range`` is eps_low and eps_high unless ``clip_range_high`` is given (DAPO's
    clip-higher, Yu et al. 2025)."""
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = new_logprob - old_logprob
    ratio = torch.exp(log_ratio)
    neg_adv = -advantages
    loss = masked_sum(torch.max(neg_adv * ratio, neg_adv * torch.clamp(ratio, 1 - clip_range, 1 + high)),
                      mask if weight is None else weight)
    with torch.no_grad():
        ratio_m1 = ratio - 1
        stats = {
            "approx_kl": masked_sum(ratio_m1 - log_ratio, mask),
            "clip_fraction": masked_sum(((ratio_m1 < -clip_range) | (ratio_m1 > high)).to(mask.dtype), mask),
            "ratio": masked_sum(ratio, mask),
        }
    return loss, stats


def value_loss(new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_vf: float | None, clip_takes_max: bool = True) -> torch.Tensor:
    """Squared error to the returns, as a masked *sum*. With ``clip_range_vf`` the new value is kept within
    that distance of the old one; ``clip_takes_max=True`` takes the larger of the clipped and unclipped
    errors (PPO2, CleanRL, TRL), ``False`` uses the clipped error alone (SB3's ppo.py)."""
    err = (new_value - returns) ** 2
    if clip_range_vf is not None:
        clipped = old_value + torch.clamp(new_value - old_value, -clip_range_vf, clip_range_vf)
        clipped_err = (clipped - returns) ** 2
        err = torch.max(err, clipped_err) if clip_takes_max else clipped_err
    return masked_sum(err, mask)


def k3_kl_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """``(n, T)`` per-token KL(pi || pi_ref) loss: Schulman's k3 ``(q/p - 1) - log(q/p)`` (q = pi_ref, p = pi),
    weighted by the ratio ``pi / pi_old``. The tokens were drawn from pi_old, so the weight makes its expected
    gradient exactly that of KL(pi || pi_ref) on each token's distribution (at ratio 1 its value is plain k3).
    Differentiating k3 without the weight, as GRPO does, gives in expectation the gradient of the *reverse*
    KL(pi_ref || pi) (tests/agents/lm/test_lm_kl_forms.py enumerates both)."""
    log_q_over_p = ref_logprob - new_logprob
    k3 = torch.expm1(log_q_over_p) - log_q_over_p  # (n, T) >= 0
    return torch.exp(new_logprob - old_logprob) * k3


# --------------------------------------------------------------------------------------------------------
# the update
# --------------------------------------------------------------------------------------------------------
class EvaluatesActions(Protocol):
    """What :func:`ppo_update` needs of a policy (an ``nn.Module``)."""

    def evaluate(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprob, entropy, value)`` of ``minibatch["actions"]``, each of shape ``(n, T)``."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


class DataParallel(Protocol):
    """What :func:`ppo_update` needs to run on several processes: :class:`agents.distributed.Dist` has it, and
    :class:`SingleProcess` is the one-process version, where every method does nothing."""

    world_size: int

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over processes."""
        ...

    def no_sync(self, prepared: Any) -> contextlib.AbstractContextManager[None]:
        """Backward inside it accumulates gradients without the all-reduce."""
        ...

    def backward(self, loss: torch.Tensor) -> None: ...


class SingleProcess:
    """:class:`DataParallel` for one process: sums over one process are the input, ``no_sync`` has nothing to
    skip, ``backward`` is ``loss.backward()``."""

    world_size = 1

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def no_sync(self, prepared: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()


@dataclass
class PPOUpdateConfig:
    n_epochs: int = 10
    """passes over the batch per update"""
    minibatch_size: int = 64
    """samples (rows of the batch) per gradient step"""
    micro_batch_size: int | None = None
    """rows per forward/backward pass; gradients accumulate over a minibatch (None: the whole minibatch)"""
    clip_range: float = 0.2
    """PPO clip epsilon for the policy ratio"""
    clip_range_vf: float | None = None
    """clip the value change to this (None: no value clipping, SB3's default)"""
    vf_clip_takes_max: bool = True
    """with clip_range_vf: max of clipped and unclipped errors (CleanRL, TRL); False: clipped only (SB3)"""
    vf_coef: float = 0.5
    """value loss coefficient (the value loss is a plain mean squared error, as SB3; CleanRL's 0.5*MSE is vf_coef/2)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    max_grad_norm: float | None = 0.5
    """clip the global gradient norm (None: no clipping)"""
    normalize_advantage: str = "minibatch"
    """'minibatch' (SB3, CleanRL), 'batch' (whiten once over the batch, as the RLHF references) or 'none'"""
    target_kl: float | None = None
    """stop the update early when the approximate KL to the rollout policy exceeds this"""
    target_kl_mode: str = "minibatch"
    """'minibatch': stop before the step whose minibatch KL > 1.5 * target_kl (SB3); 'epoch': stop after an
    epoch whose mean KL > target_kl (CleanRL)"""
    clip_range_high: float | None = None
    """upper clip epsilon of the ratio, 1 + clip_range_high (DAPO's clip-higher, e.g. 0.28; None: clip_range)"""


def iterate_minibatches(n: int, size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Row indices of one epoch, shuffled; the last minibatch may be smaller (SB3 and CleanRL alike)."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, size):
        yield perm[start : start + size]


def index_batch(batch: dict[str, Any], idx: torch.Tensor | slice) -> dict[str, Any]:
    """Rows ``idx`` (1-D integer indices, or a slice) of every tensor (and nested dict of tensors) in ``batch``."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = index_batch(v, idx)
        elif isinstance(v, torch.Tensor):
            out[k] = v[idx] if isinstance(idx, slice) else v.index_select(0, idx.to(v.device))
        else:
            out[k] = v
    return out


STAT_NAMES = ("approx_kl", "clip_fraction", "ratio", "policy_gradient_loss", "value_loss", "entropy", "kl_loss")
"""the masked sums a micro-batch contributes to the statistics, in :class:`UpdateStats` rows (the first three
are token sums, the others in the loss's units)"""


class UpdateStats:
    """The update's ``train/`` statistics (SB3's keys), averaged over optimizer steps.

    Each step adds its micro-batches' masked sums (:data:`STAT_NAMES`) as tensors, its token count and its
    gradient norm; they are read back once, in :meth:`means` (one device-to-host copy per update). A step's
    value is its sums over its token count, or the loss terms over the loss's normaliser when it is another
    (``loss_norm``: rows, under a per-row loss aggregation); under data parallelism this process's sums over the
    global count, so the mean over processes is the global value. ``critic=False``: no value loss is logged."""

    def __init__(self, vf_coef: float, ent_coef: float, kl_loss_coef: float = 0.0, critic: bool = True) -> None:
        self.vf_coef, self.ent_coef, self.kl_loss_coef, self.critic = vf_coef, ent_coef, kl_loss_coef, critic
        self.steps: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.stopping_kl: float | None = None  # the KL of a minibatch that stopped the update (SB3 logs it)

    def add_step(self, rows: list[torch.Tensor], tokens: torch.Tensor, grad_norm: torch.Tensor | None,
                 loss_norm: torch.Tensor | None = None) -> None:
        self.steps.append((rows, tokens, tokens if loss_norm is None else loss_norm, grad_norm))

    def means(self) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        if self.steps:
            sums = iter(torch.stack([r for rows, *_ in self.steps for r in rows]).tolist())
            tokens = torch.stack([torch.stack([t, n]) for _, t, n, _ in self.steps]).tolist()
            norms = [g for *_, g in self.steps if g is not None]
            norm_values = iter(torch.stack(norms).tolist() if norms else [])
            for (rows, _, _, norm), (tok, den) in zip(self.steps, tokens):
                st = [0.0] * len(STAT_NAMES)
                for _ in rows:  # summed in float64, in micro-batch order
                    st = [a + b for a, b in zip(st, next(sums))]
                kl, clip, ratio, pg, vf, ent, kl_loss = st
                step = {"approx_kl": kl / tok, "clip_fraction": clip / tok, "policy_gradient_loss": pg / den,
                        "entropy_loss": -ent / den, "ratio": ratio / tok,
                        "loss": (pg + self.vf_coef * vf - self.ent_coef * ent + self.kl_loss_coef * kl_loss) / den}
                if self.critic:
                    step["value_loss"] = vf / den
                if self.kl_loss_coef:
                    step["kl_loss"] = kl_loss / den
                if norm is not None:
                    step["grad_norm"] = next(norm_values)
                for k, v in step.items():
                    values.setdefault(k, []).append(v)
        if self.stopping_kl is not None:
            values.setdefault("approx_kl", []).append(self.stopping_kl)
        return {f"train/{k}": sum(v) / len(v) for k, v in values.items()}


def minibatch_kl(rows: list[torch.Tensor], tokens: torch.Tensor, dp: DataParallel) -> float:
    """The approximate KL of a minibatch over every process (the same early-stopping decision on each)."""
    kl_sum = 0.0
    for r in torch.stack(rows)[:, 0].tolist():
        kl_sum += r
    return float(dp.all_reduce_sum(torch.tensor(kl_sum, dtype=torch.float64))) / (float(tokens) * dp.world_size)


def check_finite(loss: torch.Tensor, dp: DataParallel, pg: torch.Tensor, vf: torch.Tensor | float,
                 ent: torch.Tensor) -> None:
    """Raise ``FloatingPointError`` on every process when the loss is not finite on any (one raising alone would
    leave the others waiting in the next all-reduce)."""
    here = not math.isfinite(loss.item())
    n_bad = int(dp.all_reduce_sum(torch.tensor(float(here), dtype=torch.float64)))
    if here:
        raise FloatingPointError(f"PPO loss is {loss.item()} (policy {pg.item():.4g}, value {float(vf):.4g}, "
                                 f"entropy {ent.item():.4g}); stopping")
    if n_bad:
        raise FloatingPointError(f"PPO loss is not finite on {n_bad} other process(es); stopping")


def _no_sync_unless(last: bool, dp: DataParallel, policy: Any) -> contextlib.AbstractContextManager[Any]:
    """A fresh ``dp.no_sync`` context for every micro-batch but a minibatch's last (each is single-use)."""
    return contextlib.nullcontext() if last else dp.no_sync(policy)


def check_update_config(cfg: PPOUpdateConfig, n: int) -> None:
    if cfg.normalize_advantage not in ("minibatch", "batch", "none"):
        raise ValueError(f"normalize_advantage must be 'minibatch', 'batch' or 'none', got {cfg.normalize_advantage!r}")
    if cfg.target_kl_mode not in ("minibatch", "epoch"):
        raise ValueError(f"target_kl_mode must be 'minibatch' or 'epoch', got {cfg.target_kl_mode!r}")
    if cfg.minibatch_size <= 0 or cfg.minibatch_size > n:
        raise ValueError(f"minibatch_size={cfg.minibatch_size} must be in [1, batch size {n}]")
    if cfg.clip_range_high is not None and not cfg.clip_range_high > 0:
        raise ValueError(f"clip_range_high must be > 0 (None: clip_range), got {cfg.clip_range_high}")


def loss_normaliser(mb: dict[str, Any], dp: DataParallel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, loss normaliser)`` of a minibatch over every process, each over ``world_size`` (DDP's mean over
    processes restores it): the loss is a mean over the real tokens, or, when the batch holds a per-token
    ``loss_weight``, a weighted sum over the rows that have tokens (per-row aggregations)."""
    tokens = mb["mask"].sum()
    rows = (mb["mask"].sum(-1) > 0).sum().to(tokens.dtype) if "loss_weight" in mb else tokens
    tokens, rows = dp.all_reduce_sum(torch.stack([tokens, rows])) / dp.world_size
    return tokens.clamp_min(1 / dp.world_size), rows.clamp_min(1 / dp.world_size)


def ppo_update(
    policy: EvaluatesActions,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    cfg: PPOUpdateConfig,
    generator: torch.Generator | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    dist: DataParallel | None = None,
    kl_loss_coef: float = 0.0,
) -> dict[str, float]:
    """Run PPO's epochs x minibatches on one batch and return the mean statistics (SB3's ``train/`` keys).

    About 68 lines of body under this docstring (97 with it): one loop, minibatch -> loss -> backward -> step,
    kept whole so that it reads top to bottom as CleanRL's does; splitting it would hide the algorithm.

    ``batch`` holds ``actions``, ``logprobs``, ``values``, ``advantages``, ``returns`` and ``mask``, all
    ``(N, T)``, plus whatever the policy's ``evaluate`` reads (observations, input ids ...). ``autocast``
    makes the context of the forward passes (bf16 autocast; None: none). Options of the language-model
    algorithms (:mod:`agents.lm.algos`): without ``returns`` there is no critic (no value loss); a per-token
    ``loss_weight`` ``(N, T)`` makes the loss ``sum(weight * loss_t)`` over the minibatch's rows instead of the
    token mean; ``kl_loss_coef`` > 0 adds that times :func:`k3_kl_loss` against ``batch["ref_logprobs"]``.

    ``dist`` (:class:`DataParallel`; None: :class:`SingleProcess`): ``batch`` is this process's share of the
    global batch, ``cfg.minibatch_size`` its share of the global minibatch, and ``policy`` the DDP-prepared one
    (:meth:`agents.distributed.Dist.prepare_policy`). Advantages are whitened with global statistics, the loss
    is divided by the global token count over ``world_size`` (DDP averages gradients, so a step equals one
    process's on the whole minibatch), micro-batches but the last skip the all-reduce, and a non-finite loss or
    the target KL stops every process together.
    """
    dp = dist if dist is not None else SingleProcess()
    autocast = autocast if autocast is not None else contextlib.nullcontext
    mask = batch["mask"].float()
    n = mask.shape[0]
    check_update_config(cfg, n)
    batch = dict(batch, mask=mask)
    if cfg.normalize_advantage == "batch":
        batch["advantages"] = masked_whiten(batch["advantages"], mask, all_reduce=dp.all_reduce_sum)
    params = [p for p in policy.parameters() if p.requires_grad]
    micro = cfg.micro_batch_size or cfg.minibatch_size
    critic = "returns" in batch
    stats, n_updates = UpdateStats(cfg.vf_coef, cfg.ent_coef, kl_loss_coef, critic), 0
    for _epoch in range(cfg.n_epochs):
        epoch_kl, epoch_tokens = 0.0, 0.0  # token-weighted KL of the epoch (with target_kl)
        for mb_idx in iterate_minibatches(n, cfg.minibatch_size, generator):
            mb = index_batch(batch, mb_idx)
            mb_n = mb_idx.numel()
            # the loss is a mean over the global minibatch's real tokens (or rows); DDP's mean over processes
            # restores 1/W
            mb_tokens, mb_norm = loss_normaliser(mb, dp)
            if cfg.normalize_advantage == "minibatch" and mb_n > 1:  # SB3: not for a single sample
                mb["advantages"] = masked_whiten(mb["advantages"], mb["mask"], all_reduce=dp.all_reduce_sum)
            optimizer.zero_grad(set_to_none=True)
            rows = []
            for start in range(0, mb_n, micro):
                mu = mb if micro >= mb_n else index_batch(mb, slice(start, start + micro))
                # gradient accumulation under DDP: all-reduce once, on the last micro-batch (forward included)
                last = start + micro >= mb_n
                with _no_sync_unless(last, dp, policy), autocast():
                    new_logprob, entropy, new_value = (t.float() for t in policy.evaluate(mu))  # (n, T) each
                w = mu.get("loss_weight", mu["mask"])  # (n, T) per-token weight of the loss
                pg_sum, pg_stats = policy_loss(new_logprob, mu["logprobs"], mu["advantages"], mu["mask"],
                                               cfg.clip_range, cfg.clip_range_high, w)
                vf_sum = value_loss(new_value, mu["values"], mu["returns"], w, cfg.clip_range_vf,
                                    cfg.vf_clip_takes_max) if critic else new_value.new_zeros(())
                ent_sum = masked_sum(entropy, w)
                kl_sum = masked_sum(k3_kl_loss(new_logprob, mu["logprobs"], mu["ref_logprobs"]), w) \
                    if kl_loss_coef else new_value.new_zeros(())
                loss = (pg_sum + cfg.vf_coef * vf_sum - cfg.ent_coef * ent_sum + kl_loss_coef * kl_sum) / mb_norm
                check_finite(loss, dp, pg_sum, vf_sum, ent_sum)
                with _no_sync_unless(last, dp, policy):
                    dp.backward(loss)
                rows.append(torch.stack([pg_stats["approx_kl"], pg_stats["clip_fraction"], pg_stats["ratio"],
                                         pg_sum.detach(), vf_sum.detach(), ent_sum.detach(), kl_sum.detach()]))
            if cfg.target_kl is not None:
                kl = minibatch_kl(rows, mb_tokens, dp)
                epoch_kl, epoch_tokens = epoch_kl + kl * float(mb_tokens), epoch_tokens + float(mb_tokens)
                if cfg.target_kl_mode == "minibatch" and kl > 1.5 * cfg.target_kl:
                    stats.stopping_kl = kl  # SB3 stops *before* stepping on this minibatch
                    break
            grad_norm = None
            if cfg.max_grad_norm is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            n_updates += 1
            stats.add_step(rows, mb_tokens, grad_norm, mb_norm)
        if stats.stopping_kl is not None or (
                cfg.target_kl_mode == "epoch" and epoch_tokens and epoch_kl / epoch_tokens > cfg.target_kl):
            break
    out = stats.means()
    out.update({"train/n_updates": float(n_updates), "train/clip_range": cfg.clip_range,
                "train/early_stop": float(stats.stopping_kl is not None)})
    if critic:
        out["train/explained_variance"] = explained_variance(batch["values"], batch["returns"], mask,
                                                             dp.all_reduce_sum)
    if not math.isfinite(out.get("train/approx_kl", 0.0)):
        raise FloatingPointError("approx_kl is not finite; stopping")
    return out
