"""RLHF: a causal-LM policy fine-tuned through a batched TextGen env, with PPO or a critic-free algorithm.

One iteration (Ziegler et al. 2019; "The N Implementation Details of RLHF with PPO", Huang et al. 2024):

1. roll out ``num_envs`` completions through the env, token by token with the KV cache (:mod:`.rollout`);
   with ``group_size`` K, each of ``num_envs / K`` prompts K times;
2. log-probs of the same tokens under the frozen reference model;
3. per-token rewards: ``-kl_coef * KL_t`` (k1) at every token, plus the (processed) score at the last real token;
4. advantages by the algorithm (:mod:`agents.lm.algos`: GAE against a value head for PPO, group baselines for
   GRPO and RLOO, whitened returns for REINFORCE++);
5. epochs x minibatches of the clipped policy loss (:func:`agents.ppo.core.ppo_update`, gradient accumulation
   over micro-batches; PPO adds its value loss, ``kl_loss_coef`` a k3 KL loss);
6. the KL controller adapts ``kl_coef`` (adaptive) or keeps it (fixed).

Data parallel (``accelerate launch``, :class:`agents.distributed.Dist`): ``num_envs`` and
``ppo.minibatch_size`` are global; each process rolls out its share of the envs, which are the global envs
``rank * n_local ... (rank + 1) * n_local - 1``. Env ``g``'s prompt seed and token-sampling generator are derived
from the run's seed, the iteration and ``g`` alone, so N processes roll out exactly the episodes one process
would, and the run does not depend on the number of processes (up to float summation order). Whitening, score
normalisation, the KL of the KL controller, the loss's token count and the logged metrics are global. A group
of ``group_size`` envs never spans two processes (K must divide each process's envs), so group baselines are
computed locally and equal the one-process ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.device import resolve_device
from agents.lm.policy import CausalLMPolicy, apply_lora, model_inputs, train_only_last_layers
from agents.lm.rollout import Rollout, rollout, sample_tokens
from agents.ppo.core import PPOUpdateConfig, masked_mean, ppo_update
from textgym.scorers import make_scorer, score_batch, scorer_spec
from textgym.stats import mean_ci

if TYPE_CHECKING:
    from agents.distributed import Dist


# --------------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------------
@dataclass
class RLHFPPOConfig(PPOUpdateConfig):
    """:class:`agents.ppo.core.PPOUpdateConfig` with RLHF defaults (Huang et al. 2024 / TRL PPO unless noted).

    The same fields, the same meaning, passed to the same :func:`~agents.ppo.core.ppo_update`: only the defaults
    below differ (``ent_coef``, ``vf_clip_takes_max``, ``target_kl`` and ``target_kl_mode`` keep PPO's).
    """

    n_epochs: int = 2
    """passes over the batch per update"""
    minibatch_size: int = 16
    """samples (rows of the batch) per gradient step"""
    micro_batch_size: int | None = 8
    """rows per forward/backward pass; gradients accumulate over a minibatch (None: the whole minibatch)"""
    clip_range: float = 0.2
    """PPO clip epsilon for the policy ratio"""
    clip_range_vf: float | None = 0.2
    """clip the value change to this (lm-human-preferences and TRL clip values at 0.2)"""
    vf_coef: float = 0.1
    """value loss coefficient (TRL's vf_coef=0.1 on its 0.5*MSE; ours is a plain MSE)"""
    max_grad_norm: float | None = 1.0
    """clip the global gradient norm (None: no clipping)"""
    normalize_advantage: str = "batch"
    """'batch' (whiten once over the batch, as lm-human-preferences/TRL), 'minibatch' or 'none'"""


@dataclass
class RLHFConfig:
    """Everything that defines an RLHF run; ``textgym train`` generates one flag per field."""

    task: str = "TextGen-Sentiment-v0"
    """registered env id, or its short name (sentiment, sql, data-analysis, copy, ...), whose prompts and scorer
    define the task"""
    model: str | None = None
    """causal LM: a local folder or a cached hub id (None: the embedded SmolLM2-135M-Instruct)"""
    out: str = "runs/rlhf"
    """run folder: metrics.csv, plot.png, samples.md, checkpoint/, final/ (the exported model)"""
    iterations: int = 12
    """iterations (one rollout batch + one update each)"""
    algo: str = "ppo"
    """the algorithm (agents/lm/algos): 'ppo' (value head + GAE), or the critic-free 'grpo' (group mean/std
    baseline), 'rloo' (leave-one-out baseline), 'reinforce++' (whitened returns); see docs/rlhf.md, Algorithms"""
    group_size: int = 1
    """completions per prompt in a rollout (K; num_envs / K prompts): grpo and rloo need K >= 2"""
    group_std_scaling: bool = True
    """grpo: divide each advantage by its group's reward std (False: Dr.GRPO, mean-centred only)"""
    loss_agg: str = "token-mean"
    """how per-token losses become one: 'token-mean' (over the minibatch's tokens), 'seq-mean-token-mean' (each
    completion's mean, then the mean over completions, GRPO's paper) or 'seq-mean-token-sum-norm' (each
    completion's sum over max_new_tokens, then the mean: Dr.GRPO)"""
    drop_zero_std_groups: bool = False
    """dynamic sampling (DAPO): leave the groups whose completions all scored the same out of the loss (they
    carry no signal); logged as rlhf/dropped_groups"""
    seed: int = 0
    """seeds prompts, sampling, the value head and minibatch order"""
    tokenizer: str | None = None
    """tokenizer override (None: the task's for the default model, else the model's own folder)"""
    prompts: str | None = None
    """prompt source override (a file, 'builtin:NAME' or 'gen:NAME'; None: the task's)"""
    prompt_kwargs: dict[str, Any] | None = None
    """arguments of a generated prompt source, as JSON: difficulty ('{"kinds": ["max", "min"], "max_rows": 4}') or a
    curriculum ('{"curriculum": [["max", "min"], ["argmax", "argmin"]], "threshold": 0.6}')"""
    gold_scorer: str | dict[str, Any] | None = None
    """a second scorer, logged every iteration as rlhf/gold_score_mean beside the training score and never trained
    on: when the training score rises while the gold falls, the policy over-optimises the training scorer"""
    scorer: str | dict[str, Any] | None = None
    """scorer override (None: the task's): a name ('vader'), 'reward-model:PATH' (a reward model folder written
    by `textgym train-rm`), or a JSON object of a name and its arguments, e.g. '{"name": "reward-model", "path":
    "rm/", "device": "cuda"}'"""
    num_envs: int = 32
    """completions per iteration (the rollout batch)"""
    max_new_tokens: int | None = 16
    """completion budget in tokens (None: the task's)"""
    temperature: float = 1.0
    """sampling temperature, also applied to the log-probs PPO trains on (Huang et al. 2024)"""
    top_k: int = 0
    """sample from the k most likely tokens only (0: off); the rollout's and the update's log-probs are those of the
    truncated, renormalised distribution, the KL is to the untruncated reference (see docs/rlhf.md)"""
    top_p: float = 1.0
    """nucleus sampling: the most likely tokens of total probability >= top_p (1: off), as top_k"""
    stop_strings: list[str] | None = None
    """strings that end a completion, e.g. --stop-strings . ! ? (None: the task's)"""
    lr: float = 3e-6
    """Adam learning rate (LoRA usually wants ~1e-4)"""
    adam_eps: float = 1e-5
    """Adam epsilon (lm-human-preferences and CleanRL use 1e-5)"""
    lora: bool = False
    """train a LoRA adapter (peft) instead of all weights; the reference is the base with the adapter off"""
    lora_r: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA alpha (scale alpha / r)"""
    trainable_layers: int | None = None
    """train only the last N transformer blocks + final norm (None: all weights); the backward pass stops
    there, which makes CPU runs affordable"""
    separate_critic: bool = False
    """a second copy of the trunk for the value (default: the value head shares the policy's trunk)"""
    value_head_init: str = "zeros"
    """'zeros' (V starts at 0, so the first advantages are the returns, not value-head noise: with SmolLM2 the
    'normal' init gave value errors 10x the score variance) or 'normal' (std 1/sqrt(d+1), lm-human-preferences)"""
    kl_coef: float = 0.05
    """initial coefficient of the per-token KL penalty to the reference model (Ziegler et al. 2019)"""
    kl_estimator: str = "k1"
    """the KL estimate in the per-token reward: 'k1' (log p - log q, Ziegler et al. 2019), the only one whose
    expected gradient there is that of the KL; for k3 use kl_loss_coef (docs/rlhf.md, "KL forms")"""
    kl_loss_coef: float = 0.0
    """coefficient of a KL(pi || pi_ref) *loss* term, k3 ('low-variance KL') weighted by the ratio so that its
    gradient is the KL's (0: off; GRPO's setup is --kl-coef 0 --kl-loss-coef 0.04)"""
    adaptive_kl: bool = True
    """adapt kl_coef towards kl_target (Ziegler et al. 2019's controller); False keeps it fixed"""
    kl_target: float = 2.0
    """target KL per sequence (nats) for the adaptive controller"""
    kl_horizon: int | None = None
    """horizon of the adaptive controller in samples (Ziegler et al. 2019): each iteration multiplies kl_coef by
    1 + clip(KL/target - 1, -0.2, 0.2) * num_envs / kl_horizon. None: num_envs (one iteration), so kl_coef moves
    by a factor of up to 1.2 an iteration, on the time scale of a short run; Ziegler's 10000 suits millions of
    samples (with 64 an iteration it moved kl_coef by a factor of 1.0013 at most)"""
    score_norm: str = "none"
    """'none'; 'batch' whitens scores over the batch; 'running' divides by a running std (Ziegler et al.
    normalise the reward model's scale)"""
    score_clip: float | None = None
    """clip processed scores to [-c, c] (None: no clipping)"""
    missing_eos_penalty: float | None = None
    """subtract this from the score of a completion with no EOS (N+ TL;DR paper; TRL missing_eos_penalty)"""
    gamma: float = 1.0
    """discount (1: the sequence is short and the score comes at its end; Ziegler et al.)"""
    gae_lambda: float = 0.95
    """GAE lambda (lm-human-preferences / TRL)"""
    ppo: RLHFPPOConfig = field(default_factory=RLHFPPOConfig)
    """update settings (epochs, minibatches, clip ranges; every algo's loss is the clipped ratio)"""
    n_samples: int = 8
    """prompts shown before/after training in samples.md (greedy completions)"""
    checkpoint_every: int = 4
    """write a checkpoint every N iterations (and at the end)"""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ..."""
    precision: str = "auto"
    """'auto' (bf16 autocast on CUDA with bf16, and on CPUs whose torch reports AMX or AVX512-BF16; else fp32),
    'fp32' or 'bf16' (an error where the device has no bf16). Master weights, Adam, log-softmax, losses and KL
    stay fp32 either way"""
    allow_precision_change: bool = False
    """let --resume continue a checkpoint written in another precision (refused otherwise)"""
    trunk_reuse: bool = True
    """with --trainable-layers N (0 < N < blocks): keep the frozen bottom blocks' output as the rollout decodes and
    run only the top N blocks in every later pass (the reference's, each PPO epoch and minibatch); False runs every
    block in every pass (the slower path, kept for benchmarks/rlhf_iteration.py)"""
    recompute_logprobs: bool | None = None
    """recompute the rollout's log-probs and values in one forward over the finished sequences, the update's own
    path, before the PPO epochs (None: on under bf16, where the cached decode and a full forward round differently
    and the first ratio would not be 1; in fp32 they agree to ~1e-6)"""
    num_threads: int | None = None
    """torch.set_num_threads (None: torch's default)"""
    tensorboard: bool = True
    """also write TensorBoard events to DIR/tb"""
    progress: bool = True
    """show a tqdm progress bar"""


# fields that may differ when a run is resumed: where and how it runs, not what it computes
RESUMABLE_FIELDS = ("iterations", "out", "device", "num_threads", "checkpoint_every", "tensorboard", "progress",
                    "precision", "allow_precision_change", "trunk_reuse")
# (the precision a checkpoint was computed in is checked against the resolved one: RLHFTrainer.load_state_dict)
REMOVED_FIELDS = ("bf16",)
"""fields of older configs that no longer exist (``bf16``, now ``precision``): ignored on resume"""


def config_dict(cfg: RLHFConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the fields it lacks (added after it was written) at their defaults, nested ones too."""
    out = {**defaults, **saved}
    for k, v in defaults.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _with_defaults(out[k], v)
    return out


def config_differences(saved: dict[str, Any], cfg: RLHFConfig) -> list[str]:
    """Fields (other than :data:`RESUMABLE_FIELDS`) whose values differ between a saved config and ``cfg``; a
    field newer than the saved config counts at its default (a run from before ``algo`` existed was ``ppo``)."""
    now = config_dict(cfg)
    saved = _with_defaults(saved, config_dict(RLHFConfig()))
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys
            if k not in RESUMABLE_FIELDS + REMOVED_FIELDS and saved.get(k) != now.get(k)]


def validate(cfg: RLHFConfig) -> None:
    """Raise ``ValueError`` naming the field for values that cannot work."""
    checks = [
        (cfg.iterations >= 0, f"iterations must be >= 0, got {cfg.iterations}"),
        (cfg.num_envs >= 1, f"num_envs must be >= 1, got {cfg.num_envs}"),
        (cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
         f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}"),
        (cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}"),
        (isinstance(cfg.top_k, int) and cfg.top_k >= 0, f"top_k must be an int >= 0 (0: off), got {cfg.top_k!r}"),
        (0 < cfg.top_p <= 1, f"top_p must be in (0, 1] (1: off), got {cfg.top_p!r}"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.kl_coef >= 0, f"kl_coef must be >= 0, got {cfg.kl_coef}"),
        (cfg.kl_estimator != "k3", "kl_estimator='k3' in the reward is refused: a detached k3 reward's expected "
         "gradient is not the gradient of the KL (it barely pulls the policy back to the reference; "
         "docs/rlhf.md, \"KL forms\"). Keep --kl-estimator k1 (the default), or put k3 in the loss: "
         "--kl-coef 0 --kl-loss-coef 0.04"),
        (cfg.kl_estimator == "k1", f"kl_estimator must be 'k1', got {cfg.kl_estimator!r}"),
        (cfg.kl_loss_coef >= 0, f"kl_loss_coef must be >= 0 (0: no KL loss), got {cfg.kl_loss_coef}"),
        (cfg.score_norm in ("none", "batch", "running"),
         f"score_norm must be 'none', 'batch' or 'running', got {cfg.score_norm!r}"),
        (cfg.value_head_init in ("normal", "zeros"),
         f"value_head_init must be 'normal' or 'zeros', got {cfg.value_head_init!r}"),
        (1 <= cfg.ppo.minibatch_size <= cfg.num_envs,
         f"ppo.minibatch_size={cfg.ppo.minibatch_size} must be in [1, num_envs={cfg.num_envs}]"),
        (cfg.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}"),
        (cfg.precision in PRECISIONS, f"precision must be 'auto', 'fp32' or 'bf16', got {cfg.precision!r}"),
        (not (cfg.lora and cfg.separate_critic), "lora and separate_critic together are not supported; pick one"),
        (not (cfg.lora and cfg.trainable_layers is not None), "lora and trainable_layers together: pick one"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    validate_algo(cfg)
    if cfg.scorer is not None:
        if not isinstance(cfg.scorer, (str, dict)):
            raise ValueError(f"scorer must be a name, 'reward-model:PATH' or a dict with 'name', got {cfg.scorer!r}")
        scorer_spec(cfg.scorer)  # before any model is loaded: says what to write
    if cfg.gold_scorer is not None:
        scorer_spec(cfg.gold_scorer)


LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
CRITIC_FIELDS = ("separate_critic", "value_head_init", "gae_lambda", "ppo.vf_coef", "ppo.clip_range_vf",
                 "ppo.vf_clip_takes_max", "ppo.normalize_advantage")
"""settings of PPO's critic and of its advantage whitening: an error with a critic-free algo, whose estimator
defines its own baseline and normalisation"""


def validate_algo(cfg: RLHFConfig) -> None:
    """Raise ``ValueError`` for an unknown algo, a group size it cannot use, or PPO-only settings given to a
    critic-free algo."""
    from agents.lm.algos import ALGORITHMS, make_algorithm

    algo = make_algorithm(cfg.algo)  # lists the valid names
    if not isinstance(cfg.group_size, int) or cfg.group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {cfg.group_size!r}")
    if cfg.group_size < algo.min_group_size:
        raise ValueError(f"--algo {cfg.algo} needs --group-size >= {algo.min_group_size} (its baseline compares the "
                         f"completions of one prompt), got {cfg.group_size}; pass e.g. --group-size 4")
    if cfg.num_envs % cfg.group_size:
        raise ValueError(f"--group-size {cfg.group_size} must divide --num-envs {cfg.num_envs} (num_envs / group_size "
                         "prompts, each completed group_size times)")
    if cfg.loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {cfg.loss_agg!r}")
    if cfg.drop_zero_std_groups and cfg.group_size < 2:
        raise ValueError("drop_zero_std_groups needs groups: pass --group-size 2 or more")
    if not algo.needs_critic:
        default, now = config_dict(RLHFConfig()), config_dict(cfg)
        for name in CRITIC_FIELDS:
            top, _, sub = name.partition(".")
            a, b = (default[top], now[top]) if not sub else (default[top][sub], now[top][sub])
            if a != b:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {b} is a setting of PPO's critic or its advantage whitening, and --algo "
                                 f"{cfg.algo} has none (no value head; its estimator sets the baseline); drop "
                                 f"{flag}, or use --algo ppo. Algorithms: {', '.join(ALGORITHMS)}")


# --------------------------------------------------------------------------------------------------------
# RLHF pieces (pure functions)
# --------------------------------------------------------------------------------------------------------
def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, ``(N, T)``.

    k1 = log pi - log pi_ref (Ziegler et al. 2019; unbiased); k3 = (r - 1) - log r with r = pi_ref / pi
    (Schulman, "Approximating KL divergence", 2020; unbiased, nonnegative, lower variance).
    """
    log_ratio = logprobs - ref_logprobs  # log pi/pi_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be 'k1' or 'k3', got {estimator!r}")


def zero_std_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(G,)`` bool: the groups of ``group_size`` consecutive rows whose scores are all equal (their group
    baseline leaves no signal: every advantage is 0)."""
    g = scores.reshape(-1, group_size)  # (G, K)
    return (g == g[:, :1]).all(-1)


def check_groups_share_prompts(prompt_ids: torch.Tensor, group_size: int) -> None:
    """Raise when the rows of a group were given different prompts (a prompt source that does not draw the
    same prompt from the same seed would silently break the group baselines)."""
    if group_size > 1:
        g = prompt_ids.reshape(-1, group_size, prompt_ids.shape[-1])  # (G, K, P)
        if not (g == g[:, :1]).all():
            raise RuntimeError("the completions of a group got different prompts: the prompt source does not "
                               "draw the same prompt from the same seed; use --group-size 1 with it")


def loss_weights(mask: torch.Tensor, agg: str, max_new_tokens: int) -> torch.Tensor:
    """``(N, T)`` per-token weights of a per-row loss aggregation (:func:`agents.ppo.core.ppo_update` divides
    the weighted sum by the number of rows): 'seq-mean-token-mean' weighs each completion's tokens by 1 / its
    length; 'seq-mean-token-sum-norm' (Dr.GRPO, Liu et al. 2025) by 1 / max_new_tokens, a constant, so a long
    completion's tokens count as much as a short one's."""
    if agg == "seq-mean-token-mean":
        return mask / mask.sum(-1, keepdim=True).clamp_min(1)
    if agg == "seq-mean-token-sum-norm":
        return mask / max_new_tokens
    raise ValueError(f"loss_weights is for the per-row aggregations, got {agg!r}")


def last_token_onehot(mask: torch.Tensor) -> torch.Tensor:
    """1 at each row's last real token of a right-padded ``(N, T)`` mask (rows with no token: all 0)."""
    lengths = mask.long().sum(-1)  # (N,)
    cols = torch.arange(mask.shape[1], device=mask.device)
    return ((cols[None, :] == (lengths - 1)[:, None]) & (lengths > 0)[:, None]).to(torch.float32)


def rlhf_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                 token_rewards: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``(N, T)``: ``-kl_coef * KL_t`` at every real token (Ziegler et al. 2019: the KL is a
    per-token reward, not a loss term), plus the sequence score at the last real token (TRL; Huang et al.
    2024), plus optional per-token env rewards. Returns ``(rewards, non_score_rewards)``."""
    mask = mask.float()
    non_score = -kl_coef * kl * mask  # (N, T)
    rewards = non_score + scores[:, None].float() * last_token_onehot(mask)
    if token_rewards is not None:
        rewards = rewards + token_rewards * mask
    return rewards, non_score


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: ``beta *= 1 + clip(KL/target - 1, -0.2, 0.2) * n / horizon``, a
    proportional rule on log(beta). ``n`` samples were used for the KL; the trainer's horizon defaults to one
    iteration's samples (``RLHFConfig.kl_horizon``), so beta changes by up to 20% per iteration."""

    def __init__(self, init: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"the adaptive KL controller needs target > 0 and horizon > 0, got target={target}, "
                             f"horizon={horizon}")
        self.value, self.target, self.horizon = float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController(AdaptiveKLController):
    """A constant KL coefficient (Ziegler et al. 2019 also report fixed beta)."""

    def __init__(self, init: float) -> None:
        super().__init__(init, 1.0, 1)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class RunningMoments:
    """Running mean/std of scores (Welford/Chan); used to scale scores to unit std (Ziegler et al. 2019)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor) -> None:
        x = x.double()
        n, mean, var = x.numel(), float(x.mean()), float(x.var(unbiased=False)) if x.numel() > 1 else 0.0
        delta, tot = mean - self.mean, self.count + n
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / tot) / tot
        self.mean, self.count = self.mean + delta * n / tot, tot

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-12))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, s: dict[str, float]) -> None:
        self.mean, self.var, self.count = s["mean"], s["var"], s["count"]


def process_scores(scores: torch.Tensor, ended: torch.Tensor, cfg: RLHFConfig,
                   moments: RunningMoments, dist: Dist | None = None) -> torch.Tensor:
    """Missing-EOS penalty, then normalisation, then clipping, in that order (TRL's order). With ``dist``,
    ``scores`` is this process's share and the normalisation uses the statistics of the global batch."""
    s = scores.float().clone()
    if cfg.missing_eos_penalty is not None:
        s[~ended] -= cfg.missing_eos_penalty  # N+ TL;DR paper: penalise completions cut by the budget (not EOS/stop)
    n_global = s.numel() if dist is None else int(dist.all_reduce_sum(float(s.numel())))
    if cfg.score_norm == "batch" and n_global > 1:
        if dist is None:
            s = (s - s.mean()) / (s.std() + 1e-8)  # whiten over the batch (Huang et al. 2024, "reward whitening")
        else:
            ones = torch.ones_like(s)
            s = (s - dist.global_masked_mean(s, ones)) / (dist.global_masked_var(s, ones).sqrt() + 1e-8)
    elif cfg.score_norm == "running":
        moments.update(s if dist is None else dist.gather(s))  # every process: the same global update
        s = s / moments.std  # unit scale, mean kept (Ziegler et al. 2019 normalise the reward's scale)
    if cfg.score_clip is not None:
        s = s.clamp(-cfg.score_clip, cfg.score_clip)
    return s


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively, as this torch build reports it (AMX tiles or AVX512-BF16).

    ``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported`` are the only query torch has (private
    names; a build without them counts as no support). Without either, bf16 is emulated: on an AVX2 EPYC with
    torch 2.13, one thread, a 1024 x 576 x 1536 bf16 matmul ran at 1.4 GFLOP/s against 73 in fp32.
    """
    return any(bool(getattr(torch.cpu, name, lambda: False)())
               for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def resolve_precision(spec: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` for ``spec`` (``auto|fp32|bf16``) on ``device``; bf16 where it is not native is
    an error (it would run, emulated, many times slower than fp32)."""
    if spec not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {spec!r}")
    if spec == "fp32":
        return "fp32"
    if device.type == "cuda":
        native, where = torch.cuda.is_bf16_supported(), f"the GPU {torch.cuda.get_device_name(device)}"
    else:
        native = device.type == "cpu" and cpu_supports_bf16()
        where = f"this {device.type} (torch reports {torch.backends.cpu.get_cpu_capability()}, neither AMX nor " \
                "AVX512-BF16)" if device.type == "cpu" else f"the device {device}"
    if spec == "auto":
        return "bf16" if native else "fp32"
    if not native:
        raise ValueError(f"precision='bf16': {where} has no native bf16, where it runs emulated and far slower "
                         "than fp32; pass --precision auto or fp32")
    return "bf16"


def make_dist(cfg: RLHFConfig) -> Dist:
    """The :class:`~agents.distributed.Dist` of a run: accelerate's when launched with several processes
    (``accelerate launch``/``torchrun``), else plain torch on ``cfg.device`` (one process, no accelerate)."""
    from agents.distributed import Dist, launched_world_size

    if launched_world_size() > 1:
        if cfg.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device={cfg.device!r}: under several processes each process's GPU is chosen by "
                             "accelerate (its local rank); pass --device auto, cuda or cpu")
        cpu = True if cfg.device == "cpu" else (False if cfg.device == "cuda" else None)
        return Dist(cpu=cpu, mixed_precision="no")  # bf16 autocast is the trainer's own (cfg.precision)
    return Dist(cpu=resolve_device(cfg.device).type != "cuda", use_accelerate=False)


def sampling_seed(seed: int, iteration: int, env_index: int) -> int:
    """Seed of the token-sampling generator of global env ``env_index`` at ``iteration``: a function of these
    alone, so the tokens do not depend on how the envs are split across processes (nor on a resume)."""
    return int(np.random.SeedSequence([seed, iteration, env_index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# --------------------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------------------
class RLHFTrainer:
    """Builds env, policy, reference and optimizer from an :class:`RLHFConfig`, and runs iterations
    (:meth:`run_iteration`) of ``cfg.algo`` (:mod:`agents.lm.algos`). An :class:`agents.base.Agent`:
    :meth:`predict`, :meth:`learn`, :meth:`save`, :meth:`load`.

    ``model`` overrides ``cfg.model`` with a loaded model object or a folder (tests, notebooks).
    """

    def __init__(self, cfg: RLHFConfig, model: Any = None, env: Any = None, dist: Dist | None = None) -> None:
        from agents.lm.algos import make_algorithm

        validate(cfg)
        self.cfg = cfg
        self.algo = make_algorithm(cfg.algo)
        self.dist = dist if dist is not None else make_dist(cfg)
        self.num_local_envs = self.dist.local_size(cfg.num_envs, "num_envs")
        if self.num_local_envs % cfg.group_size:  # a group's completions stay in one process (docs/rlhf.md)
            raise ValueError(f"--group-size {cfg.group_size} must divide the {self.num_local_envs} envs of each of the "
                             f"{self.dist.world_size} processes (num_envs {cfg.num_envs} / processes), so that every "
                             "group stays in one process; pick num_envs a multiple of group_size x processes")
        self.local_minibatch_size = self.dist.local_size(cfg.ppo.minibatch_size, "ppo.minibatch_size")
        if cfg.num_threads is not None:
            torch.set_num_threads(int(cfg.num_threads))
        torch.manual_seed(cfg.seed)  # the same initial weights (value head) on every process
        self.device = self.dist.device if self.dist.distributed else resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)  # before the model loads: fail fast
        self.model_given = model is not None  # save() then writes the starting model beside the checkpoint
        self.policy = CausalLMPolicy(model if model is not None else cfg.model, temperature=cfg.temperature,
                                     top_k=cfg.top_k, top_p=cfg.top_p, separate_critic=cfg.separate_critic,
                                     value_head_init=cfg.value_head_init, value_head=self.algo.needs_critic)
        self.env = env if env is not None else self.make_env()
        self.policy.vocab_size = int(self.env.vocab_size)
        self.policy.check_action_size(self.env.action_size)
        # the reference: frozen copies of what trains, run through the policy's own forward (policy.swapped);
        # with LoRA, the same weights with the adapter disabled (no copy)
        self.ref_parts: dict[str, torch.nn.Module] | None = None
        if cfg.lora:
            apply_lora(self.policy, r=cfg.lora_r, alpha=cfg.lora_alpha)
        else:
            if cfg.trainable_layers is not None:
                train_only_last_layers(self.policy, cfg.trainable_layers)
            self.ref_parts = {k: m.to(self.device) for k, m in self.policy.reference_parts().items()}
        self.reuse_trunk = cfg.trunk_reuse and self.policy.frozen_blocks > 0
        self.recompute = self.precision == "bf16" if cfg.recompute_logprobs is None else cfg.recompute_logprobs
        self.policy.to(self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps)
        # train_policy: what ppo_update calls (DDP's forward under several processes); self.policy: the rest
        self.train_policy: Any = self.policy
        if self.dist.distributed:
            self.train_policy, self.optimizer = self.dist.prepare_policy(self.policy, self.optimizer)
        self.kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon or cfg.num_envs)
                       if cfg.adaptive_kl else FixedKLController(cfg.kl_coef))
        self.moments = RunningMoments()
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch order
        # token sampling when collect() gets no row seeds (training rollouts seed each env: sampling_seed)
        self.sample_generator = torch.Generator(device=self.device).manual_seed(self.dist.seed_for_rank(cfg.seed) + 1)
        self.gold_scorer = make_scorer(cfg.gold_scorer) if cfg.gold_scorer is not None else None
        self.iteration = 0
        self.num_timesteps = 0  # completion tokens rolled out in training (env steps, for Agent.learn)

    # -- construction helpers ---------------------------------------------------------------------------
    def make_env(self) -> Any:
        """This process's ``BatchedTextGenEnv`` for ``cfg.task`` (:meth:`BatchedTextGenEnv.from_id`), with the
        config's overrides and the model's output size as the action space."""
        from textgym.envs.vector import BatchedTextGenEnv
        from textgym.registration import resolve_task

        cfg = self.cfg
        overrides: dict[str, Any] = {k: getattr(cfg, k) for k in ("prompts", "scorer", "max_new_tokens",
                                                                  "stop_strings", "prompt_kwargs")
                                     if getattr(cfg, k) is not None}
        if cfg.tokenizer is not None:
            overrides["tokenizer"] = cfg.tokenizer
        elif cfg.model not in (None, "default"):
            overrides["tokenizer"] = cfg.model  # a model's own tokenizer
        try:
            return BatchedTextGenEnv.from_id(resolve_task(cfg.task), self.num_local_envs, autoreset_mode="disabled",
                                             action_size=self.policy.out_size, **overrides)
        except ValueError as e:
            if not str(e).startswith("action_size="):
                raise
            raise ValueError(f"the tokenizer {overrides.get('tokenizer', 'of ' + cfg.task)!r} and the model "
                             f"{cfg.model or 'default'!r} ({self.policy.out_size} logits) do not belong together: "
                             f"{e} Pass the model's own tokenizer (--tokenizer) or a matching --model.") from e

    def autocast(self) -> Callable[[], Any] | None:
        """bf16 autocast for the forward passes under ``precision`` bf16 (weights and Adam stay fp32), else None."""
        if self.precision == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return None

    @contextlib.contextmanager
    def _maybe_autocast(self) -> Iterator[None]:
        ac = self.autocast()
        with ac() if ac is not None else contextlib.nullcontext():
            yield

    # -- one iteration ----------------------------------------------------------------------------------
    @torch.no_grad()
    def ref_logprobs(self, r: Rollout, boundary: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs ``(N, T)`` of the rollout's completions under the frozen reference, through the policy's
        own forward (same temperature and vocabulary mask; no top-k / top-p: the KL is that of the sampling
        distribution to the whole reference distribution, finite where the policy samples); ``boundary``: trunk
        reuse (the frozen blocks' output, shared by policy and reference)."""
        T = r.completion_ids.shape[1]
        with (self.policy.model.disable_adapter() if self.ref_parts is None else  # LoRA: the base weights
              self.policy.swapped(self.ref_parts)), self._maybe_autocast():
            lp = self.policy.sequence_logprobs(r.input_ids, r.attention_mask, T, boundary, truncate=False)
        return lp * r.completion_mask

    @torch.no_grad()
    def full_forward(self, r: Rollout) -> dict[str, torch.Tensor]:
        """One pass over the finished sequences, in micro-batches of rows: ``boundary`` (trunk reuse: the frozen
        blocks' output, reused by every PPO pass; the rollout's own, decoded, when it kept it, else computed
        here), ``ref_logprobs``, and, with recomputation on, the policy's ``logprobs`` and ``values`` from the
        update's own path (else the rollout's). With trunk reuse all of it runs only the top blocks."""
        n, step = r.completion_ids.shape[0], self.cfg.ppo.micro_batch_size or self.local_minibatch_size
        parts: dict[str, list[torch.Tensor]] = {"boundary": [], "ref_logprobs": [], "logprobs": [], "values": []}
        for s in range(0, n, step):
            rows = r.rows(slice(s, s + step))
            with self._maybe_autocast():
                b = rows.boundary
                if b is None and self.reuse_trunk:
                    b = self.policy.boundary_states(rows.input_ids, rows.attention_mask)
                if self.recompute:
                    lp, _, v = self.policy.evaluate({"actions": rows.completion_ids, "input_ids": rows.input_ids,
                                                     "attention_mask": rows.attention_mask, "boundary": b,
                                                     "support": rows.support})
                    parts["logprobs"].append(lp * rows.completion_mask)
                    parts["values"].append(v * rows.completion_mask)
            parts["ref_logprobs"].append(self.ref_logprobs(rows, b))
            if b is not None:
                parts["boundary"].append(b)
        out = {k: torch.cat(v) for k, v in parts.items() if v}
        out.setdefault("logprobs", r.logprobs)
        out.setdefault("values", r.values)
        return out

    @property
    def env_indices(self) -> list[int]:
        """The global indices of this process's envs (rank-major: process r holds a contiguous block)."""
        n = self.num_local_envs
        return list(range(self.dist.rank * n, (self.dist.rank + 1) * n))

    def collect(self, seed: int | list[int] | None = None, greedy: bool = False, prompts: list[Any] | None = None,
                row_seeds: list[int] | None = None, keep_boundary: bool = False) -> Rollout:
        """Roll out this process's envs. ``seed``: the env reset seed (an int seeds env i with ``seed + i``, a list
        one seed per env); ``row_seeds``: one token-sampling seed per env (row i's tokens from its own CPU
        generator, see :func:`agents.lm.rollout.sample_tokens`), else the tokens come from
        ``self.sample_generator``. ``keep_boundary``: keep the frozen blocks' output as it is decoded
        (:attr:`Rollout.boundary`)."""
        self.policy.eval()
        generator: Any = self.sample_generator
        if row_seeds is not None and not greedy:
            generator = [torch.Generator().manual_seed(s) for s in row_seeds]
        with self._maybe_autocast():
            return rollout(self.policy, self.env, prompts=prompts, seed=seed, greedy=greedy,  # type: ignore[arg-type]
                           generator=generator, keep_boundary=keep_boundary)

    def reset_seeds(self) -> list[int]:
        """This process's env reset seeds: global env ``g`` resets with ``base + g - g % group_size``, so the
        ``group_size`` envs of a group draw the same prompt (with group size 1, ``base + g`` as before)."""
        K = self.cfg.group_size
        base = self.cfg.seed * 1_000_003 + self.iteration * self.cfg.num_envs
        return [base + g - g % K for g in self.env_indices]

    def run_iteration(self) -> dict[str, float]:
        """One RLHF iteration, logged globally over every process's envs: rollout -> per-token rewards (score,
        k1 KL) -> the algorithm's advantages -> the update (clipped policy loss) -> the KL controller."""
        cfg, dist = self.cfg, self.dist
        ddp = dist if dist.distributed else None  # one process: ppo_update's plain path, unchanged
        t0 = time.perf_counter()
        envs = self.env_indices
        r = self.collect(seed=self.reset_seeds(), keep_boundary=self.reuse_trunk,
                         row_seeds=[sampling_seed(cfg.seed, self.iteration, g) for g in envs])  # distinct per row
        check_groups_share_prompts(r.prompt_ids, cfg.group_size)
        t1 = time.perf_counter()
        fw = self.full_forward(r)
        mask = r.completion_mask.float()  # (N, T)
        logprobs = fw["logprobs"]  # (N, T): the update's old log-probs
        values = fw["values"] if self.algo.needs_critic else None  # (N, T)
        kl = kl_per_token(logprobs, fw["ref_logprobs"], cfg.kl_estimator) * mask  # (N, T), k1 in the reward
        ended = torch.tensor([i.get("end_reason") != "budget" for i in r.infos], device=r.scores.device)  # EOS/stop
        scores = process_scores(r.scores, ended, cfg, self.moments, ddp)  # (N,) no missing-EOS penalty after a stop
        token_rewards = r.env_rewards - r.scores[:, None] * last_token_onehot(mask)  # per-token env rewards, if any
        rewards, non_score = rlhf_rewards(scores, kl, mask, self.kl_ctl.value, token_rewards)  # (N, T)
        advantages, returns = self.algo.advantages(rewards, mask, values, cfg.group_size, cfg, ddp)  # (N, T)
        zero_std = zero_std_groups(r.scores, cfg.group_size)  # (G,) groups that carry no signal
        batch = self.update_batch(r, fw, mask, advantages, returns, zero_std)
        t2 = time.perf_counter()
        self.policy.train()
        ppo_cfg = dataclasses.replace(cfg.ppo, minibatch_size=self.local_minibatch_size)  # this process's share
        if not self.algo.needs_critic:
            ppo_cfg.normalize_advantage = "none"  # the estimator normalised them (validate refuses another choice)
        if float(dist.all_reduce_sum(batch["mask"].sum())) > 0:
            stats = ppo_update(self.train_policy, self.optimizer, batch, ppo_cfg, generator=self.generator,
                               autocast=self.autocast(), dist=ddp, kl_loss_coef=cfg.kl_loss_coef)
        else:  # dynamic sampling dropped every group: no step (Adam's momentum alone would still move the weights)
            stats = {"train/n_updates": 0.0}
        times = {"time/rollout_s": t1 - t0, "time/forward_s": t2 - t1, "time/update_s": time.perf_counter() - t2}
        for p in self.policy.parameters():  # DDP keeps the weights equal: every process stops together
            if p.requires_grad and not torch.isfinite(p).all():
                raise FloatingPointError("a policy weight became NaN/inf after the update; stopping")
        kl_k1_seq = ((logprobs - fw["ref_logprobs"]) * mask).sum(-1)  # (N,) KL per sequence (k1, always logged)
        self.iteration += 1
        self.num_timesteps += int(dist.all_reduce_sum(mask.sum()))
        stats.update(self._group_metrics(zero_std))
        return self._metrics(r, kl_k1_seq, rewards, non_score, advantages, returns, values, stats, times, t0)

    def update_batch(self, r: Rollout, fw: dict[str, torch.Tensor], mask: torch.Tensor, advantages: torch.Tensor,
                     returns: torch.Tensor | None, zero_std: torch.Tensor) -> dict[str, Any]:
        """The batch :func:`~agents.ppo.core.ppo_update` reads: no values/returns without a critic, the
        reference's log-probs for the KL loss, per-token loss weights for the per-row aggregations, and the
        rows of zero-std groups masked out under dynamic sampling."""
        cfg = self.cfg
        if cfg.drop_zero_std_groups:
            mask = mask * (~zero_std).repeat_interleave(cfg.group_size)[:, None].to(mask)  # (N, T)
        batch = {"actions": r.completion_ids, "logprobs": fw["logprobs"], "advantages": advantages, "mask": mask,
                 "input_ids": r.input_ids, "attention_mask": r.attention_mask}
        if self.algo.needs_critic:
            batch.update(values=fw["values"], returns=returns)
        if cfg.kl_loss_coef:
            batch["ref_logprobs"] = fw["ref_logprobs"]
        if cfg.loss_agg != "token-mean":
            batch["loss_weight"] = loss_weights(mask, cfg.loss_agg, int(self.env.max_new_tokens))
        if "boundary" in fw:
            batch["boundary"] = fw["boundary"]  # (N, P + T, d): every update pass runs only the top blocks
        if r.support is not None:
            batch["support"] = r.support  # (N, T, V): top-k / top-p renormalise over the set kept when sampling
        return batch

    def _group_metrics(self, zero_std: torch.Tensor) -> dict[str, float]:
        """Global ``rlhf/frac_reward_zero_std`` (and ``rlhf/dropped_groups`` under dynamic sampling)."""
        if self.cfg.group_size < 2:
            return {}
        n_zero, n_groups = self.dist.all_reduce_sum(torch.tensor([float(zero_std.sum()), float(zero_std.numel())]))
        out = {"rlhf/frac_reward_zero_std": float(n_zero / n_groups)}
        if self.cfg.drop_zero_std_groups:
            out["rlhf/dropped_groups"] = float(n_zero)
        return out

    def _metrics(self, r: Rollout, kl_k1_seq: torch.Tensor, rewards: torch.Tensor, non_score: torch.Tensor,
                 advantages: torch.Tensor, returns: torch.Tensor | None, values: torch.Tensor | None,
                 stats: dict[str, float],
                 times: dict[str, float], t0: float) -> dict[str, float]:
        """The iteration's log, one key per quantity (SB3's key where SB3 has one), global over the processes;
        also steps the KL controller with the global KL."""
        dist, mask = self.dist, r.completion_mask.float()
        ddp = dist if dist.distributed else None
        # per-episode quantities of the global batch, in global env order (rank-major)
        part_names = sorted(r.infos[0].get("score_parts", {})) if r.infos else []  # the scorer's parts (sql: valid...)
        part_rows = torch.tensor([[i["score_parts"][k] for k in part_names] for i in r.infos],
                                 device=r.scores.device).reshape(len(r.infos), len(part_names))  # (N, K)
        if self.gold_scorer is not None:  # the same completions under the gold scorer: one more column
            env = self.env
            samples = [env.make_sample(p, env.encode_prompt(p), ids[m.bool()].tolist())
                       for p, ids, m in zip(self.env.prompts, r.completion_ids, r.completion_mask)]
            gold = torch.as_tensor(score_batch(self.gold_scorer, samples)[0], dtype=torch.float32)
            part_names, part_rows = [*part_names, "__gold__"], torch.cat([part_rows, gold[:, None].to(part_rows)], 1)
        per_row = torch.cat([torch.stack([r.scores.float(), kl_k1_seq, r.lengths.float(), r.ended_with_eos.float(),
                                          non_score.sum(-1), rewards.sum(-1)], 1), part_rows], 1).detach()  # (N, 6+K)
        g_scores, g_kl, g_len, g_eos, g_non_score, g_total, *g_parts = dist.gather(per_row).cpu().double().T
        kl_mean = float(g_kl.mean())
        self.kl_ctl.update(kl_mean, self.cfg.num_envs)
        score_mean, score_ci = mean_ci(g_scores.numpy())
        if ddp is not None:
            stats = dist.all_reduce_mean(stats)  # ppo_update divides by the global token count: the mean is global
            if returns is not None and values is not None:
                var_y = dist.global_masked_var(returns, mask, unbiased=False)
                stats["train/explained_variance"] = (float("nan") if float(var_y) == 0 else float(
                    1 - dist.global_masked_var(returns - values, mask, unbiased=False) / var_y))
        return {
            "rollout/ep_rew_mean": score_mean,  # SB3's key: the mean score (env reward) of the batch's episodes
            "rollout/ep_rew_ci95": score_ci,  # half-width of its 95% Student-t interval
            "rollout/ep_len_mean": float(g_len.mean()),
            "rlhf/kl_ref": kl_mean,  # KL(policy || reference) per completion, k1, nats
            "rlhf/kl_coef": self.kl_ctl.value,
            "rlhf/non_score_reward": float(g_non_score.mean()),
            "rlhf/total_reward": float(g_total.mean()),
            "rlhf/eos_fraction": float(g_eos.mean()),
            "rlhf/advantage_mean": float(masked_mean(advantages, mask) if ddp is None
                                         else dist.global_masked_mean(advantages, mask)),
            **times, "time/fps": float(g_len.sum()) / max(time.perf_counter() - t0, 1e-9),
            **{"rlhf/gold_score_mean" if k == "__gold__" else f"rollout/score_parts/{k}": float(g.mean())
               for k, g in zip(part_names, g_parts)},
            **stats,
        }

    # -- the Agent protocol (agents/base.py) -------------------------------------------------------------
    @torch.no_grad()
    def predict(self, obs: dict[str, Any], deterministic: bool = False) -> np.ndarray:
        """The next token for an env observation: one (``input_ids``, ``attention_mask`` of shape ``(L,)``; a 0-d
        array back) or a batch (``(n, L)``; ``(n,)`` back). The argmax, or a sample of the training
        distribution (temperature, top-k / top-p)."""
        ids = torch.as_tensor(np.asarray(obs["input_ids"]), device=self.device)
        mask = torch.as_tensor(np.asarray(obs["attention_mask"]), device=self.device)
        single = ids.ndim == 1
        ids, mask = (ids[None], mask[None]) if single else (ids, mask)  # (n, L): prefixes left-aligned
        last = (mask.long().sum(-1) - 1).clamp_min(0)  # (n,) each prefix's last real token
        self.policy.eval()
        with self._maybe_autocast():
            logits, _, _ = self.policy(**model_inputs(ids, mask))  # (n, L, V)
        logits = logits[torch.arange(ids.shape[0], device=ids.device), last]  # (n, V)
        action = (logits.argmax(-1) if deterministic else sample_tokens(logits, self.sample_generator)).cpu().numpy()
        return np.asarray(action[0]) if single else action

    def learn(self, total_timesteps: int) -> RLHFTrainer:
        """Run iterations until ``total_timesteps`` more env steps (completion tokens) have been rolled out;
        the last iteration's metrics are in :attr:`last_metrics`."""
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}")
        target = self.num_timesteps + int(total_timesteps)
        while self.num_timesteps < target:
            self.last_metrics = self.run_iteration()
        return self

    def save(self, path: str | Path) -> Path:
        """Write ``path/config.json`` and ``path/checkpoint/`` (the trainable weights, optimizer, KL controller, RNG
        states, iteration), and, when the trainer got a ``model`` argument rather than ``cfg.model``,
        ``path/reference/``: the starting model, the reference and what the checkpoint's weights apply to."""
        from agents.atomic import atomic_write_text
        from agents.lm.checkpoint import save_checkpoint

        if self.dist.distributed:
            raise ValueError("save()/load() are for one process; under accelerate launch use textgym train's "
                             "checkpoints (--resume)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.model_given:
            self.reference_model().save_pretrained(path / "reference", safe_serialization=True)
        atomic_write_text(path / "config.json", json.dumps(config_dict(self.cfg), indent=2) + "\n")
        save_checkpoint(path, self.state_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> RLHFTrainer:
        """The trainer :meth:`save` wrote to ``path``, ready to :meth:`learn` on or :meth:`predict` with."""
        from agents.lm.checkpoint import find_checkpoint, load_checkpoint

        path = Path(path)
        ckpt = find_checkpoint(path)
        if ckpt is None or not (path / "config.json").exists():
            raise ValueError(f"{path} holds no saved trainer (config.json and checkpoint/ from RLHFTrainer.save)")
        cfg = config_from_dict(json.loads((path / "config.json").read_text()))
        ref = path / "reference"
        trainer = cls(cfg, model=str(ref) if ref.is_dir() else None)
        trainer.model_given = ref.is_dir()
        trainer.load_state_dict(load_checkpoint(ckpt))
        return trainer

    def reference_model(self) -> torch.nn.Module:
        """A copy of the starting model (the reference): the LM with the frozen reference parts in, or, under
        LoRA, the base without the adapter."""
        import copy

        if self.ref_parts is None:
            return copy.deepcopy(self.policy.model).unload()  # peft: the base weights, adapter removed
        with self.policy.swapped(self.ref_parts):
            return copy.deepcopy(self.policy.model)

    # -- state ------------------------------------------------------------------------------------------
    RANK_STATE_KEYS = ("rng", "generator", "sample_generator")
    """what differs per process (saved per rank by :meth:`agents.distributed.Dist.save_state`)"""

    def state_dict(self) -> dict[str, Any]:
        return {**self.shared_state_dict(), **self.rank_state_dict()}

    def shared_state_dict(self) -> dict[str, Any]:
        """What every process holds alike: weights, optimizer, KL controller, score moments, iteration, config."""
        from agents.lm.checkpoint import trainable_state_dict

        return {"iteration": self.iteration, "num_timesteps": self.num_timesteps, "config": config_dict(self.cfg),
                "precision": self.precision,
                "policy": trainable_state_dict(self.policy), "optimizer": self.optimizer.state_dict(),
                "kl_ctl": self.kl_ctl.state_dict(), "moments": self.moments.state_dict()}

    def rank_state_dict(self) -> dict[str, Any]:
        """This process's RNG states (global RNGs, minibatch order, fallback token sampling)."""
        from agents.lm.checkpoint import rng_state

        return {"rng": rng_state(), "generator": self.generator.get_state(),
                "sample_generator": self.sample_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], rank_state: dict[str, Any] | None = None) -> None:
        """Load a checkpoint; ``rank_state`` (this process's RNG states) overrides those in ``state``."""
        from agents.lm.checkpoint import set_rng_state

        state = {**state, **(rank_state or {})}
        saved = state.get("precision", "fp32" if self.device.type == "cpu" else None)  # older checkpoints: no key
        if saved is not None and saved != self.precision and not self.cfg.allow_precision_change:
            raise ValueError(f"the checkpoint was computed in {saved} and this run would continue in "
                             f"{self.precision} (--precision {self.cfg.precision} on {self.device.type}); pass "
                             f"--precision {saved} to continue as it ran, or --allow-precision-change true")
        missing, unexpected = self.policy.load_state_dict(state["policy"], strict=False)
        trainable = {n for n, p in self.policy.named_parameters() if p.requires_grad}
        if unexpected or trainable & set(missing):
            raise ValueError(f"checkpoint does not match the policy: missing {sorted(trainable & set(missing))[:5]}, "
                             f"unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.moments.load_state_dict(state["moments"])
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        self.sample_generator.set_state(state["sample_generator"])
        self.iteration = int(state["iteration"])
        self.num_timesteps = int(state.get("num_timesteps", 0))  # older checkpoints: not counted


def config_from_dict(d: dict[str, Any]) -> RLHFConfig:
    """The :class:`RLHFConfig` of a ``config.json`` (fields it lacks at their defaults, removed ones ignored)."""
    d = {k: v for k, v in d.items() if k not in REMOVED_FIELDS}
    return RLHFConfig(**{**d, "ppo": RLHFPPOConfig(**d.get("ppo", {}))})


def write_config(path: Path, cfg: RLHFConfig) -> None:
    path.write_text(json.dumps(config_dict(cfg), indent=2) + "\n")
