"""Our PPO with ``PPOConfig.sb3()``-family presets against Stable-Baselines3's PPO, number for number.

SB3's policy weights are copied into ours, both get the same rollout (or, end to end, the same env seeds and
the same action-sampling RNG) and the same minibatch order (SB3's ``np.random.permutation`` and our
``iterate_minibatches`` are patched to the same permutations). Then the first minibatch's losses and
gradients, the parameters after ``train()``, GAE/returns, and a whole ``learn()`` (rollouts with
truncation bootstraps, LR and clip schedules, updates) must agree to float32 rounding.

SB3 flattens its ``(n_steps, n_envs)`` buffer env-major (row ``e * n_steps + t``); ours is time-major
(row ``t * n_envs + e``): the permutations are mapped between the two.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common import buffers as sb3_buffers  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

import agents.ppo.core as core  # noqa: E402
from agents.ppo.agent import PPOAgent, PPOConfig, rollout_gae  # noqa: E402
from agents.ppo.core import ppo_update  # noqa: E402
from agents.ppo.policies import make_policy  # noqa: E402
from agents.sb3_adapter import SB3Agent, sb3_kwargs  # noqa: E402

# SB3 MlpPolicy parameter prefix -> ours
NAMES = {"mlp_extractor.policy_net.0": "pi_net.0", "mlp_extractor.policy_net.2": "pi_net.2",
         "mlp_extractor.value_net.0": "vf_net.0", "mlp_extractor.value_net.2": "vf_net.2",
         "action_net": "action_net", "value_net": "value_net"}


def our_name(sb3_name: str) -> str:
    prefix, leaf = sb3_name.rsplit(".", 1)
    return f"{NAMES[prefix]}.{leaf}"


def copy_weights(sb3_policy: torch.nn.Module, ours: torch.nn.Module) -> None:
    ours.load_state_dict({our_name(k): v.clone() for k, v in sb3_policy.state_dict().items()}, strict=True)


def max_param_diff(sb3_policy: torch.nn.Module, ours: torch.nn.Module) -> float:
    od = ours.state_dict()
    return max((v - od[our_name(k)]).abs().max().item() for k, v in sb3_policy.state_dict().items())


def patch_permutations(monkeypatch: pytest.MonkeyPatch, n_steps: int, n_envs: int, n_perms: int) -> None:
    """SB3 and ours draw the same minibatch order: permutations of SB3's env-major rows, mapped to ours."""
    rng = np.random.default_rng(0)
    perms = [rng.permutation(n_steps * n_envs) for _ in range(n_perms)]
    sb3_iter, our_iter = iter(perms), iter(perms)
    monkeypatch.setattr(sb3_buffers.np.random, "permutation", lambda n: next(sb3_iter))

    def ours(n: int, size: int, generator: torch.Generator | None):
        p = next(our_iter)
        rows = torch.from_numpy((p % n_steps) * n_envs + p // n_steps)  # env-major -> time-major
        return (rows[i : i + size] for i in range(0, n, size))

    monkeypatch.setattr(core, "iterate_minibatches", ours)


def sb3_rollout(cfg: PPOConfig, max_episode_steps: int):
    """SB3's PPO after one ``collect_rollouts`` on CartPole cut at ``max_episode_steps`` (so the rollout has
    truncations, bootstrapped by SB3), and our policy with SB3's weights."""
    env = make_vec_env(lambda: gym.make("CartPole-v1", max_episode_steps=max_episode_steps), n_envs=cfg.n_envs,
                       seed=cfg.seed)
    model = PPO("MlpPolicy", env, seed=cfg.seed, **sb3_kwargs(cfg))
    total, callback = model._setup_learn(cfg.batch_size, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, cfg.n_steps)
    model._update_current_progress_remaining(model.num_timesteps, total)
    ours = make_policy(env.observation_space, env.action_space, net_arch=cfg.net_arch)
    copy_weights(model.policy, ours)
    return model, ours


def our_batch(buf: sb3_buffers.RolloutBuffer) -> dict[str, torch.Tensor]:
    """SB3's (n_steps, n_envs) buffer as our time-major ``(N, 1)`` batch, before SB3's ``get`` reorders it."""
    def flat(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.reshape(-1, *x.shape[2:]).copy())

    return {"obs": flat(buf.observations), "actions": flat(buf.actions).long(),
            "logprobs": flat(buf.log_probs)[:, None], "values": flat(buf.values)[:, None],
            "advantages": flat(buf.advantages)[:, None], "returns": flat(buf.returns)[:, None],
            "mask": torch.ones(buf.observations.shape[0] * buf.observations.shape[1], 1)}


def record_sb3_logs(model: PPO) -> dict[str, float]:
    logged: dict[str, float] = {}
    model.logger.record = lambda key, value, exclude=None: logged.__setitem__(key, float(value))
    return logged


def first_step_grads(optimizer: torch.optim.Optimizer, named: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Gradients (after clipping) at the optimizer's first ``step``, by parameter name."""
    grads: dict[str, torch.Tensor] = {}
    step = optimizer.step

    def recording_step(*args, **kwargs):
        if not grads:
            grads.update({k: p.grad.detach().clone() for k, p in named.items()})
        return step(*args, **kwargs)

    optimizer.step = recording_step
    return grads


def test_first_minibatch_losses_and_gradients_match_sb3(monkeypatch):
    torch.manual_seed(0)
    # one epoch of one minibatch: SB3's logged losses are those of the first minibatch
    cfg = PPOConfig.sb3(n_envs=2, n_steps=64, seed=0, update=dict(minibatch_size=128, n_epochs=1))
    model, ours = sb3_rollout(cfg, max_episode_steps=15)
    batch = our_batch(model.rollout_buffer)
    patch_permutations(monkeypatch, cfg.n_steps, cfg.n_envs, n_perms=1)
    optimizer = torch.optim.Adam(ours.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    sb3_grads = first_step_grads(model.policy.optimizer, dict(model.policy.named_parameters()))
    our_grads = first_step_grads(optimizer, dict(ours.named_parameters()))
    logged = record_sb3_logs(model)

    model.train()
    stats = ppo_update(ours, optimizer, batch, cfg.update)

    for key in ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl",
                "train/clip_fraction", "train/explained_variance"):
        assert stats[key] == pytest.approx(logged[key], rel=1e-5, abs=1e-6), key
    assert logged["train/value_loss"] > 0.1 and logged["train/entropy_loss"] < -0.6  # non-trivial losses
    for name, g in sb3_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(our_grads[our_name(name)], g, rtol=1e-5, atol=1e-6, msg=name)
    assert max_param_diff(model.policy, ours) < 1e-6


def test_one_train_matches_sb3(monkeypatch):
    torch.manual_seed(0)
    cfg = PPOConfig.sb3(n_envs=2, n_steps=64, gamma=0.98, gae_lambda=0.8, seed=1,
                        update=dict(minibatch_size=32, n_epochs=3))
    model, ours = sb3_rollout(cfg, max_episode_steps=15)
    assert (model.rollout_buffer.rewards != 1).any()  # the rollout has truncations bootstrapped by SB3
    batch = our_batch(model.rollout_buffer)
    patch_permutations(monkeypatch, cfg.n_steps, cfg.n_envs, n_perms=cfg.update.n_epochs)
    optimizer = torch.optim.Adam(ours.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    logged = record_sb3_logs(model)

    model.train()
    stats = ppo_update(ours, optimizer, batch, cfg.update)

    assert stats["train/n_updates"] == cfg.update.n_epochs * cfg.batch_size // cfg.update.minibatch_size
    # means over every minibatch; SB3's train/approx_kl averages the last epoch only, so it is not compared
    for key in ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/clip_fraction",
                "train/explained_variance"):
        assert stats[key] == pytest.approx(logged[key], rel=1e-5, abs=1e-6), key
    assert max(float((v - before[k]).abs().max()) for k, v in ours.state_dict().items()) > 1e-3  # it moved
    assert max_param_diff(model.policy, ours) < 1e-5


def sb3_gae(rewards, values, episode_starts, last_value, last_done, gamma, gae_lambda):
    """SB3's ``RolloutBuffer.compute_returns_and_advantage`` on ``(T, N)`` arrays."""
    T, N = rewards.shape
    buf = sb3_buffers.RolloutBuffer(T, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), "cpu", gamma=gamma,
                                    gae_lambda=gae_lambda, n_envs=N)
    for t in range(T):
        buf.add(np.zeros((N, 1), np.float32), np.zeros((N, 1)), rewards[t], episode_starts[t],
                torch.from_numpy(values[t]), torch.zeros(N))
    buf.compute_returns_and_advantage(torch.from_numpy(last_value), last_done)
    return buf.advantages, buf.returns


def test_gae_matches_sb3_with_truncation_and_both_autoreset_modes():
    gamma, lam = 0.98, 0.8
    rng = np.random.default_rng(0)
    # one env, 10 steps: episode A ends *terminated* at t=2, episode B is *truncated* at t=6 (V(final obs)
    # = 2.5), episode C runs on past the rollout (bootstrapped with last_value), and a second env truncated
    # at the very last step (bootstrap in the reward, then the recursion stops)
    T = 10
    raw_rewards = rng.uniform(0.5, 1.5, (T, 2)).astype(np.float32)
    values = rng.normal(size=(T, 2)).astype(np.float32)
    term = np.zeros((T, 2), bool)
    trunc = np.zeros((T, 2), bool)
    term[2, 0], trunc[6, 0], trunc[T - 1, 1] = True, True, True
    v_final = {(6, 0): np.float32(2.5), (T - 1, 1): np.float32(-1.25)}
    last_value = np.array([0.7, 0.3], np.float32)  # V(obs after the rollout); env 1's is a reset obs
    done = term | trunc

    # same-step autoreset (SB3's VecEnv and our sb3 preset): the truncation bootstrap goes into the reward
    rewards = raw_rewards.copy()
    for (t, i), v in v_final.items():
        rewards[t, i] += gamma * v
    episode_starts = np.concatenate([np.zeros((1, 2), np.float32), done[:-1].astype(np.float32)])
    adv_sb3, ret_sb3 = sb3_gae(rewards, values, episode_starts, last_value, done[-1], gamma, lam)
    adv, ret = rollout_gae(rewards, values, last_value, done.astype(np.float32), done.astype(np.float32), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), adv_sb3, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret.numpy(), ret_sb3, rtol=1e-6, atol=1e-6)

    # Gymnasium 1.x next-step autoreset (env 0 only): after each done comes a reset step whose observation is
    # the final one (value V(final obs)), reward 0, masked out; the truncation bootstraps through values[t+1]
    rows, valid = [], []
    for t in range(T):
        rows.append((raw_rewards[t, 0], values[t, 0], term[t, 0], done[t, 0]))
        valid.append(True)
        if done[t, 0]:
            rows.append((0.0, v_final.get((t, 0), np.float32(9.0)), False, False))  # 9.0: unused (terminal)
            valid.append(False)
    r_ns, v_ns, term_ns, done_ns = (np.array(c, np.float32)[:, None] for c in zip(*rows))
    adv_ns, ret_ns = rollout_gae(r_ns, v_ns, last_value[:1], term_ns, done_ns, gamma, lam)
    keep = np.array(valid)
    np.testing.assert_allclose(adv_ns.numpy()[keep, 0], adv_sb3[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret_ns.numpy()[keep, 0], ret_sb3[:, 0], rtol=1e-6, atol=1e-6)


def test_learn_end_to_end_matches_sb3(monkeypatch):
    """Rollouts (same env seeds, same action RNG, truncation bootstraps), LR and clip schedules, GAE and updates:
    three iterations of rl-zoo's CartPole preset, our agent vs SB3's, from the same weights."""
    n_steps, n_envs, iterations = 32, 2, 3
    cfg = PPOConfig.rl_zoo_cartpole(n_envs=n_envs, n_steps=n_steps, seed=3, update=dict(minibatch_size=16, n_epochs=2))
    env_kwargs = {"max_episode_steps": 25}  # CartPole cut at 25 steps: truncations inside every rollout
    sb3 = SB3Agent("CartPole-v1", cfg, env_kwargs=env_kwargs)
    ours = PPOAgent("CartPole-v1", cfg, env_kwargs=env_kwargs)
    copy_weights(sb3.model.policy, ours.policy)
    patch_permutations(monkeypatch, n_steps, n_envs, n_perms=cfg.update.n_epochs * iterations)
    ours.sample_gen = torch.default_generator  # SB3 samples actions from the global torch RNG
    total = cfg.batch_size * iterations

    torch.manual_seed(123)
    sb3.learn(total)
    torch.manual_seed(123)
    ours.learn(total)

    assert [e[:2] for e in ours.episodes] == [e[:2] for e in sb3.episodes]
    assert any(length == 25 for _, _, length in ours.episodes)  # truncated episodes happened
    assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(sb3.model.policy.optimizer.param_groups[0]["lr"])
    assert max_param_diff(sb3.model.policy, ours.policy) < 1e-5
    ours.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_each_librarys_own_start_has_the_same_law(env_id):
    """What the parity tests cannot see, because they copy SB3's weights: each library's own start. Same layer
    shapes, orthogonal weights with the same gains (every singular value sqrt 2, 0.01 or 1), zero biases, float32
    observations, and the same first observation for the same seed (env i reset with seed + i in both)."""
    cfg = PPOConfig.sb3(n_envs=2, seed=5)
    ours, sb3 = PPOAgent(env_id, cfg), SB3Agent(env_id, cfg)
    p, q = ours.policy, sb3.model.policy
    mine = [*p.pi_net, *p.vf_net, p.action_net, p.value_net]
    theirs = [*q.mlp_extractor.policy_net, *q.mlp_extractor.value_net, q.action_net, q.value_net]
    for a, b in zip([m for m in mine if isinstance(m, torch.nn.Linear)],
                    [m for m in theirs if isinstance(m, torch.nn.Linear)], strict=True):
        assert a.weight.shape == b.weight.shape
        sa, sb = torch.linalg.svdvals(a.weight.detach()), torch.linalg.svdvals(b.weight.detach())
        torch.testing.assert_close(sa, torch.full_like(sa, float(sb[0])))  # orthogonal, SB3's gain
        torch.testing.assert_close(sb, torch.full_like(sb, float(sb[0])))
        assert not a.bias.any() and not b.bias.any()
    assert ours.envs.single_observation_space.dtype == sb3.env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(ours.envs.reset(seed=cfg.seed)[0], sb3.env.reset())
