"""PPO for Gymnasium envs with discrete actions (CartPole, textgym's toy text tasks), in the manner of CleanRL's
``ppo.py``: collect a rollout from a vector env, compute GAE, run epochs x minibatches, log. The update itself
is :func:`agents.ppo.core.ppo_update`, shared with the RLHF agent.

Two details where Gymnasium 1.x and SB3 differ, and what we do:

- **Autoreset.** Gymnasium 1.x vector envs reset an env on the step *after* it finished ("next step"
  autoreset): that step ignores the action and returns the reset observation with reward 0. We keep such
  steps in the buffer with ``mask = 0``, so they never enter the loss, the advantages or the statistics.
  With ``autoreset_mode="same_step"`` (SB3's ``VecEnv`` behaviour, used by :meth:`PPOConfig.sb3`) the env
  resets within the step and gives the final observation in ``info["final_obs"]``; no step is wasted.
- **Truncation.** An episode cut by a time limit is bootstrapped with ``gamma * V(final observation)``, as
  SB3 does (``bootstrap_truncation=True``); a terminated one never is.

Same seed, same run: the policy's initial weights, the action samples and the minibatch order come from
generators seeded by ``config.seed``; the envs are reset with ``seed`` (env i gets ``seed + i``). On CPU two
runs with the same seed give bitwise-equal curves.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from agents.ppo.core import PPOUpdateConfig, compute_gae, ppo_update
from agents.ppo.optim import FlatAdam
from agents.ppo.policies import make_policy

SCHEDULES = ("constant", "linear")
AUTORESET_MODES = ("next_step", "same_step")
VECTORIZATION_MODES = ("sync", "async", "vector_entry_point")


@dataclass
class PPOConfig:
    """Everything a PPO run needs besides the env and the budget. Defaults are SB3's hyperparameters
    (``PPO("MlpPolicy", env)``) with Gymnasium's next-step autoreset; see :meth:`sb3` and :meth:`cleanrl`."""

    n_envs: int = 1
    """number of parallel envs in the vector env"""
    n_steps: int = 2048
    """steps per env per rollout (the batch is n_envs * n_steps samples)"""
    learning_rate: float = 3e-4
    """Adam learning rate (the initial one with lr_schedule='linear')"""
    lr_schedule: str = "constant"
    """'constant' or 'linear' (decay to 0 over the budget, as SB3's linear_schedule and CleanRL's anneal_lr)"""
    clip_schedule: str = "constant"
    """'constant' or 'linear' decay of the policy clip range (rl-zoo's lin_0.2)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda (1: Monte-Carlo returns minus the baseline)"""
    update: PPOUpdateConfig = field(default_factory=PPOUpdateConfig)
    """epochs, minibatch size, clip ranges, loss coefficients, advantage normalisation, target KL"""
    bootstrap_truncation: bool = True
    """add gamma * V(final observation) when a time limit truncates an episode (SB3); False: treat as terminal"""
    autoreset_mode: str = "next_step"
    """'next_step' (Gymnasium 1.x default; the reset step is masked out) or 'same_step' (SB3's VecEnv)"""
    vectorization_mode: str = "sync"
    """'sync', 'async' (subprocesses) or 'vector_entry_point' (an env's native vector version, e.g. CartPole)"""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden sizes of the separate policy and value MLPs (vector observations)"""
    activation: str = "tanh"
    """MLP activation: 'tanh' (SB3, CleanRL) or 'relu'"""
    ortho_init: bool = True
    """orthogonal initialisation (hidden sqrt(2), policy head 0.01, value head 1), as SB3 and CleanRL"""
    token_arch: str = "gru"
    """token policy for textgym observations: 'gru' or 'transformer'"""
    d_model: int = 64
    """token policy width"""
    n_layers: int = 1
    """token policy depth (GRU or transformer layers)"""
    adam_eps: float = 1e-5
    """Adam epsilon (1e-5: SB3 and CleanRL, not torch's 1e-8)"""
    adam_fused: bool = False
    """torch's fused Adam kernel: the same update up to float32 rounding; False: torch's plain Adam (SB3's), bit for
    bit, computed in one flat update (:class:`agents.ppo.optim.FlatAdam`, about as fast as the fused kernel)"""
    use_action_mask: bool = True
    """mask invalid actions when the env gives info['action_mask']"""
    seed: int = 0
    """seed of the envs, the initial weights, the action samples and the minibatch order"""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' ..."""

    @property
    def batch_size(self) -> int:
        """Samples per rollout: ``n_envs * n_steps``."""
        return self.n_envs * self.n_steps

    @classmethod
    def sb3(cls, **overrides: Any) -> PPOConfig:
        """The choices SB3's ``PPO`` makes where the PPO traditions differ, so a comparison is like for like:
        value loss = MSE with ``vf_coef=0.5`` and no value clipping (SB3's ``clip_range_vf=None``; when set,
        the clipped error alone), advantages normalised per minibatch, target KL checked per minibatch
        against 1.5 x ``target_kl`` before the step, truncation bootstrapped, a minibatch is ``batch_size``
        samples, same-step autoreset (SB3's ``VecEnv``), SB3's defaults (n_steps 2048, batch 64, 10 epochs,
        lr 3e-4, clip 0.2, gamma 0.99, lambda 0.95, ent 0, max_grad_norm 0.5, Adam eps 1e-5, orthogonal
        init, separate 64-64 tanh MLPs). Keyword overrides may name fields of ``PPOConfig`` or of
        ``PPOUpdateConfig`` (``minibatch_size=256``)."""
        base = cls(
            n_envs=1, n_steps=2048, learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, bootstrap_truncation=True,
            autoreset_mode="same_step", net_arch=(64, 64), activation="tanh", ortho_init=True, adam_eps=1e-5,
            update=PPOUpdateConfig(n_epochs=10, minibatch_size=64, clip_range=0.2, clip_range_vf=None,
                                   vf_clip_takes_max=False, vf_coef=0.5, ent_coef=0.0, max_grad_norm=0.5,
                                   normalize_advantage="minibatch", target_kl=None, target_kl_mode="minibatch"))
        return base.replace(**overrides)

    @classmethod
    def cleanrl(cls, **overrides: Any) -> PPOConfig:
        """CleanRL ``ppo.py``'s defaults: 4 envs x 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4 annealed,
        clipped value loss (max of clipped and unclipped), ``0.5 * MSE`` with vf_coef 0.5 (our vf_coef 0.25),
        ent 0.01, target KL per epoch, Gymnasium's next-step autoreset."""
        base = cls(
            n_envs=4, n_steps=128, learning_rate=2.5e-4, lr_schedule="linear", gamma=0.99, gae_lambda=0.95,
            autoreset_mode="next_step",
            update=PPOUpdateConfig(n_epochs=4, minibatch_size=128, clip_range=0.2, clip_range_vf=0.2,
                                   vf_clip_takes_max=True, vf_coef=0.25, ent_coef=0.01, max_grad_norm=0.5,
                                   normalize_advantage="minibatch", target_kl=None, target_kl_mode="epoch"))
        return base.replace(**overrides)

    @classmethod
    def rl_zoo_cartpole(cls, **overrides: Any) -> PPOConfig:
        """rl-baselines3-zoo's tuned PPO for CartPole-v1 on the SB3 preset: 8 envs x 32 steps, batch 256,
        20 epochs, gamma 0.98, lambda 0.8, lr and clip 1e-3 and 0.2 decayed linearly, ent 0."""
        base = cls.sb3(n_envs=8, n_steps=32, learning_rate=1e-3, lr_schedule="linear", clip_schedule="linear",
                       gamma=0.98, gae_lambda=0.8, minibatch_size=256, n_epochs=20, ent_coef=0.0)
        return base.replace(**overrides)

    def replace(self, **overrides: Any) -> PPOConfig:
        """A copy with fields replaced; names of ``PPOUpdateConfig`` fields go to ``update``."""
        update_fields = {f.name for f in dataclasses.fields(PPOUpdateConfig)}
        own = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - update_fields - own
        if unknown:
            raise TypeError(f"unknown PPO option(s) {sorted(unknown)}; options: {sorted(own | update_fields)}")
        upd = {k: v for k, v in overrides.items() if k in update_fields and k not in own}
        top = {k: v for k, v in overrides.items() if k in own}
        if "update" in top and upd:
            raise TypeError("pass either update=PPOUpdateConfig(...) or its fields, not both")
        update = dataclasses.replace(top.pop("update", self.update), **upd)
        return dataclasses.replace(self, update=update, **top)

    def validate(self) -> None:
        """Raise ``ValueError`` for a config that cannot run; called before any env is built."""
        for name in ("n_envs", "n_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        u = self.update
        if not isinstance(u.minibatch_size, int) or u.minibatch_size <= 0:
            raise ValueError(f"minibatch_size must be a positive int, got {u.minibatch_size!r}")
        if u.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size={u.minibatch_size} is larger than the batch n_envs * n_steps = "
                             f"{self.n_envs} * {self.n_steps} = {self.batch_size}; lower it or collect more steps")
        if self.batch_size % u.minibatch_size:
            raise ValueError(f"the batch n_envs * n_steps = {self.batch_size} is not a multiple of minibatch_size="
                             f"{u.minibatch_size}: the last minibatch would be smaller yet weigh as much as a "
                             f"full one. Pick a divisor of {self.batch_size}.")
        if u.micro_batch_size is not None and (u.micro_batch_size <= 0 or u.micro_batch_size > u.minibatch_size):
            raise ValueError(f"micro_batch_size={u.micro_batch_size} must be in [1, minibatch_size]")
        if u.n_epochs <= 0:
            raise ValueError(f"n_epochs must be positive, got {u.n_epochs}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name, allowed in (("lr_schedule", SCHEDULES), ("clip_schedule", SCHEDULES),
                              ("autoreset_mode", AUTORESET_MODES), ("vectorization_mode", VECTORIZATION_MODES),
                              ("token_arch", ("gru", "transformer")), ("activation", ("tanh", "relu"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.vectorization_mode == "vector_entry_point" and self.autoreset_mode != "next_step":
            raise ValueError("vectorization_mode='vector_entry_point' envs use next-step autoreset; "
                             "set autoreset_mode='next_step'")
        if u.normalize_advantage not in ("minibatch", "batch", "none"):
            raise ValueError(f"normalize_advantage must be 'minibatch', 'batch' or 'none', got "
                             f"{u.normalize_advantage!r}")
        if u.target_kl_mode not in ("minibatch", "epoch"):
            raise ValueError(f"target_kl_mode must be 'minibatch' or 'epoch', got {u.target_kl_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        d = dict(d)
        d["update"] = PPOUpdateConfig(**d["update"])
        d["net_arch"] = tuple(d["net_arch"])
        return cls(**d)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming close matches when ``env_id`` is not registered."""
    import difflib

    import textgym  # noqa: F401  (registers the TextGen ids)

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env id {env_id!r}{hint} (see gymnasium.pprint_registry() and textgym.TASKS)")


def make_vec_env(env: str | Callable[[], gym.Env] | gym.vector.VectorEnv, config: PPOConfig,
                 env_kwargs: dict[str, Any] | None = None) -> gym.vector.VectorEnv:
    """A Gymnasium vector env of ``config.n_envs`` copies with the config's autoreset mode."""
    from gymnasium.vector import AutoresetMode

    mode = AutoresetMode.NEXT_STEP if config.autoreset_mode == "next_step" else AutoresetMode.SAME_STEP
    if isinstance(env, gym.vector.VectorEnv):
        got = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if env.num_envs != config.n_envs or got != mode:
            raise ValueError(f"the vector env has {env.num_envs} envs and autoreset mode {got}; the config asks "
                             f"for n_envs={config.n_envs} and autoreset_mode={config.autoreset_mode!r}")
        return env
    if isinstance(env, str):
        check_env_id(env)
        if config.vectorization_mode == "vector_entry_point":
            return gym.make_vec(env, config.n_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {}))
        return gym.make_vec(env, config.n_envs, vectorization_mode=config.vectorization_mode,
                            vector_kwargs={"autoreset_mode": mode}, **(env_kwargs or {}))
    if callable(env):
        cls = gym.vector.SyncVectorEnv if config.vectorization_mode != "async" else gym.vector.AsyncVectorEnv
        return cls([env] * config.n_envs, autoreset_mode=mode)
    raise TypeError(f"env must be an env id, a function returning an env, or a VectorEnv; got {env!r}")


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"this PPO supports Discrete action spaces only; the env's is {action_space}. "
                         "For continuous control use SB3's PPO with a Gaussian policy.")
    if not isinstance(observation_space, (spaces.Box, spaces.Discrete, spaces.Dict)):
        raise ValueError(f"unsupported observation space {observation_space}: use Box, Discrete or textgym's Dict")


def obs_to_tensor(obs: Any, device: torch.device) -> Any:
    """numpy observation(s) -> tensor(s) on ``device`` (no copy on CPU)."""
    if isinstance(obs, dict):
        return {k: torch.as_tensor(v, device=device) for k, v in obs.items()}
    return torch.as_tensor(obs, device=device)


def rollout_gae(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
                dones: np.ndarray, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over a rollout as :class:`PPOAgent` stores it: time-major ``(T, N)`` arrays, ``last_value`` ``(N,)``
    = V(the observation after the last step). ``terminated[t]`` stops the bootstrap at step t, ``dones[t]``
    stops the recursion (see :func:`agents.ppo.core.compute_gae`). With same-step autoreset the truncation
    bootstrap is already in ``rewards`` and ``terminated == dones`` (SB3's ``compute_returns_and_advantage``,
    checked in ``tests/agents/test_sb3_parity.py``); with next-step autoreset ``values[t + 1]`` is V(final
    observation) and ``terminated`` holds true terminations only.

    :func:`agents.ppo.core.compute_gae` on the numpy arrays (float32; Python floats cast to it): the same
    numbers as on tensors, at a fraction of torch's per-operation cost on ``(N,)`` rows."""
    next_values = np.concatenate([values[1:], last_value[None]], 0)  # V of the obs after each step
    advantages, returns = compute_gae(rewards, values, next_values, 1.0 - terminated, 1.0 - dones, gamma, gae_lambda)
    return torch.from_numpy(advantages), torch.from_numpy(returns)


class PPOAgent:
    """Our PPO on a Gymnasium env with discrete actions. Implements the :class:`agents.base.Agent` protocol.

    >>> agent = PPOAgent("CartPole-v1", PPOConfig.rl_zoo_cartpole(seed=1)).learn(100_000)
    >>> action = agent.predict(obs, deterministic=True)

    ``episodes`` holds ``(timestep, return, length)`` of every finished training episode, in order.
    """

    def __init__(self, env: str | Callable[[], gym.Env] | gym.vector.VectorEnv, config: PPOConfig | None = None,
                 *, env_kwargs: dict[str, Any] | None = None, log_dir: str | Path | None = None,
                 tensorboard: bool = True, progress_bar: bool = False) -> None:
        self.config = cfg = config if config is not None else PPOConfig()
        cfg.validate()
        self.env_id = env if isinstance(env, str) else None
        self.env_kwargs = dict(env_kwargs or {})
        self.envs = make_vec_env(env, cfg, self.env_kwargs)
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        check_spaces(self.observation_space, self.action_space)
        self.device = resolve_device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global RNG
            torch.manual_seed(cfg.seed)
            self.policy = make_policy(self.observation_space, self.action_space, net_arch=cfg.net_arch,
                                      activation=cfg.activation, ortho_init=cfg.ortho_init,
                                      token_arch=cfg.token_arch, d_model=cfg.d_model,
                                      n_layers=cfg.n_layers).to(self.device)
        if cfg.adam_fused:
            self.optimizer: torch.optim.Adam = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate,
                                                                eps=cfg.adam_eps, fused=True)
        else:  # torch's plain Adam (SB3's), bit for bit, in one flat update
            self.optimizer = FlatAdam(self.policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)  # action samples
        self.batch_gen = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self.num_timesteps = 0
        self.n_updates = 0
        self.episodes: list[tuple[int, float, int]] = []
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.tensorboard = tensorboard
        self.progress_bar = progress_bar
        self._next_obs: Any = None  # the vector env's current observation, kept between learn() calls

    # -- acting ---------------------------------------------------------------------------------------------
    def predict(self, obs: Any, deterministic: bool = False, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Action(s) for one observation (returns a 0-d array) or a batch (returns ``(n,)``)."""
        single = self._is_single(obs)
        x = obs_to_tensor(obs, self.device)
        if single:
            x = {k: v[None] for k, v in x.items()} if isinstance(x, dict) else x[None]
        mask = None if action_mask is None else torch.as_tensor(np.asarray(action_mask), device=self.device)
        if mask is not None and single:
            mask = mask[None]
        with torch.inference_mode():
            action, _, _ = self.policy.act(x, mask, deterministic=deterministic, generator=self.sample_gen)
        out = action.cpu().numpy()
        return out[0] if single else out

    def _is_single(self, obs: Any) -> bool:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return np.asarray(obs["input_ids"]).ndim == 1
        if isinstance(space, spaces.Discrete):
            return np.ndim(obs) == 0
        return np.ndim(obs) == len(space.shape)

    # -- training -------------------------------------------------------------------------------------------
    def learn(self, total_timesteps: int, *, reset_num_timesteps: bool = True,
              callback: Callable[[PPOAgent, dict[str, float]], bool | None] | None = None) -> PPOAgent:
        """Train for ``total_timesteps`` env steps (rounded up to whole rollouts, as SB3).

        ``reset_num_timesteps=False`` continues a run (after :meth:`load`): the budget counts from the current
        ``num_timesteps`` and the schedules continue. ``callback(agent, metrics)`` runs after every update;
        returning ``False`` stops training.
        """
        cfg = self.config
        if not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < cfg.batch_size:
            raise ValueError(f"total_timesteps={total_timesteps} is smaller than one rollout (n_envs * n_steps = "
                             f"{cfg.batch_size}); raise it or lower n_steps")
        if reset_num_timesteps:
            self.num_timesteps, self.n_updates, self.episodes = 0, 0, []
            self._next_obs = None
        start_steps = self.num_timesteps
        end_steps = start_steps + int(total_timesteps)
        logger = None
        if self.log_dir is not None:
            from agents.logger import MetricsLogger

            logger = MetricsLogger(self.log_dir, tensorboard=self.tensorboard,
                                   resume=not reset_num_timesteps and start_steps > 0)
        bar = None
        if self.progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=end_steps, initial=start_steps, unit="step", dynamic_ncols=True)
        try:
            self._train_loop(end_steps, logger, bar, callback)
        finally:
            if logger is not None:
                logger.close()
            if bar is not None:
                bar.close()
        return self

    def _train_loop(self, end_steps: int, logger: Any, bar: Any, callback: Any) -> None:
        cfg, envs, policy, device = self.config, self.envs, self.policy, self.device
        T, N = cfg.n_steps, cfg.n_envs
        next_step = cfg.autoreset_mode == "next_step"

        if self._next_obs is None:  # a fresh start: seeded reset
            obs, info = envs.reset(seed=cfg.seed + self.num_timesteps)
            self._next_obs, self._next_mask = obs, self._action_mask(info)
            self._prev_done = np.zeros(N, dtype=bool)  # env i finished at the previous step (next-step autoreset)
            self._ep_ret, self._ep_len = np.zeros(N), np.zeros(N, dtype=np.int64)

        # rollout buffers: numpy, time-major (T, N, ...)
        if isinstance(self.observation_space, spaces.Dict):
            obs_buf: Any = {k: np.zeros((T, N, *s.shape), s.dtype) for k, s in self.observation_space.items()}
        else:
            s = self.observation_space
            obs_buf = np.zeros((T, N, *s.shape), s.dtype if s.dtype is not None else np.float32)
        n_actions = int(self.action_space.n)
        mask_buf = np.ones((T, N, n_actions), np.int8) if self._next_mask is not None else None
        actions = np.zeros((T, N), np.int64)
        logprobs = np.zeros((T, N), np.float32)
        values = np.zeros((T, N), np.float32)
        rewards = np.zeros((T, N), np.float32)
        terminated = np.zeros((T, N), np.float32)
        dones = np.zeros((T, N), np.float32)
        valid = np.ones((T, N), np.float32)
        recent = deque((r for _, r, _ in self.episodes[-100:]), maxlen=100)
        recent_len = deque((n for _, _, n in self.episodes[-100:]), maxlen=100)
        lr0, clip0 = cfg.learning_rate, cfg.update.clip_range

        while self.num_timesteps < end_steps:
            t0 = time.perf_counter()
            # ---- rollout ----
            for step in range(T):
                next_obs = self._next_obs
                if isinstance(obs_buf, dict):
                    for k in obs_buf:
                        obs_buf[k][step] = next_obs[k]
                else:
                    obs_buf[step] = next_obs
                mask_t = None
                if mask_buf is not None:
                    mask_buf[step] = self._next_mask
                    mask_t = torch.as_tensor(self._next_mask, device=device)
                with torch.inference_mode():
                    action, logprob, value = policy.act(obs_to_tensor(next_obs, device), mask_t,
                                                        generator=self.sample_gen)
                action_np = action.cpu().numpy()
                actions[step], logprobs[step], values[step] = action_np, logprob.cpu().numpy(), value.cpu().numpy()
                obs, reward, term, trunc, info = envs.step(action_np)
                done = term | trunc
                reward = np.asarray(reward, np.float32)
                if next_step:  # the step after a done is a reset step: action ignored, not a transition
                    valid[step] = ~self._prev_done
                    self._prev_done = done
                    v = valid[step].astype(bool)
                    self._ep_ret += reward * v
                    self._ep_len += v
                else:  # same-step autoreset: every step is a transition (valid stays 1)
                    self._ep_ret += reward
                    self._ep_len += 1
                if done.any():
                    for i in np.flatnonzero(done):
                        self.episodes.append((self.num_timesteps + (step + 1) * N, float(self._ep_ret[i]),
                                              int(self._ep_len[i])))
                        recent.append(float(self._ep_ret[i]))
                        recent_len.append(int(self._ep_len[i]))
                    self._ep_ret[done], self._ep_len[done] = 0.0, 0
                if cfg.bootstrap_truncation and not next_step and trunc.any():
                    # same-step autoreset: obs is the reset one; bootstrap from info["final_obs"] (as SB3)
                    idx = np.flatnonzero(trunc & ~term)
                    if idx.size:
                        final = info["final_obs"][idx]
                        if isinstance(self.observation_space, spaces.Dict):
                            final = {k: np.stack([f[k] for f in final]) for k in self.observation_space}
                        else:
                            final = np.stack(final)
                        with torch.inference_mode():
                            v_final = policy.value(obs_to_tensor(final, device)).cpu().numpy()
                        reward = reward.copy()
                        reward[idx] += cfg.gamma * v_final
                rewards[step] = reward
                # next-step autoreset: values[t + 1] is V(final obs), so a truncated step bootstraps through
                # next_nonterminal; same-step: the bootstrap is already in the reward, so every end stops it
                terminated[step] = term if (next_step and cfg.bootstrap_truncation) else done
                dones[step] = done
                self._next_obs, self._next_mask = obs, self._action_mask(info)
            self.num_timesteps += T * N

            # ---- advantages ----
            with torch.inference_mode():
                last_value = policy.value(obs_to_tensor(self._next_obs, device)).cpu().numpy()
            adv, ret = rollout_gae(rewards, values, last_value, terminated, dones, cfg.gamma, cfg.gae_lambda)

            # ---- update ----
            progress_remaining = 1.0 - self.num_timesteps / end_steps  # SB3: computed after the rollout
            lr = lr0 * progress_remaining if cfg.lr_schedule == "linear" else lr0
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            clip = clip0 * progress_remaining if cfg.clip_schedule == "linear" else clip0
            upd_cfg = dataclasses.replace(cfg.update, clip_range=clip)

            def flat(x: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(x.reshape(T * N, *x.shape[2:])).to(device)

            batch: dict[str, Any] = {
                "obs": {k: flat(v) for k, v in obs_buf.items()} if isinstance(obs_buf, dict) else flat(obs_buf),
                "actions": flat(actions)[:, None], "logprobs": flat(logprobs)[:, None],
                "values": flat(values)[:, None], "advantages": adv.reshape(-1, 1).to(device),
                "returns": ret.reshape(-1, 1).to(device), "mask": flat(valid)[:, None],
            }
            if mask_buf is not None:
                batch["action_mask"] = flat(mask_buf)
            t1 = time.perf_counter()
            stats = ppo_update(policy, self.optimizer, batch, upd_cfg, generator=self.batch_gen)
            self.n_updates += int(stats["train/n_updates"])
            t2 = time.perf_counter()

            metrics = {
                "rollout/ep_rew_mean": float(np.mean(recent)) if recent else float("nan"),
                "rollout/ep_len_mean": float(np.mean(recent_len)) if recent_len else float("nan"),
                "time/fps": T * N / (t2 - t0), "time/rollout_s": t1 - t0, "time/update_s": t2 - t1,
                "time/total_timesteps": float(self.num_timesteps),
                "train/learning_rate": lr, **stats, "train/clip_range": clip,
            }
            if logger is not None:
                logger.log(self.num_timesteps, metrics)
            if bar is not None:
                bar.update(T * N)
                bar.set_postfix(ep_rew_mean=f"{metrics['rollout/ep_rew_mean']:.3g}")
            if callback is not None and callback(self, metrics) is False:
                break

    def _action_mask(self, info: dict[str, Any]) -> np.ndarray | None:
        """The vector env's ``info["action_mask"]`` as ``(N, A)`` int8, all-ones rows where an env gave none."""
        if not self.config.use_action_mask or "action_mask" not in info:
            return None
        mask = np.asarray(info["action_mask"], dtype=np.int8)
        present = np.asarray(info.get("_action_mask", np.ones(len(mask), bool)))
        mask[~present] = 1
        return mask

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` (policy weights), ``path/config.json`` (config, env, counters) and
        ``path/optimizer.pt`` (Adam state and RNG states, for :meth:`load` + ``learn(reset_num_timesteps=False)``).
        Atomic: the three files are written to a temporary folder beside ``path`` and swapped in
        (:func:`agents.atomic.replace_dir`), so a kill leaves the previous save or this one, never a mix.
        """
        import tempfile

        from safetensors.torch import save_file

        from agents.atomic import replace_dir

        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()},
                  str(path / "model.safetensors"))
        meta = {"format": "textgym-ppo/1", "env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "config": self.config.to_dict(), "num_timesteps": self.num_timesteps, "n_updates": self.n_updates}
        (path / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        torch.save({"optimizer": self.optimizer.state_dict(), "sample_gen": self.sample_gen.get_state(),
                    "batch_gen": self.batch_gen.get_state(), "episodes": self.episodes}, path / "optimizer.pt")
        return replace_dir(path, final)

    @classmethod
    def load(cls, path: str | Path, env: str | Callable[[], gym.Env] | gym.vector.VectorEnv | None = None,
             *, device: str | None = None, **kwargs: Any) -> PPOAgent:
        """Rebuild an agent saved by :meth:`save` (on the saved env id unless ``env`` is given)."""
        from safetensors.torch import load_file

        from agents.atomic import existing_dir

        path = existing_dir(path)  # the previous save, if a kill came in the middle of replacing it
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json; is it a folder written by PPOAgent.save?")
        meta = json.loads((path / "config.json").read_text())
        config = PPOConfig.from_dict(meta["config"])
        if device is not None:
            config = config.replace(device=device)
        env = env if env is not None else meta["env_id"]
        if env is None:
            raise ValueError("this agent was trained on an env object, not an id; pass env= to load it")
        agent = cls(env, config, env_kwargs=meta.get("env_kwargs"), **kwargs)
        agent.policy.load_state_dict(load_file(str(path / "model.safetensors"), device=str(agent.device)))
        agent.num_timesteps, agent.n_updates = int(meta["num_timesteps"]), int(meta["n_updates"])
        opt_path = path / "optimizer.pt"
        if opt_path.exists():
            state = torch.load(opt_path, map_location=agent.device, weights_only=True)
            agent.optimizer.load_state_dict(state["optimizer"])
            agent.sample_gen.set_state(state["sample_gen"].cpu() if agent.device.type == "cpu"
                                       else state["sample_gen"])
            agent.batch_gen.set_state(state["batch_gen"].cpu())
            agent.episodes = [tuple(e) for e in state["episodes"]]
        return agent

    def close(self) -> None:
        self.envs.close()
