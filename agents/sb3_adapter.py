"""Stable-Baselines3's PPO behind our :class:`agents.base.Agent` protocol, on classic Gymnasium envs and on
textgym envs (through :class:`TokenEmbeddingExtractor`), with hyperparameters taken from a :class:`PPOConfig`
so that the two implementations are compared like for like (see ``agents/validate.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.device import resolve_device
from agents.ppo.agent import PPOConfig, check_env_id, check_spaces
from textgym._optional import require

require("stable_baselines3", "the SB3 adapter")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.logger import HumanOutputFormat, Logger  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402


class TokenEmbeddingExtractor(BaseFeaturesExtractor):
    """SB3 features for textgym's ``Dict(input_ids, attention_mask)``: SB3 hands Box observations over as
    floats, so the ids are cast back to long, embedded (token + position), read by a GRU, and the hidden
    state at the last real token (``pool="last"``) or the masked mean over the prefix (``pool="mean"``) is
    the feature vector. The same design as our :class:`~agents.ppo.policies.TokenPolicy` (GRU, last token)."""

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 64, pool: str = "last") -> None:
        super().__init__(observation_space, features_dim)
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        ids_space = observation_space["input_ids"]
        vocab = int(np.max(ids_space.high)) + 1
        self.pool = pool
        self.tok = nn.Embedding(vocab, features_dim)
        self.pos = nn.Embedding(int(ids_space.shape[0]), features_dim)
        self.gru = nn.GRU(features_dim, features_dim, batch_first=True)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = observations["input_ids"].long()  # (n, L): SB3 gives float
        mask = observations["attention_mask"].float()  # (n, L)
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))[None]
        h, _ = self.gru(x)  # (n, L, d); causal: padding after the prefix never reaches h at the last token
        if self.pool == "mean":
            return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        last = (mask.sum(-1).long() - 1).clamp_min(0)
        return h[torch.arange(ids.shape[0], device=ids.device), last]  # (n, d)


def sb3_kwargs(config: PPOConfig) -> dict[str, Any]:
    """SB3 ``PPO(...)`` keyword arguments equal to ``config`` (errors for choices SB3 cannot make)."""
    u = config.update
    if u.normalize_advantage == "batch":
        raise ValueError("SB3 normalises advantages per minibatch or not at all; use normalize_advantage="
                         "'minibatch' or 'none' to compare with SB3")
    if u.target_kl is not None and u.target_kl_mode != "minibatch":
        raise ValueError("SB3 checks target_kl per minibatch; set target_kl_mode='minibatch'")
    if u.clip_range_vf is not None and u.vf_clip_takes_max:
        raise ValueError("SB3's value clipping uses the clipped error alone; set vf_clip_takes_max=False")
    lr0, clip0 = config.learning_rate, u.clip_range
    lr: Any = (lambda p: lr0 * p) if config.lr_schedule == "linear" else lr0
    clip: Any = (lambda p: clip0 * p) if config.clip_schedule == "linear" else clip0
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[config.activation]
    optimizer_kwargs: dict[str, Any] = {"eps": config.adam_eps, **({"fused": True} if config.adam_fused else {})}
    return dict(
        n_steps=config.n_steps, batch_size=u.minibatch_size, n_epochs=u.n_epochs, learning_rate=lr,
        gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=clip, clip_range_vf=u.clip_range_vf,
        normalize_advantage=u.normalize_advantage == "minibatch", ent_coef=u.ent_coef, vf_coef=u.vf_coef,
        max_grad_norm=u.max_grad_norm if u.max_grad_norm is not None else float("inf"), target_kl=u.target_kl,
        policy_kwargs=dict(net_arch=dict(pi=list(config.net_arch), vf=list(config.net_arch)), activation_fn=act,
                           ortho_init=config.ortho_init,
                           optimizer_kwargs=optimizer_kwargs),
    )


def quiet_logger(verbose: int = 0) -> Logger:
    """An SB3 logger that writes no files (stdout only with ``verbose >= 1``). SB3's default without
    ``tensorboard_log`` makes an empty ``SB3-<date>`` folder in the system temp directory on every ``learn``."""
    return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])


class _EpisodeRecorder(BaseCallback):
    """Collects ``(timestep, return, length)`` of finished episodes from the Monitor wrapper's infos."""

    def __init__(self, episodes: list[tuple[int, float, int]]) -> None:
        super().__init__()
        self.episodes = episodes

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.episodes.append((int(self.num_timesteps), float(ep["r"]), int(ep["l"])))
        return True


