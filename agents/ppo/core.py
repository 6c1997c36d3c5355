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
# masked statistics (padding never counts)
# --------------------------------------------------------------------------------------------------------
# ``mask=None`` means every entry counts: the same numbers as an all-ones mask (``x * 1 == x`` and the count is
# exact), without the products. :func:`ppo_update` passes None when the whole batch is valid.
def _count(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The number of entries that count, clamped to >= 1, as a tensor (``mask.sum().clamp_min(1)``)."""
    return mask.sum().clamp_min(1) if mask is not None else x.new_tensor(float(max(x.numel(), 1)))


def masked_sum(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x.sum() if mask is None else (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1; 0 when the mask is empty."""
    return masked_sum(x, mask) / _count(x, mask)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None, unbiased: bool = True) -> torch.Tensor:
    return _masked_var_centred(x - masked_mean(x, mask), mask, unbiased)


def _masked_var_centred(centred: torch.Tensor, mask: torch.Tensor | None, unbiased: bool) -> torch.Tensor:
    """:func:`masked_var` given ``centred = x - masked_mean(x, mask)``."""
    var = masked_mean(centred**2, mask)
    if unbiased:  # Bessel's correction, as torch.std and TRL do
        if mask is None:
            k = centred.numel()
            var = var * centred.new_tensor(float(k)) / centred.new_tensor(float(max(k - 1, 1)))
        else:
            n = mask.sum()
            var = var * n / (n - 1).clamp_min(1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor | None, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries; padding stays 0. ``shift_mean=False`` keeps the mean
    (TRL whitens rewards that way)."""
    mean = masked_mean(x, mask)
    centred = x - mean
    out = centred * torch.rsqrt(_masked_var_centred(centred, mask, True) + eps)
    if not shift_mean:
        out = out + mean
    return out if mask is None else out * mask


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
                mask: torch.Tensor | None, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate ``-min(r A, clip(r, 1-eps, 1+eps) A)``, as a masked *sum* (the caller divides),
    and detached statistics: ``approx_kl`` (Schulman's ``(r - 1) - log r`` estimator, as SB3/CleanRL) and
    ``clip_fraction``, both masked sums too."""
    log_ratio = new_logprob - old_logprob
    ratio = torch.exp(log_ratio)
    neg_adv = -advantages
    loss = masked_sum(torch.max(neg_adv * ratio, neg_adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)), mask)
    with torch.no_grad():
        ratio_m1 = ratio - 1
        stats = {
            "approx_kl": masked_sum(ratio_m1 - log_ratio, mask),
            "clip_fraction": masked_sum((ratio_m1.abs() > clip_range).to(ratio.dtype if mask is None else mask.dtype),
                                        mask),
            "ratio": masked_sum(ratio, mask),
        }
    return loss, stats


