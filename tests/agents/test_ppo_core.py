"""agents/ppo/core.py: GAE against a hand recursion, masked statistics, the first-minibatch invariants, and the
statistics accumulator, and early stopping that changes nothing until it triggers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from agents.ppo.core import (  # noqa: E402
    PPOUpdateConfig,
    SingleProcess,
    UpdateStats,
    compute_gae,
    explained_variance,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    ppo_update,
    sequence_gae,
    value_loss,
)


def hand_gae(rewards, values, next_values, terminated, ended, gamma, lam):
    """The textbook recursion, one env, plain Python floats."""
    n = len(rewards)
    adv = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1 - ended[t]) * last
        adv[t] = last
    return adv


def test_gae_seed_example_quick_is_11_74():
    # the seed's example: "The quick brown fox" rated [3, 4, 5, 4], gamma 0.9, lambda 1, V = 0, episode ends at "fox"
    r = torch.tensor([[3.0], [4.0], [5.0], [4.0]])
    zeros = torch.zeros_like(r)
    done = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    adv, ret = compute_gae(r, zeros, zeros, 1 - done, 1 - done, gamma=0.9, gae_lambda=1.0)
    assert adv[1, 0].item() == pytest.approx(11.74)  # 4 + 0.9*5 + 0.81*4
    assert adv[0, 0].item() == pytest.approx(3 + 0.9 * 11.74)
    assert torch.equal(ret, adv)  # V = 0


def test_gae_reward_only_at_the_end():
    r = torch.tensor([0.0, 0.0, 0.0, 1.0])[:, None]
    zeros = torch.zeros_like(r)
    done = torch.tensor([0.0, 0.0, 0.0, 1.0])[:, None]
    adv, _ = compute_gae(r, zeros, zeros, 1 - done, 1 - done, gamma=0.9, gae_lambda=1.0)
    assert adv[:, 0].tolist() == pytest.approx([0.9**3, 0.9**2, 0.9, 1.0])


@pytest.mark.parametrize("lam", [0.0, 0.8, 0.95, 1.0])
def test_gae_matches_hand_recursion_with_episode_ends_and_truncation(lam):
    g = torch.Generator().manual_seed(0)
    T = 12
    rewards = torch.randn(T, generator=g)
    values = torch.randn(T, generator=g)
    next_values = torch.randn(T, generator=g)
    terminated = torch.zeros(T)
    ended = torch.zeros(T)
    terminated[3] = ended[3] = 1.0  # terminated: no bootstrap
    ended[7] = 1.0  # truncated: bootstrap with next_values[7] (the final observation's value), no carry-over
    adv, ret = compute_gae(rewards[:, None], values[:, None], next_values[:, None], 1 - terminated[:, None],
                           1 - ended[:, None], 0.97, lam)
    want = hand_gae(rewards.tolist(), values.tolist(), next_values.tolist(), terminated.tolist(), ended.tolist(),
                    0.97, lam)
    assert adv[:, 0].tolist() == pytest.approx(want, abs=1e-5)
    assert torch.allclose(ret, adv + values[:, None])
    # the truncated step bootstraps on the final observation alone
    assert adv[7, 0].item() == pytest.approx(rewards[7].item() + 0.97 * next_values[7].item() - values[7].item(),
                                             abs=1e-6)
    assert adv[3, 0].item() == pytest.approx(rewards[3].item() - values[3].item(), abs=1e-6)


def test_sequence_gae_ignores_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0], [0.0, 2.0, 9.0, 9.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 7.0], [0.5, 0.6, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = sequence_gae(rewards, values, mask, gamma=1.0, gae_lambda=1.0)
    assert adv[0, :3].tolist() == pytest.approx([1 - 0.1, 1 - 0.2, 1 - 0.3])
    assert adv[1, :2].tolist() == pytest.approx([2 - 0.5, 2 - 0.6])
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_masked_statistics_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 1e6], [4.0, 1e6, -1e6, 1e6]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).float()
    real = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert masked_mean(x, mask).item() == pytest.approx(real.mean().item())
    assert masked_var(x, mask).item() == pytest.approx(real.var().item())
    w = masked_whiten(x, mask)
    assert (w[mask == 0] == 0).all()
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # empty mask: 0, not nan


class _TinyPolicy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pi = torch.nn.Linear(3, 4)
        self.v = torch.nn.Linear(3, 1)

    def evaluate(self, mb):
        logp = self.pi(mb["obs"]).log_softmax(-1)
        lp = logp.gather(-1, mb["actions"])  # (n, 1)
        ent = -(logp.exp() * logp).sum(-1, keepdim=True)
        return lp, ent, self.v(mb["obs"])


def _batch(policy, n=32):
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n, 3, generator=g)
    actions = torch.randint(0, 4, (n, 1), generator=g)
    with torch.no_grad():
        lp, _, v = policy.evaluate({"obs": obs, "actions": actions})
    return {"obs": obs, "actions": actions, "logprobs": lp, "values": v,
            "advantages": torch.randn(n, 1, generator=g), "returns": torch.randn(n, 1, generator=g),
            "mask": torch.ones(n, 1)}


def test_first_minibatch_ratio_is_exactly_one_and_nothing_clipped():
    policy = _TinyPolicy()
    batch = _batch(policy)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    stats = ppo_update(policy, opt, batch, PPOUpdateConfig(n_epochs=1, minibatch_size=32))
    assert stats["train/ratio"] == 1.0
    assert stats["train/clip_fraction"] == 0.0
    assert stats["train/approx_kl"] == 0.0
    assert stats["train/n_updates"] == 1.0


def test_target_kl_stops_early_sb3_style():
    policy = _TinyPolicy()
    batch = _batch(policy, 64)
    opt = torch.optim.Adam(policy.parameters(), lr=0.5)  # huge steps: the KL explodes after the first one
    stats = ppo_update(policy, opt, batch, PPOUpdateConfig(n_epochs=10, minibatch_size=16, target_kl=1e-4))
    assert stats["train/early_stop"] == 1.0
    assert stats["train/n_updates"] < 40


def test_ppo_update_rejects_bad_minibatch_size():
    policy = _TinyPolicy()
    with pytest.raises(ValueError, match="minibatch_size"):
        ppo_update(policy, torch.optim.Adam(policy.parameters()), _batch(policy, 8),
                   PPOUpdateConfig(minibatch_size=64))


def test_update_stats_average_each_steps_sums_over_its_tokens():
    """Two optimizer steps: a step's value is its micro-batches' sums over its token count; keys are averaged over
    steps; a minibatch that stopped the update adds its KL only (as SB3 logs it)."""
    st = UpdateStats(vf_coef=0.5, ent_coef=0.1)
    # rows: approx_kl, clip_fraction, ratio, policy_gradient_loss, value_loss, entropy, kl_loss (masked sums)
    st.add_step([torch.tensor([1.0, 2.0, 4.0, 2.0, 4.0, 8.0, 0.0]), torch.tensor([1.0, 0.0, 4.0, 2.0, 4.0, 0.0, 0.0])],
                torch.tensor(4.0), torch.tensor(3.0))
    st.add_step([torch.tensor([0.0, 1.0, 2.0, -2.0, 2.0, 2.0, 0.0])], torch.tensor(2.0), torch.tensor(1.0))
    m = st.means()
    assert m["train/approx_kl"] == pytest.approx((2 / 4 + 0 / 2) / 2)
    assert m["train/clip_fraction"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert m["train/ratio"] == pytest.approx((8 / 4 + 2 / 2) / 2)
    assert m["train/value_loss"] == pytest.approx((8 / 4 + 2 / 2) / 2)
    assert m["train/entropy_loss"] == pytest.approx(-(8 / 4 + 2 / 2) / 2)
    assert m["train/loss"] == pytest.approx(((4 + 0.5 * 8 - 0.1 * 8) / 4 + (-2 + 0.5 * 2 - 0.1 * 2) / 2) / 2)
    assert m["train/grad_norm"] == 2.0
    st.stopping_kl = 0.25
    assert st.means()["train/approx_kl"] == pytest.approx((0.5 + 0 + 0.25) / 3)


def test_explained_variance_is_sb3s():
    from stable_baselines3.common.utils import explained_variance as sb3_ev

    g = torch.Generator().manual_seed(3)
    y, y_pred = torch.randn(50, 1, generator=g), torch.randn(50, 1, generator=g)
    assert explained_variance(y_pred, y, torch.ones(50, 1)) == pytest.approx(
        float(sb3_ev(y_pred.numpy().ravel(), y.numpy().ravel())), rel=1e-5)
    assert np.isnan(explained_variance(y_pred, torch.ones(50, 1), torch.ones(50, 1)))


def test_single_process_is_the_default_and_changes_nothing():
    runs = []
    for dist in (None, SingleProcess()):
        policy = _TinyPolicy()
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        stats = ppo_update(policy, opt, _batch(policy, 64), PPOUpdateConfig(n_epochs=2, minibatch_size=16),
                           generator=torch.Generator().manual_seed(0), dist=dist)
        runs.append((stats, [p.detach().clone() for p in policy.parameters()]))
    assert runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


@pytest.mark.parametrize("mask_some", [False, True])
def test_deferred_statistics_equal_per_minibatch_ones(mask_some):
    """A target_kl that never triggers reads each minibatch's KL before its step: same steps, same numbers as
    without one."""
    runs = []
    for target_kl in (None, 1e9):
        policy = _TinyPolicy()
        batch = _batch(policy, 64)
        if mask_some:
            batch["mask"][::5] = 0
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        cfg = PPOUpdateConfig(n_epochs=3, minibatch_size=16, micro_batch_size=8, ent_coef=0.01, target_kl=target_kl)
        stats = ppo_update(policy, opt, batch, cfg, generator=torch.Generator().manual_seed(0))
        runs.append((stats, [p.detach().clone() for p in policy.parameters()]))
    (s0, p0), (s1, p1) = runs
    assert s0 == s1 and s0["train/n_updates"] == 12
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))


def test_clipped_losses_by_hand():
    ones = torch.ones(2, 1)
    new_lp, old_lp = torch.log(torch.tensor([[1.5], [0.5]])), torch.zeros(2, 1)  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0], [-1.0]])
    loss, st = policy_loss(new_lp, old_lp, adv, ones, 0.2)
    assert loss.item() == pytest.approx(-1.2 + 0.8)  # -min(1.5, 1.2) * 1 and -min(-0.5, -0.8): both clipped
    assert st["clip_fraction"].item() == 2.0 and st["ratio"].item() == pytest.approx(2.0)
    v_new, v_old, ret = torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[3.0]])
    assert value_loss(v_new, v_old, ret, ones[:1], None).item() == 1.0
    assert value_loss(v_new, v_old, ret, ones[:1], 0.5).item() == 6.25  # max(1, (0.5 - 3)^2)
    assert value_loss(v_new, v_old, ret, ones[:1], 0.5, clip_takes_max=False).item() == 6.25
