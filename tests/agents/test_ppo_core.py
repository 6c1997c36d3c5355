"""agents/ppo/core.py: GAE against a hand recursion, masked statistics, the first-minibatch invariants, and the
speed paths (no mask, gradient clipping, deferred statistics) giving the same numbers as the plain ones."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agents.ppo.core import (  # noqa: E402
    PPOUpdateConfig,
    clip_grad_norm,
    compute_gae,
    masked_mean,
    masked_sum,
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


def test_no_mask_is_bitwise_an_all_ones_mask():
    """``mask=None`` (what ppo_update passes for an all-valid batch) skips the products, not a bit of the result."""
    g = torch.Generator().manual_seed(2)
    x, y, z = (torch.randn(96, 1, generator=g) for _ in range(3))
    ones = torch.ones(96, 1)
    for fn in (masked_sum, masked_mean, masked_var, masked_whiten):
        assert torch.equal(fn(x, None), fn(x, ones)), fn.__name__
    assert torch.equal(masked_var(x, None, unbiased=False), masked_var(x, ones, unbiased=False))
    (l0, s0), (l1, s1) = policy_loss(x, y, z, None, 0.1), policy_loss(x, y, z, ones, 0.1)
    assert torch.equal(l0, l1) and all(torch.equal(s0[k], s1[k]) for k in s0)
    for clip in (None, 0.05):
        assert torch.equal(value_loss(x, y, z, None, clip), value_loss(x, y, z, ones, clip))


def test_clip_grad_norm_is_torchs_bitwise():
    a, b = _TinyPolicy(), _TinyPolicy()
    batch = _batch(a)
    for policy in (a, b):
        lp, ent, v = policy.evaluate(batch)
        (lp.sum() * 3 + ent.sum() + (v**2).sum()).backward()
    ours = clip_grad_norm(list(a.parameters()), 0.5)
    torchs = torch.nn.utils.clip_grad_norm_(list(b.parameters()), 0.5)
    assert ours > 0.5 and torch.equal(ours, torchs)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("mask_some", [False, True])
def test_deferred_statistics_equal_per_minibatch_ones(mask_some):
    """Without target_kl the statistics are read once at the end; with a target_kl that never triggers, after every
    minibatch (the early-stopping path). Same steps, same numbers."""
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