def value_loss(new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None,
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


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[y - y_pred] / Var[y] over masked entries (SB3's ``train/explained_variance``); nan if Var[y]=0."""
    var_y = masked_var(y_true, mask, unbiased=False)
    if var_y.item() == 0:
        return float("nan")
    return float(1 - masked_var(y_true - y_pred, mask, unbiased=False) / var_y)


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
    """What :func:`ppo_update` needs to run on several processes (:class:`agents.distributed.Dist` has it)."""

    world_size: int

    def all_reduce_sum(self, x: torch.Tensor | float) -> torch.Tensor: ...

    def global_masked_whiten(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def no_sync(self, prepared: Any) -> contextlib.AbstractContextManager[None]: ...

    def backward(self, loss: torch.Tensor) -> None: ...


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


def iterate_minibatches(n: int, size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Row indices of one epoch, shuffled; the last minibatch may be smaller (SB3 and CleanRL alike)."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, size):
        yield perm[start : start + size]


def index_batch(batch: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    """Select rows ``idx`` (1-D integer indices) of every tensor (and every nested dict of tensors) in ``batch``."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.index_select(0, idx if idx.device == v.device else idx.to(v.device))
        elif isinstance(v, dict):
            out[k] = index_batch(v, idx)
        else:
            out[k] = v
    return out


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``; for torch's own optimizers without its profiler scope (10 us)."""
    if type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
    else:  # a wrapper (accelerate's ...) may do more
        optimizer.zero_grad(set_to_none=True)


def _foreach_clip_ok(params: list[torch.nn.Parameter]) -> bool:
    """Whether :func:`clip_grad_norm` may take its one-group path: plain tensors on one device (CPU or CUDA), one
    dtype."""
    return bool(params) and all(type(p) in (torch.Tensor, torch.nn.Parameter) and not p.is_sparse for p in params) \
        and len({(p.device, p.dtype) for p in params}) == 1 and params[0].device.type in ("cpu", "cuda")


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float, one_group: bool | None = None) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)``: the same operations, so the same numbers, without its
    per-call grouping and dispatch overhead when ``params`` are one device and dtype (``one_group``, from
    :func:`_foreach_clip_ok` when None); torch's function otherwise. Returns the total norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not (_foreach_clip_ok(params) if one_group is None else one_group):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    with torch.no_grad():
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(float(max_norm) / (total + 1e-6), max=1.0))
    return total


def ppo_update(
    policy: EvaluatesActions,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    cfg: PPOUpdateConfig,
    generator: torch.Generator | None = None,
    autocast: Callable[[], Any] | None = None,
    dist: DataParallel | None = None,
) -> dict[str, float]:
    """Run PPO's epochs x minibatches on one batch and return the mean statistics (SB3's ``train/`` keys).

    ``batch`` holds ``actions``, ``logprobs``, ``values``, ``advantages``, ``returns`` and ``mask``, all
    ``(N, T)``, plus whatever the policy's ``evaluate`` reads (observations, input ids ...).

    ``dist`` (data parallel, optional): ``batch`` is this process's share of the global batch,
    ``cfg.minibatch_size`` its share of the global minibatch, and ``policy`` the DDP-prepared one
    (:meth:`agents.distributed.Dist.prepare_policy`). Then advantages are whitened with global statistics, the
    loss is divided by the *global* token count over ``world_size`` (DDP averages gradients, so the step equals
    one process's on the whole minibatch), micro-batches but the last skip the all-reduce (``no_sync``), a
    non-finite loss on any process stops every process, and early stopping uses the global approx KL. The
    returned statistics are this process's sums over the global count: :meth:`Dist.all_reduce_mean` of them is
    the global value.

    Speed (small policies are bound by per-operation overhead): when every row of ``mask`` is 1 the masked sums
    skip their products with the mask (the same numbers); with ``ent_coef == 0`` the entropy stays out of the
    graph (its term would add exact zeros); the statistics stay tensors until the end of the update (one
    device-to-host copy), except with ``target_kl``, whose check needs each minibatch's KL before its step.
    """
    if cfg.normalize_advantage not in ("minibatch", "batch", "none"):
        raise ValueError(f"normalize_advantage must be 'minibatch', 'batch' or 'none', got {cfg.normalize_advantage!r}")
    if cfg.target_kl_mode not in ("minibatch", "epoch"):
        raise ValueError(f"target_kl_mode must be 'minibatch' or 'epoch', got {cfg.target_kl_mode!r}")
    mask = batch["mask"].float()
    n = mask.shape[0]
    if cfg.minibatch_size <= 0 or cfg.minibatch_size > n:
        raise ValueError(f"minibatch_size={cfg.minibatch_size} must be in [1, batch size {n}]")
    batch = dict(batch, mask=mask)
    whiten = masked_whiten if dist is None else dist.global_masked_whiten
    if cfg.normalize_advantage == "batch":
        batch["advantages"] = whiten(batch["advantages"], mask)
    full = bool(mask.all())  # every row counts (toy tasks): masked sums need no mask (x * 1 == x)
    micro = cfg.micro_batch_size or cfg.minibatch_size
    params = [p for p in policy.parameters() if p.requires_grad]
    one_group = _foreach_clip_ok(params)
    with_entropy = cfg.ent_coef != 0  # else the entropy is a statistic only: no graph, no backward through it
    eager = cfg.target_kl is not None  # early stopping reads each minibatch's KL before its step
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}

    def log(key: str, value: float, weight: float = 1.0) -> None:
        sums[key] = sums.get(key, 0.0) + value * weight
        counts[key] = counts.get(key, 0.0) + weight

    def log_step(rows: list[list[float]], tok: float, grad_norm: float | None, approx_kl: float | None = None) -> None:
        """Log one optimizer step from its micro-batches' ``[approx_kl, clip_fraction, ratio, pg, vf, ent]`` sums
        (``approx_kl``: the global one under ``dist`` with ``target_kl``)."""
        st = [0.0] * 6
        for row in rows:  # summed in float64 in micro-batch order
            st = [a + b for a, b in zip(st, row)]
        if grad_norm is not None:
            log("train/grad_norm", grad_norm)
        log("train/approx_kl", st[0] / tok if approx_kl is None else approx_kl)
        log("train/clip_fraction", st[1] / tok)
        log("train/policy_gradient_loss", st[3] / tok)
        log("train/value_loss", st[4] / tok)
        log("train/entropy_loss", -st[5] / tok)
        log("train/ratio", st[2] / tok)
        log("train/loss", (st[3] + cfg.vf_coef * st[4] - cfg.ent_coef * st[5]) / tok)

    def sync(last: bool) -> contextlib.AbstractContextManager[None]:
        # gradient accumulation under DDP: all-reduce once, on the last micro-batch (forward included)
        return dist.no_sync(policy) if dist is not None and not last else contextlib.nullcontext()

    # deferred statistics: per step, its micro-batches' stacked sums, its token count and its gradient norm
    pending: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]] = []
    n_updates, stop = 0, False
    for _epoch in range(cfg.n_epochs):
        epoch_kl, epoch_tokens = 0.0, 0.0
        for mb_idx in iterate_minibatches(n, cfg.minibatch_size, generator):
            mb = index_batch(batch, mb_idx)
            mb_n = mb_idx.numel()
            mb_mask = None if full else mb["mask"]
            # the loss is a mean over the minibatch's real tokens
            mb_tokens = mb["mask"].sum().clamp_min(1) if mb_mask is not None else \
                mask.new_tensor(float(mb["mask"].numel()))
            if dist is not None:  # the global minibatch's tokens; DDP's gradient mean over processes restores 1/W
                mb_tokens = (dist.all_reduce_sum(mb["mask"].sum()) / dist.world_size).clamp_min(1 / dist.world_size)
                mb_tokens = mb_tokens.to(mask.dtype)
            mb_adv = mb["advantages"]
            if cfg.normalize_advantage == "minibatch" and mb_n > 1:  # SB3: skip for a single sample
                mb_adv = whiten(mb_adv, mb["mask"] if dist is not None else mb_mask)
            zero_grad(optimizer)
            rows: list[torch.Tensor] = []
            for start in range(0, mb_n, micro):
                sl = slice(start, start + micro)
                # the whole minibatch in one pass (the common case): no second copy of every tensor
                mu = mb if micro >= mb_n else index_batch(mb, torch.arange(mb_n)[sl])
                mu_mask, mu_adv = (None if full else mu["mask"]), mb_adv[sl]
                last_micro = start + micro >= mb_n
                with sync(last_micro), autocast() if autocast is not None else contextlib.nullcontext():
                    new_logprob, entropy, new_value = policy.evaluate(mu)  # (n, T) each
                new_logprob, entropy, new_value = new_logprob.float(), entropy.float(), new_value.float()
                pg_sum, pst = policy_loss(new_logprob, mu["logprobs"], mu_adv, mu_mask, cfg.clip_range)
                vf_sum = value_loss(new_value, mu["values"], mu["returns"], mu_mask, cfg.clip_range_vf,
                                    cfg.vf_clip_takes_max)
                if with_entropy:
                    ent_sum = masked_sum(entropy, mu_mask)
                    loss = (pg_sum + cfg.vf_coef * vf_sum - cfg.ent_coef * ent_sum) / mb_tokens
                else:
                    with torch.no_grad():
                        ent_sum = masked_sum(entropy, mu_mask)
                    loss = (pg_sum + cfg.vf_coef * vf_sum) / mb_tokens
                finite = math.isfinite(loss.item())
                if dist is not None:  # every process decides together: one raising alone would hang the others
                    n_bad = int(dist.all_reduce_sum(float(not finite)))
                    if finite and n_bad:
                        raise FloatingPointError(f"PPO loss is not finite on {n_bad} other process(es); stopping")
                if not finite:
                    raise FloatingPointError(f"PPO loss is {loss.item()} (policy {pg_sum.item():.4g}, value "
                                             f"{vf_sum.item():.4g}, entropy {ent_sum.item():.4g}); stopping")
                with sync(last_micro):
                    if dist is not None:
                        dist.backward(loss)
                    else:
                        loss.backward()
                rows.append(torch.stack([pst["approx_kl"], pst["clip_fraction"], pst["ratio"], pg_sum.detach(),
                                         vf_sum.detach(), ent_sum.detach()]))
            if not eager:
                grad_norm = None
                if cfg.max_grad_norm is not None:
                    grad_norm = clip_grad_norm(params, cfg.max_grad_norm, one_group)
                optimizer.step()
                n_updates += 1
                pending.append((rows, mb_tokens, grad_norm))
                continue
            st_rows = torch.stack(rows).tolist()
            tok = float(mb_tokens)
            kl_sum = 0.0
            for r in st_rows:
                kl_sum += r[0]
            approx_kl = kl_sum / tok
            if dist is not None:  # the same decision on every process
                approx_kl = float(dist.all_reduce_sum(kl_sum)) / (tok * dist.world_size)
            if cfg.target_kl_mode == "minibatch" and approx_kl > 1.5 * cfg.target_kl:
                stop = True  # SB3 stops *before* stepping on this minibatch
                log("train/approx_kl", approx_kl)
                break
            gn = None
            if cfg.max_grad_norm is not None:
                gn = float(clip_grad_norm(params, cfg.max_grad_norm, one_group))
            optimizer.step()
            n_updates += 1
            epoch_kl += approx_kl * tok  # with dist: the global KL
            epoch_tokens += tok
            log_step(st_rows, tok, gn, approx_kl)
        if stop:
            break
        if eager and cfg.target_kl_mode == "epoch" and epoch_tokens and epoch_kl / epoch_tokens > cfg.target_kl:
            break
    if pending:  # one device-to-host copy for the whole update
        stats = torch.stack([r for rows, _, _ in pending for r in rows]).tolist()
        tok_vals = torch.stack([t for _, t, _ in pending]).tolist()
        norms = [g for _, _, g in pending if g is not None]
        norm_vals = iter(torch.stack(norms).tolist() if norms else [])
        i = 0
        for (rows, _, g), tok in zip(pending, tok_vals):
            log_step(stats[i : i + len(rows)], tok, next(norm_vals) if g is not None else None)
            i += len(rows)
    out = {k: sums[k] / counts[k] for k in sums}
    out["train/n_updates"] = float(n_updates)
    out["train/clip_range"] = cfg.clip_range
    out["train/explained_variance"] = explained_variance(batch["values"], batch["returns"], mask)
    out["train/early_stop"] = float(stop)
    if not math.isfinite(out.get("train/approx_kl", 0.0)):
        raise FloatingPointError("approx_kl is not finite; stopping")
    return out
