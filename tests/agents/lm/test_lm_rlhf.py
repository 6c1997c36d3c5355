"""RLHF pieces: KL estimators, rewards at the last real token, KL controllers, score processing, one trainer
iteration (ratio 1 on the first minibatch, KL 0 before any update), LoRA reference = adapter off."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from agents.lm.policy import CausalLMPolicy  # noqa: E402
from agents.lm.rlhf import (  # noqa: E402
    AdaptiveKLController,
    FixedKLController,
    RLHFConfig,
    RLHFPPOConfig,
    RLHFTrainer,
    RunningMoments,
    config_differences,
    kl_per_token,
    last_token_onehot,
    process_scores,
    rlhf_rewards,
    validate,
)
from tests.conftest import make_tiny_gpt2  # noqa: E402


def test_kl_estimators():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(kl_per_token(lp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    r = torch.exp(ref - lp)
    torch.testing.assert_close(kl_per_token(lp, ref, "k3"), (r - 1) - torch.log(r))
    assert (kl_per_token(lp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(lp, ref, "k2")


def test_k_estimators_are_unbiased_for_the_true_kl():
    torch.manual_seed(0)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True)
    lp, lq = p.log()[x][None], q.log()[x][None]
    for est in ("k1", "k3"):
        assert abs(float(kl_per_token(lp, lq, est).mean()) - true_kl) < 0.01


def test_score_goes_to_the_last_real_token_and_kl_everywhere():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert last_token_onehot(mask).tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]
    kl = torch.ones(2, 4)
    rewards, non_score = rlhf_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, -0.1, 1.9, 0.0], [-1.1, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(non_score.sum(), torch.tensor(-0.4))


def test_adaptive_kl_controller_follows_ziegler():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(current_kl=12.0, n_steps=100)  # error clipped to +0.2
    assert math.isclose(c.value, 0.1 * (1 + 0.2 * 100 / 10_000))
    c2 = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c2.update(current_kl=5.4, n_steps=100)  # error -0.1
    assert math.isclose(c2.value, 0.1 * (1 - 0.1 * 100 / 10_000))
    f = FixedKLController(0.1)
    f.update(100.0, 1000)
    assert f.value == 0.1


def test_process_scores_eos_penalty_whitening_running_and_clip():
    s, eos = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([True, False, True, True])
    cfg = RLHFConfig(missing_eos_penalty=1.0)
    assert process_scores(s, eos, cfg, RunningMoments()).tolist() == [1.0, 1.0, 3.0, 4.0]
    w = process_scores(s, eos, RLHFConfig(score_norm="batch"), RunningMoments())
    assert abs(float(w.mean())) < 1e-6 and abs(float(w.std()) - 1) < 1e-5
    m = RunningMoments()
    out = process_scores(s * 10, eos, RLHFConfig(score_norm="running"), m)
    torch.testing.assert_close(out, s * 10 / m.std)
    assert abs(m.mean - 25.0) < 1e-2
    c = process_scores(s, eos, RLHFConfig(score_clip=2.5), RunningMoments())
    assert c.max() == 2.5


def test_validate_and_config_differences():
    with pytest.raises(ValueError, match="kl_estimator"):
        validate(RLHFConfig(kl_estimator="k9"))
    with pytest.raises(ValueError, match="minibatch_size"):
        validate(RLHFConfig(num_envs=4, ppo=RLHFPPOConfig(minibatch_size=8)))
    import dataclasses
    import json

    saved = json.loads(json.dumps(dataclasses.asdict(RLHFConfig())))
    assert config_differences(saved, RLHFConfig(iterations=99, out="elsewhere")) == []
    assert config_differences(saved, RLHFConfig(lr=1.0))[0].startswith("lr:")


def tiny_cfg(**kw) -> RLHFConfig:
    base = dict(task="TextGen-v0", tokenizer="char:abc>", prompts="gen:copy", scorer="copy", num_envs=8,
                max_new_tokens=4, n_samples=2, tensorboard=False, progress=False, lr=1e-3,
                ppo=RLHFPPOConfig(n_epochs=2, minibatch_size=4, micro_batch_size=2))
    base.update(kw)
    return RLHFConfig(**base)


def test_one_iteration_starts_at_zero_kl_and_ratio_one():
    tr = RLHFTrainer(tiny_cfg(), model=make_tiny_gpt2(vocab_size=5))
    m = tr.run_iteration()
    assert abs(m["rlhf/kl_ref"]) < 1e-5  # the policy is the reference before the first update
    assert m["train/n_updates"] == 4  # 2 epochs x (8 rows / 4)
    assert all(math.isfinite(v) for k, v in m.items() if k != "train/explained_variance")
    m2 = tr.run_iteration()
    assert m2["rlhf/kl_ref"] != 0.0 and tr.iteration == 2


def test_lora_reference_is_the_base_with_the_adapter_off():
    pytest.importorskip("peft")
    tr = RLHFTrainer(tiny_cfg(lora=True, lr=1e-2), model=make_tiny_gpt2(vocab_size=5))
    trainable = [n for n, p in tr.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n or "value_head" in n for n in trainable)
    assert tr.ref_parts is None
    tr.run_iteration()
    tr.run_iteration()
    r = tr.collect(seed=0)
    ref = tr.ref_logprobs(r)
    base = RLHFTrainer(tiny_cfg(), model=make_tiny_gpt2(vocab_size=5))  # same seed: same base weights
    torch.testing.assert_close(ref, base.ref_logprobs(r), atol=1e-5, rtol=0)
    assert not torch.allclose(ref, r.logprobs, atol=1e-4)  # the adapter changed the policy


def _learn(iterations: int) -> list[float]:
    cfg = RLHFConfig(task="TextGen-Target-v0", tokenizer="char:abcd>", prompts="gen:target", scorer="target",
                     num_envs=32, max_new_tokens=6, lr=3e-3, kl_coef=0.01, progress=False, tensorboard=False,
                     ppo=RLHFPPOConfig(n_epochs=4, minibatch_size=16, micro_batch_size=16))
    tr = RLHFTrainer(cfg, model=make_tiny_gpt2(vocab_size=6))
    return [tr.run_iteration()["rollout/ep_rew_mean"] for _ in range(iterations)]


def test_rlhf_learns_the_target_task_ci():
    """CI version: 8 iterations of the toy target task (6 per-token rewards) from a random tiny GPT-2."""
    rewards = _learn(8)
    assert sum(rewards[-2:]) / 2 > rewards[0] + 1.0, rewards


@pytest.mark.slow
def test_rlhf_learns_the_target_task():
    rewards = _learn(25)
    assert sum(rewards[-5:]) / 5 > 5.0, rewards  # out of 6


def _tiny_llama(layers: int = 3):
    from tests.agents.lm.test_lm_policy import tiny_llama

    return tiny_llama(layers=layers, vocab_size=5)


def test_trunk_reuse_gives_the_uncached_run():
    """Two iterations with the frozen trunk computed once per iteration equal those that run every block in every
    pass: the same losses, KL and weights (to float tolerance)."""
    runs = []
    for reuse in (True, False):
        tr = RLHFTrainer(tiny_cfg(trainable_layers=1, trunk_reuse=reuse), model=_tiny_llama())
        assert tr.reuse_trunk is reuse
        metrics = [tr.run_iteration() for _ in range(2)]
        runs.append((metrics, {k: v.clone() for k, v in tr.policy.state_dict().items()}))
    (m_a, w_a), (m_b, w_b) = runs
    for a, b in zip(m_a, m_b):
        for k in ("train/loss", "train/policy_gradient_loss", "train/value_loss", "train/approx_kl",
                  "train/grad_norm", "rlhf/kl_ref", "rollout/ep_rew_mean"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k
    assert m_a[1]["rlhf/kl_ref"] != 0.0  # the policy moved: the comparison is not of two untouched models
    for k in w_a:
        torch.testing.assert_close(w_a[k], w_b[k], atol=1e-6, rtol=1e-5)


def test_reference_shares_the_frozen_trunk_and_equals_a_full_copy():
    import copy

    model = _tiny_llama()
    initial = copy.deepcopy(model)  # what the reference must compute: the starting model, every block
    tr = RLHFTrainer(tiny_cfg(trainable_layers=1, lr=1e-2), model=model)
    assert sorted(tr.ref_parts) == ["model.layers.2", "model.norm"]  # one block and a norm, no LM copy
    for _ in range(2):
        tr.run_iteration()
    r = tr.collect(seed=0)
    boundary = tr.policy.boundary_states(r.input_ids, r.attention_mask)
    ref = tr.ref_logprobs(r, boundary)
    full = CausalLMPolicy(initial, vocab_size=tr.policy.vocab_size)
    expected = full.sequence_logprobs(r.input_ids, r.attention_mask, r.completion_ids.shape[1]) * r.completion_mask
    torch.testing.assert_close(ref, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(tr.ref_logprobs(r), expected, atol=1e-5, rtol=0)  # without trunk reuse too
    assert not torch.allclose(ref, r.logprobs, atol=1e-3)  # the policy has moved away from the reference


def test_bf16_first_ratio_is_one_and_first_kl_zero(monkeypatch):
    """Under bf16 autocast on the CPU (forced on: the numbers, not the speed, are under test), the old log-probs
    are recomputed on the update's own path, so the first minibatch's ratio is 1 and iteration 1's KL is 0."""
    import agents.lm.rlhf as rlhf
    from agents.lm.policy import CausalLMPolicy as Policy

    monkeypatch.setattr(rlhf, "cpu_supports_bf16", lambda: True)
    tr = RLHFTrainer(tiny_cfg(trainable_layers=2, precision="bf16"), model=_tiny_llama())
    assert tr.precision == "bf16" and tr.recompute and tr.reuse_trunk
    seen = []
    real_update, real_evaluate = rlhf.ppo_update, Policy.evaluate

    def update(policy, optimizer, batch, *a, **kw):
        seen.append(batch)
        return real_update(policy, optimizer, batch, *a, **kw)

    def evaluate(self, mb):
        out = real_evaluate(self, mb)
        if torch.is_grad_enabled() and len(seen) == 1:
            seen.append((mb, out))
        return out

    monkeypatch.setattr(rlhf, "ppo_update", update)
    monkeypatch.setattr(Policy, "evaluate", evaluate)
    m = tr.run_iteration()
    mb, (new_lp, _, _) = seen[1]  # the first micro-batch of the first minibatch
    ratio = torch.exp(new_lp.float() - mb["logprobs"]) * mb["mask"] + (1 - mb["mask"])
    assert (ratio - 1).abs().max() < 1e-3
    assert abs(m["rlhf/kl_ref"]) < 1e-3


