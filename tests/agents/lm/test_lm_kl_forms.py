"""Which KL forms pull the policy back to the reference, by exact enumeration (no sampling).

A categorical policy pi = softmax(theta) over 5 tokens and a fixed reference q. The exact gradient of
KL(pi || q) comes from autograd of the enumerated sum. Each form's *expected* gradient under pi (the tokens of a
rollout are drawn from pi_old = pi) is computed exactly by weighting every token with pi(x), through the losses
the trainer uses (agents.ppo.core.policy_loss, k3_kl_loss), so the tolerance is float rounding:

- k1 in the reward (the default): the policy-gradient loss with advantage -k1 equals grad KL(pi || q);
- k3 as a loss term, weighted by the ratio pi / pi_old (``--kl-loss-coef``): equals grad KL(pi || q);
- k3 as a loss term without the ratio (GRPO's): equals grad KL(q || pi), the reverse KL, not KL(pi || q);
- k3 in the reward (refused by ``validate``): its expected gradient is not grad KL(pi || q).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agents.ppo.core import k3_kl_loss, policy_loss  # noqa: E402

F64 = dict(dtype=torch.float64)  # float64: the tolerance is rounding
CASES = [  # (theta, q)
    (torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3], **F64), torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], **F64)),
    (torch.tensor([3.0, 0.0, 0.0, -2.0, 1.0], **F64), torch.tensor([0.05, 0.4, 0.4, 0.1, 0.05], **F64)),
]


def _grad(f, theta):
    theta = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta), theta)
    return g


def exact_kl(theta, q):  # KL(pi || q), enumerated
    logp = torch.log_softmax(theta, -1)
    return (logp.exp() * (logp - q.log())).sum()


def reverse_kl(theta, q):  # KL(q || pi)
    return (q * (q.log() - torch.log_softmax(theta, -1))).sum()


def _expected(theta, q, per_token_loss):
    """sum_x pi_old(x) * loss(x): the exact expectation of a per-token loss over tokens drawn from pi_old = pi,
    as the trainer's weighted masked sum (the weight carries pi_old)."""
    logp = torch.log_softmax(theta, -1)[None]  # (1, V): V "tokens", one per possible action
    old = logp.detach()
    return per_token_loss(logp, old, q.log()[None], old.exp())


def k1_in_reward(logp, old, ref, weight):
    advantage = -(old - ref)  # reward -k1 per token (kl_coef 1), detached: a reward
    loss, _ = policy_loss(logp, old, advantage, torch.ones_like(logp), clip_range=0.2, weight=weight)
    return loss


def k3_in_reward(logp, old, ref, weight):
    log_r = ref - old
    advantage = -(torch.expm1(log_r) - log_r)  # reward -k3, detached
    loss, _ = policy_loss(logp, old, advantage, torch.ones_like(logp), clip_range=0.2, weight=weight)
    return loss


def k3_loss_with_ratio(logp, old, ref, weight):
    return (k3_kl_loss(logp, old, ref) * weight).sum()


def k3_loss_without_ratio(logp, old, ref, weight):
    log_r = ref - logp
    return ((torch.expm1(log_r) - log_r) * weight).sum()


@pytest.mark.parametrize("theta, q", CASES)
def test_supported_kl_forms_have_the_exact_kl_gradient(theta, q):
    true = _grad(lambda t: exact_kl(t, q), theta)
    assert true.abs().max() > 0.1  # pi is far from q: a real gradient to match
    for form in (k1_in_reward, k3_loss_with_ratio):
        got = _grad(lambda t, form=form: _expected(t, q, form), theta)
        torch.testing.assert_close(got, true, rtol=1e-10, atol=1e-12, msg=form.__name__)


@pytest.mark.parametrize("theta, q", CASES)
def test_refused_and_unweighted_k3_forms_do_not(theta, q):
    true = _grad(lambda t: exact_kl(t, q), theta)
    unweighted = _grad(lambda t: _expected(t, q, k3_loss_without_ratio), theta)
    torch.testing.assert_close(unweighted, _grad(lambda t: reverse_kl(t, q), theta), rtol=1e-10, atol=1e-12)
    assert (unweighted - true).norm() > 0.1 * true.norm()  # the reverse KL's gradient, a different one
    in_reward = _grad(lambda t: _expected(t, q, k3_in_reward), theta)
    assert (in_reward - true).norm() > 0.1 * true.norm()  # why validate refuses --kl-estimator k3