class SB3Agent:
    """SB3's ``PPO`` configured from a :class:`PPOConfig` (``PPOConfig.sb3()`` by default).

    Classic envs get ``MlpPolicy``; textgym envs get ``MultiInputPolicy`` with :class:`TokenEmbeddingExtractor`
    (``d_model`` features) and one hidden layer of ``d_model`` per head. ``episodes`` holds
    ``(timestep, return, length)`` of every training episode, like :class:`agents.ppo.agent.PPOAgent`.
    """

    def __init__(self, env: str | Callable[[], gym.Env], config: PPOConfig | None = None, *,
                 env_kwargs: dict[str, Any] | None = None, verbose: int = 0,
                 tensorboard_log: str | None = None) -> None:
        from stable_baselines3.common.env_util import make_vec_env

        self.config = cfg = config if config is not None else PPOConfig.sb3()
        cfg.validate()
        if isinstance(env, str):
            check_env_id(env)
        self.env_id = env if isinstance(env, str) else None
        # SB3's make_vec_env asks for render_mode="rgb_array"; training draws nothing, so no rendering here
        env_kwargs = {"render_mode": None, **(env_kwargs or {})} if isinstance(env, str) else env_kwargs
        self.env = make_vec_env(env, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=env_kwargs)
        check_spaces(self.env.observation_space, self.env.action_space)
        kwargs = sb3_kwargs(cfg)
        policy = "MlpPolicy"
        if isinstance(self.env.observation_space, spaces.Dict):
            policy = "MultiInputPolicy"
            kwargs["policy_kwargs"].update(
                features_extractor_class=TokenEmbeddingExtractor,
                features_extractor_kwargs=dict(features_dim=cfg.d_model),
                net_arch=dict(pi=[cfg.d_model], vf=[cfg.d_model]))
        self.model = PPO(policy, self.env, seed=cfg.seed, device=resolve_device(cfg.device), verbose=verbose,
                         tensorboard_log=tensorboard_log, **kwargs)
        if tensorboard_log is None:
            self.model.set_logger(quiet_logger(verbose))
        self.episodes: list[tuple[int, float, int]] = []

    def learn(self, total_timesteps: int, *, progress_bar: bool = False) -> SB3Agent:
        if total_timesteps < self.config.batch_size:
            raise ValueError(f"total_timesteps={total_timesteps} is smaller than one rollout "
                             f"(n_envs * n_steps = {self.config.batch_size})")
        self.model.learn(total_timesteps, callback=_EpisodeRecorder(self.episodes), progress_bar=progress_bar)
        return self

    def predict(self, obs: Any, deterministic: bool = False, action_mask: np.ndarray | None = None) -> np.ndarray:
        if action_mask is not None:
            raise ValueError("SB3's PPO has no action masking (sb3-contrib's MaskablePPO does)")
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return np.asarray(action)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "sb3_ppo.zip")
        return path

    @classmethod
    def load(cls, path: str | Path, env: str | Callable[[], gym.Env] | None = None) -> SB3Agent:
        """Load ``path/sb3_ppo.zip``; pass ``env`` to continue training (an env id or a factory)."""
        agent = cls.__new__(cls)
        agent.model = PPO.load(Path(path) / "sb3_ppo.zip")
        agent.model.set_logger(quiet_logger())
        agent.config, agent.env_id, agent.episodes, agent.env = PPOConfig.sb3(), None, [], None
        if env is not None:
            from stable_baselines3.common.env_util import make_vec_env

            agent.env = make_vec_env(env, n_envs=agent.model.n_envs)
            agent.model.set_env(agent.env)
        return agent