def test_precision_choices_and_errors(monkeypatch):
    import agents.lm.rlhf as rlhf

    cpu = torch.device("cpu")
    monkeypatch.setattr(rlhf, "cpu_supports_bf16", lambda: False)
    assert rlhf.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ValueError, match="no native bf16.*--precision auto or fp32"):
        rlhf.resolve_precision("bf16", cpu)
    with pytest.raises(ValueError, match="precision must be"):
        validate(RLHFConfig(precision="fp16"))
    monkeypatch.setattr(rlhf, "cpu_supports_bf16", lambda: True)
    assert rlhf.resolve_precision("auto", cpu) == "bf16" and rlhf.resolve_precision("fp32", cpu) == "fp32"


def test_resume_in_another_precision_is_refused(monkeypatch):
    import agents.lm.rlhf as rlhf

    monkeypatch.setattr(rlhf, "cpu_supports_bf16", lambda: True)
    tr = RLHFTrainer(tiny_cfg(precision="bf16"), model=make_tiny_gpt2(vocab_size=5))
    tr.run_iteration()
    state = tr.state_dict()
    assert state["precision"] == "bf16"
    fp32 = RLHFTrainer(tiny_cfg(precision="fp32"), model=make_tiny_gpt2(vocab_size=5))
    with pytest.raises(ValueError, match="computed in bf16.*--precision bf16.*--allow-precision-change"):
        fp32.load_state_dict(state)
    allowed = RLHFTrainer(tiny_cfg(precision="fp32", allow_precision_change=True), model=make_tiny_gpt2(vocab_size=5))
    allowed.load_state_dict(state)
    assert allowed.iteration == 1


