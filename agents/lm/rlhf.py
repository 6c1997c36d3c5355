"""RLHF with PPO: a causal-LM policy fine-tuned through a batched TextGen env.

One iteration (Ziegler et al. 2019; "The N Implementation Details of RLHF with PPO", Huang et al. 2024):

1. roll out ``num_envs`` completions through the env, token by token with the KV cache (:mod:`.rollout`);
2. log-probs of the same tokens under the frozen reference model;
3. per-token rewards: ``-kl_coef * KL_t`` at every token, plus the (processed) score at the last real token;
4. advantages by GAE over each completion (:func:`agents.ppo.core.sequence_gae`);
5. PPO epochs x minibatches (:func:`agents.ppo.core.ppo_update`, gradient accumulation over micro-batches);
6. the KL controller adapts ``kl_coef`` (adaptive) or keeps it (fixed).

Data parallel (``accelerate launch``, :class:`agents.distributed.Dist`): ``num_envs`` and
``ppo.minibatch_size`` are global; each process rolls out its share of the envs, which are the global envs
``rank * n_local ... (rank + 1) * n_local - 1``. Env ``g``'s prompt seed and token-sampling generator are derived
from the run's seed, the iteration and ``g`` alone, so N processes roll out exactly the episodes one process
would, and the run does not depend on the number of processes (up to float summation order). Whitening, score
normalisation, the KL of the KL controller, the loss's token count and the logged metrics are global.
"""

from __future__ import annotations

import contextlib
import copy
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

from agents.lm.policy import CausalLMPolicy, apply_lora, model_inputs, train_only_last_layers
from agents.lm.rollout import Rollout, rollout
from agents.ppo.core import PPOUpdateConfig, masked_mean, ppo_update, sequence_gae
from textgym.scorers import make_scorer, score_batch, scorer_spec

if TYPE_CHECKING:
    from agents.distributed import Dist


# --------------------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------------------
@dataclass
class RLHFPPOConfig(PPOUpdateConfig):
    """PPO settings with RLHF defaults (Huang et al. 2024 / TRL PPO unless noted)."""

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
    """PPO iterations (one rollout batch + one update each)"""
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
    """'k1' (log p - log q, Ziegler; unbiased, can be negative per token) or 'k3' ((r-1) - log r, Schulman's
    nonnegative low-variance estimator, used by the N+ TL;DR paper's follow-ups)"""
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
    """PPO update settings"""
    n_samples: int = 8
    """prompts shown before/after training in samples.md (greedy completions)"""
    checkpoint_every: int = 4
    """write a checkpoint every N iterations (and at the end)"""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1' ..."""
    bf16: bool = True
    """bf16 autocast for forward passes on CUDA (ignored on CPU)"""
    num_threads: int | None = None
    """torch.set_num_threads (None: torch's default)"""
    tensorboard: bool = True
    """also write TensorBoard events to DIR/tb"""
    progress: bool = True
    """show a tqdm progress bar"""


# fields that may differ when a run is resumed: where and how it runs, not what it computes
RESUMABLE_FIELDS = ("iterations", "out", "device", "num_threads", "checkpoint_every", "tensorboard", "progress")


def config_dict(cfg: RLHFConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_differences(saved: dict[str, Any], cfg: RLHFConfig) -> list[str]:
    """Fields (other than :data:`RESUMABLE_FIELDS`) whose values differ between a saved config and ``cfg``."""
    now = config_dict(cfg)
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys
            if k not in RESUMABLE_FIELDS and saved.get(k) != now.get(k)]