def test_ppo_config_is_the_ppo_update_config_with_rlhf_defaults():
    import dataclasses

    from agents.ppo.core import PPOUpdateConfig

    assert issubclass(RLHFPPOConfig, PPOUpdateConfig)
    assert [f.name for f in dataclasses.fields(RLHFPPOConfig)] == [f.name for f in dataclasses.fields(PPOUpdateConfig)]


def test_truncated_sampling_in_training_and_bad_values():
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        validate(RLHFConfig(top_p=0.0))
    with pytest.raises(ValueError, match="top_k must be an int >= 0"):
        validate(RLHFConfig(top_k=-2))
    tr = RLHFTrainer(tiny_cfg(top_k=2, top_p=0.9), model=make_tiny_gpt2(vocab_size=5))
    m = tr.run_iteration()
    # the KL is of the truncated sampling distribution to the whole reference: positive from the start
    assert m["rlhf/kl_ref"] > 0 and math.isfinite(m["rlhf/kl_ref"])
    assert abs(m["train/ratio"] - 1) < 0.05 and math.isfinite(m["train/loss"])


def test_stop_strings_reach_the_env():
    tr = RLHFTrainer(tiny_cfg(stop_strings=["ab", "c"]), model=make_tiny_gpt2(vocab_size=5))
    assert tr.env.stop_strings == ("ab", "c")
    r = tr.collect(seed=0)
    for info, text in zip(r.infos, r.completions):
        assert info["end_reason"] != "stop" or "ab" in text or "c" in text