def validate(cfg: RLHFConfig) -> None:
    """Raise ``ValueError`` naming the field for values that cannot work."""
    checks = [
        (cfg.iterations >= 0, f"iterations must be >= 0, got {cfg.iterations}"),
        (cfg.num_envs >= 1, f"num_envs must be >= 1, got {cfg.num_envs}"),
        (cfg.max_new_tokens is None or cfg.max_new_tokens >= 1,
         f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}"),
        (cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.kl_coef >= 0, f"kl_coef must be >= 0, got {cfg.kl_coef}"),
        (cfg.kl_estimator in ("k1", "k3"), f"kl_estimator must be 'k1' or 'k3', got {cfg.kl_estimator!r}"),
        (cfg.score_norm in ("none", "batch", "running"),
         f"score_norm must be 'none', 'batch' or 'running', got {cfg.score_norm!r}"),
        (cfg.value_head_init in ("normal", "zeros"),
         f"value_head_init must be 'normal' or 'zeros', got {cfg.value_head_init!r}"),
        (1 <= cfg.ppo.minibatch_size <= cfg.num_envs,
         f"ppo.minibatch_size={cfg.ppo.minibatch_size} must be in [1, num_envs={cfg.num_envs}]"),
        (cfg.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}"),
        (not (cfg.lora and cfg.separate_critic), "lora and separate_critic together are not supported; pick one"),
        (not (cfg.lora and cfg.trainable_layers is not None), "lora and trainable_layers together: pick one"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    if cfg.scorer is not None:
        if not isinstance(cfg.scorer, (str, dict)):
            raise ValueError(f"scorer must be a name, 'reward-model:PATH' or a dict with 'name', got {cfg.scorer!r}")
        scorer_spec(cfg.scorer)  # before any model is loaded: says what to write
    if cfg.gold_scorer is not None:
        scorer_spec(cfg.gold_scorer)


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


def mean_ci95(x: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(mean, half-width of a normal 95% confidence interval of the mean)."""
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.size < 2:
        return float(a.mean()) if a.size else float("nan"), float("nan")
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(a.size))


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def make_dist(cfg: RLHFConfig) -> Dist:
    """The :class:`~agents.distributed.Dist` of a run: accelerate's when launched with several processes
    (``accelerate launch``/``torchrun``), else plain torch on ``cfg.device`` (one process, no accelerate)."""
    from agents.distributed import Dist, launched_world_size

    if launched_world_size() > 1:
        if cfg.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device={cfg.device!r}: under several processes each process's GPU is chosen by "
                             "accelerate (its local rank); pass --device auto, cuda or cpu")
        cpu = True if cfg.device == "cpu" else (False if cfg.device == "cuda" else None)
        return Dist(cpu=cpu, mixed_precision="no")  # bf16 autocast is the trainer's own (cfg.bf16)
    return Dist(cpu=pick_device(cfg.device).type != "cuda", use_accelerate=False)


def sampling_seed(seed: int, iteration: int, env_index: int) -> int:
    """Seed of the token-sampling generator of global env ``env_index`` at ``iteration``: a function of these
    alone, so the tokens do not depend on how the envs are split across processes (nor on a resume)."""
    return int(np.random.SeedSequence([seed, iteration, env_index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# --------------------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------------------
class RLHFTrainer:
    """Builds env, policy, reference and optimizer from an :class:`RLHFConfig`, and runs iterations.

    ``model`` overrides ``cfg.model`` with a loaded model object (tests, notebooks).
    """

    def __init__(self, cfg: RLHFConfig, model: Any = None, env: Any = None, dist: Dist | None = None) -> None:
        validate(cfg)
        self.cfg = cfg
        self.dist = dist if dist is not None else make_dist(cfg)
        self.num_local_envs = self.dist.local_size(cfg.num_envs, "num_envs")
        self.local_minibatch_size = self.dist.local_size(cfg.ppo.minibatch_size, "ppo.minibatch_size")
        if cfg.num_threads is not None:
            torch.set_num_threads(int(cfg.num_threads))
        torch.manual_seed(cfg.seed)  # the same initial weights (value head) on every process
        self.device = self.dist.device if self.dist.distributed else pick_device(cfg.device)
        self.policy = CausalLMPolicy(model if model is not None else cfg.model, temperature=cfg.temperature,
                                     separate_critic=cfg.separate_critic, value_head_init=cfg.value_head_init)
        self.env = env if env is not None else self.make_env()
        self.policy.vocab_size = int(self.env.vocab_size)
        self.policy.check_action_size(self.env.action_size)
        if cfg.lora:
            apply_lora(self.policy, r=cfg.lora_r, alpha=cfg.lora_alpha)
            self.ref_model = None  # the reference: the same weights with the adapter disabled (saves a copy)
        else:
            self.ref_model = copy.deepcopy(self.policy.hf_model).eval().requires_grad_(False)  # frozen reference
            if cfg.trainable_layers is not None:
                train_only_last_layers(self.policy, cfg.trainable_layers)
        self.policy.to(self.device)
        if self.ref_model is not None:
            self.ref_model.to(self.device)
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

    # -- construction helpers ---------------------------------------------------------------------------
    def make_env(self) -> Any:
        from textgym.envs.vector import BatchedTextGenEnv
        from textgym.registration import TASKS, resolve_task

        cfg = self.cfg
        kwargs = dict(TASKS[resolve_task(cfg.task)][1])  # an id or a short name ("sql"); else the error lists them
        if cfg.tokenizer is not None:
            kwargs["tokenizer"] = cfg.tokenizer
        elif cfg.model not in (None, "default"):
            kwargs["tokenizer"] = cfg.model  # a model's own tokenizer
        for k in ("prompts", "scorer", "max_new_tokens", "prompt_kwargs"):
            if getattr(cfg, k) is not None:
                kwargs[k] = getattr(cfg, k)
        from textgym.tokenizers import make_tokenizer

        tok = make_tokenizer(kwargs["tokenizer"])
        if tok.vocab_size > self.policy.out_size:
            raise ValueError(f"the tokenizer {kwargs['tokenizer']!r} has {tok.vocab_size} tokens but the model "
                             f"{cfg.model or 'default'!r} outputs {self.policy.out_size} logits: they do not belong "
                             "together. Pass the model's own tokenizer (--tokenizer) or a matching --model.")
        kwargs["tokenizer"] = tok
        return BatchedTextGenEnv(self.num_local_envs, autoreset_mode="disabled", action_size=self.policy.out_size,
                                 **kwargs)

    def autocast(self) -> Callable[[], Any] | None:
        if self.device.type == "cuda" and self.cfg.bf16:
            return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        return None

    @contextlib.contextmanager
    def _maybe_autocast(self) -> Iterator[None]:
        ac = self.autocast()
        with ac() if ac is not None else contextlib.nullcontext():
            yield

    # -- one iteration ----------------------------------------------------------------------------------
    @torch.no_grad()
    def ref_logprobs(self, r: Rollout) -> torch.Tensor:
        """Log-probs ``(N, T)`` of the rollout's completions under the frozen reference (same temperature)."""
        T = r.completion_ids.shape[1]
        ids, mask = r.input_ids, r.attention_mask
        if self.ref_model is None:  # LoRA: the base weights are the reference
            with self.policy.model.disable_adapter(), self._maybe_autocast():
                return self.policy.sequence_logprobs(ids, mask, T) * r.completion_mask
        P = ids.shape[1] - T
        with self._maybe_autocast():
            lm = self.ref_model
            out = getattr(lm, lm.base_model_prefix)(**model_inputs(ids, mask))
            logits = lm.get_output_embeddings()(out.last_hidden_state[:, P - 1 : P - 1 + T]).float()  # (N, T, V)
        logits = logits / self.policy.temperature
        if self.policy.vocab_size < self.policy.out_size:
            logits[..., self.policy.vocab_size :] = float("-inf")
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, P:, None]).squeeze(-1)  # (N, T)
        return lp * r.completion_mask

    @property
    def env_indices(self) -> list[int]:
        """The global indices of this process's envs (rank-major: process r holds a contiguous block)."""
        n = self.num_local_envs
        return list(range(self.dist.rank * n, (self.dist.rank + 1) * n))

    def collect(self, seed: int | list[int] | None = None, greedy: bool = False, prompts: list[Any] | None = None,
                row_seeds: list[int] | None = None) -> Rollout:
        """Roll out this process's envs. ``seed``: the env reset seed (an int seeds env i with ``seed + i``, a list
        one seed per env); ``row_seeds``: one token-sampling seed per env (row i's tokens from its own CPU
        generator, see :func:`agents.lm.rollout.sample_tokens`), else the tokens come from
        ``self.sample_generator``."""
        self.policy.eval()
        generator: Any = self.sample_generator
        if row_seeds is not None and not greedy:
            generator = [torch.Generator().manual_seed(s) for s in row_seeds]
        with self._maybe_autocast():
            return rollout(self.policy, self.env, prompts=prompts, seed=seed, greedy=greedy,  # type: ignore[arg-type]
                           generator=generator)

    def step(self) -> dict[str, float]:
        """One RLHF iteration; returns the metrics logged for it (global over every process's envs)."""
        cfg, dist = self.cfg, self.dist
        ddp = dist if dist.distributed else None  # one process: ppo_update's plain path, unchanged
        t0 = time.perf_counter()
        envs = self.env_indices
        base = cfg.seed * 1_000_003 + self.iteration * cfg.num_envs  # global env g resets with base + g
        r = self.collect(seed=[base + g for g in envs], row_seeds=[sampling_seed(cfg.seed, self.iteration, g)
                                                                    for g in envs])
        t_rollout = time.perf_counter() - t0
        mask = r.completion_mask.float()  # (N, T)
        ref_lp = self.ref_logprobs(r)  # (N, T)
        kl = kl_per_token(r.logprobs, ref_lp, cfg.kl_estimator) * mask  # (N, T), the penalised estimate
        kl_k1_seq = ((r.logprobs - ref_lp) * mask).sum(-1)  # (N,) KL per sequence (k1, always logged)
        ended = torch.tensor([i.get("end_reason") != "budget" for i in r.infos], device=r.scores.device)  # EOS/stop
        scores = process_scores(r.scores, ended, cfg, self.moments, ddp)  # (N,) no missing-EOS penalty after a stop
        token_rewards = r.env_rewards - r.scores[:, None] * last_token_onehot(mask)  # per-token env rewards, if any
        rewards, non_score = rlhf_rewards(scores, kl, mask, self.kl_ctl.value, token_rewards)  # (N, T)
        advantages, returns = sequence_gae(rewards, r.values, mask, cfg.gamma, cfg.gae_lambda)  # (N, T)
        batch = {"actions": r.completion_ids, "logprobs": r.logprobs, "values": r.values,
                 "advantages": advantages, "returns": returns, "mask": mask,
                 "input_ids": r.input_ids, "attention_mask": r.attention_mask}
        t1 = time.perf_counter()
        self.policy.train()
        ppo_cfg = dataclasses.replace(cfg.ppo, minibatch_size=self.local_minibatch_size)  # this process's share
        stats = ppo_update(self.train_policy, self.optimizer, batch, ppo_cfg, generator=self.generator,
                           autocast=self.autocast(), dist=ddp)
        t_update = time.perf_counter() - t1
        for p in self.policy.parameters():  # DDP keeps the weights equal: every process stops together
            if p.requires_grad and not torch.isfinite(p).all():
                raise FloatingPointError("a policy weight became NaN/inf after the update; stopping")
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
        self.kl_ctl.update(kl_mean, cfg.num_envs)
        score_mean, score_ci = mean_ci95(g_scores)
        n_tokens = float(g_len.sum())
        if ddp is not None:
            stats = dist.all_reduce_mean(stats)  # ppo_update divides by the global token count: the mean is global
            var_y = dist.global_masked_var(returns, mask, unbiased=False)
            stats["train/explained_variance"] = (float("nan") if float(var_y) == 0 else float(
                1 - dist.global_masked_var(returns - r.values, mask, unbiased=False) / var_y))
        self.iteration += 1
        metrics = {
            "reward_mean": score_mean, "reward_ci95": score_ci, "kl": kl_mean,
            "entropy": -stats.get("train/entropy_loss", float("nan")),
            "rollout/ep_rew_mean": score_mean, "rollout/ep_len_mean": float(g_len.mean()),
            "rlhf/score_mean": score_mean, "rlhf/kl_ref": kl_mean, "rlhf/kl_coef": self.kl_ctl.value,
            "rlhf/non_score_reward": float(g_non_score.mean()),
            "rlhf/total_reward": float(g_total.mean()),
            "rlhf/eos_fraction": float(g_eos.mean()),
            "rlhf/advantage_mean": float(masked_mean(advantages, mask) if ddp is None
                                         else dist.global_masked_mean(advantages, mask)),
            "time/rollout_s": t_rollout, "time/update_s": t_update,
            "time/fps": n_tokens / max(time.perf_counter() - t0, 1e-9),
            **{"rlhf/gold_score_mean" if k == "__gold__" else f"rollout/score_parts/{k}": float(g.mean())
               for k, g in zip(part_names, g_parts)},
            **stats,
        }
        return metrics

    # -- state ------------------------------------------------------------------------------------------
    RANK_STATE_KEYS = ("rng", "generator", "sample_generator")
    """what differs per process (saved per rank by :meth:`agents.distributed.Dist.save_state`)"""

    def state_dict(self) -> dict[str, Any]:
        return {**self.shared_state_dict(), **self.rank_state_dict()}

    def shared_state_dict(self) -> dict[str, Any]:
        """What every process holds alike: weights, optimizer, KL controller, score moments, iteration, config."""
        from agents.lm.checkpoint import trainable_state_dict

        return {"iteration": self.iteration, "config": config_dict(self.cfg),
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


def write_config(path: Path, cfg: RLHFConfig) -> None:
    path.write_text(json.dumps(config_dict(cfg), indent=2) + "\n")
