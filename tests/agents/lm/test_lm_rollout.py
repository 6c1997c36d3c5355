"""KV-cached rollouts through BatchedTextGenEnv: step-by-step log-probs and values equal one forward pass
over the final sequences; greedy rollouts reproduce ``model.generate``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from agents.lm.policy import CausalLMPolicy  # noqa: E402
from agents.lm.rollout import rollout, sample_tokens  # noqa: E402
from tests.conftest import make_tiny_gpt2  # noqa: E402
from textgym.envs.vector import BatchedTextGenEnv  # noqa: E402

PROMPTS = ["a", "abcab", "ba", "cccabca", "b", "ab"]


def make_tiny_llama(vocab_size: int = 257, seed: int = 0):
    """A 2-layer Llama (the default model's architecture: RoPE, GQA, tied embeddings) with random weights."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True, bos_token_id=vocab_size - 1,
                                   eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return transformers.LlamaForCausalLM(cfg).eval()


def char_env(n: int = len(PROMPTS), max_new_tokens: int = 8) -> BatchedTextGenEnv:
    # vocabulary of 5 (a, b, c, >, EOS=4): a random model ends episodes at EOS often, so lengths differ
    return BatchedTextGenEnv(n, autoreset_mode="disabled", tokenizer="char:abc>", prompts=PROMPTS, scorer="length",
                             max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("make_model", [make_tiny_gpt2, make_tiny_llama], ids=["gpt2", "llama"])
def test_rollout_matches_one_forward_pass(make_model):
    pol = CausalLMPolicy(make_model(vocab_size=5), temperature=0.7, value_head_init="normal")
    env = char_env()
    r = rollout(pol, env, prompts=PROMPTS, generator=torch.Generator().manual_seed(1))
    lengths = r.lengths.tolist()
    assert len(set(lengths)) > 1, "test needs completions of different lengths"
    assert r.ended_with_eos.any()
    lp, _, v = pol.evaluate({"actions": r.completion_ids, "input_ids": r.input_ids, "attention_mask": r.attention_mask})
    m = r.completion_mask.bool()
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(v[m], r.values[m], atol=1e-5, rtol=0)
    assert (r.logprobs[~m] == 0).all() and (r.values[~m] == 0).all()
    # the env's prefixes are exactly the prompt + completion tokens, and it ended each where we did
    for i in range(len(PROMPTS)):
        ours = r.prompt_ids[i][r.prompt_mask[i].bool()].tolist() + r.completion_ids[i][m[i]].tolist()
        assert env.input_ids[i, : env.lengths[i]].tolist() == ours
        assert (r.completion_ids[i][m[i]][:-1] != 4).all()  # nothing after EOS
    assert env.done.all()
    np.testing.assert_allclose(r.scores.numpy(), env.scores, rtol=1e-6)


@pytest.mark.parametrize("make_model", [make_tiny_gpt2, make_tiny_llama], ids=["gpt2", "llama"])
def test_greedy_rollout_reproduces_generate(make_model):
    model = make_model()
    pol = CausalLMPolicy(model, vocab_size=257)
    prompts = ["hello", "a", "the cat sat on", "xy"]
    env = BatchedTextGenEnv(len(prompts), autoreset_mode="disabled", tokenizer="byte", prompts=prompts,
                            scorer="length", max_new_tokens=12)
    r = rollout(pol, env, prompts=prompts, greedy=True)
    # model.generate on the same left-padded batch (HF builds position ids from the mask the same way)
    gen = model.generate(r.prompt_ids, attention_mask=r.prompt_mask, max_new_tokens=12, do_sample=False,
                         pad_token_id=256, eos_token_id=256)
    for i in range(len(prompts)):
        ours = r.completion_ids[i][r.completion_mask[i].bool()].tolist()
        theirs = gen[i, r.prompt_ids.shape[1]:].tolist()
        if 256 in theirs:
            theirs = theirs[: theirs.index(256) + 1]
        assert ours == theirs
        # and one prompt alone, unpadded
        ids = torch.tensor([list(prompts[i].encode())])
        alone = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                               pad_token_id=256, eos_token_id=256)[0, ids.shape[1]:].tolist()
        assert ours == alone[: len(ours)]


def test_rollout_rejects_an_env_of_another_vocabulary():
    pol = CausalLMPolicy(make_tiny_gpt2(vocab_size=5))
    env = BatchedTextGenEnv(2, autoreset_mode="disabled", tokenizer="byte", prompts=["ab"], scorer="length",
                            max_new_tokens=2)
    with pytest.raises(ValueError, match="action space has 257 ids but the model outputs 5"):
        rollout(pol, env)


def test_same_seed_same_rollout():
    pol = CausalLMPolicy(make_tiny_gpt2(vocab_size=5))
    a = rollout(pol, char_env(), seed=3, generator=torch.Generator().manual_seed(0))
    b = rollout(pol, char_env(), seed=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.completion_ids, b.completion_ids) and a.prompts == b.prompts


def test_separate_critic_values_come_from_one_pass_over_the_sequences():
    pol = CausalLMPolicy(make_tiny_gpt2(vocab_size=5), separate_critic=True, value_head_init="normal")
    with torch.no_grad():
        for p in pol.critic.parameters():
            p.add_(0.1 * torch.randn_like(p))  # make the critic differ from the policy's trunk
    r = rollout(pol, char_env(), prompts=PROMPTS, generator=torch.Generator().manual_seed(2))
    _, _, v = pol.evaluate({"actions": r.completion_ids, "input_ids": r.input_ids, "attention_mask": r.attention_mask})
    m = r.completion_mask.bool()
    torch.testing.assert_close(v[m], r.values[m])


def test_final_infos_carry_score_parts():
    pol = CausalLMPolicy(make_tiny_gpt2(vocab_size=5))
    r = rollout(pol, char_env(), prompts=PROMPTS, generator=torch.Generator().manual_seed(1))
    assert all("score" in i and "end_reason" in i for i in r.infos)
    assert all(isinstance(i.get("score_parts"), dict) for i in r.infos)


def test_sample_tokens_draws_from_the_softmax():
    """Inverse-CDF sampling: the frequencies match softmax(logits) (a chi-square test), masked (-inf) tokens are
    never drawn, and the same generator state gives the same tokens."""
    logits = torch.tensor([0.0, 1.0, 2.0, float("-inf"), 0.5, -3.0])
    n = 100_000
    a = sample_tokens(logits.expand(n, -1), torch.Generator().manual_seed(0))
    counts = torch.bincount(a, minlength=6).double()
    p = torch.softmax(logits.double(), -1)
    assert counts[3] == 0
    keep = p > 0
    expected = p[keep] * n
    chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
    assert chi2 < 18.47  # the chi-square distribution's 0.999 quantile at 4 degrees of freedom
    b = sample_tokens(logits.expand(n, -1), torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_sample_tokens_per_row_generators_make_rows_independent():
    """With one generator per row, a row's token depends on its own generator only, not on the rows beside it
    (what lets 1 and N processes draw the same tokens)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g)
    together = sample_tokens(logits, [torch.Generator().manual_seed(s) for s in range(6)])
    alone = [int(sample_tokens(logits[i:i + 1], [torch.Generator().manual_seed(i)])[0]) for i in range(6)]
    assert together.tolist() == alone
    with pytest.raises(ValueError, match="2 generators for 6 rows"):
        sample_tokens(logits, [torch.Generator(), torch.Generator()])


@pytest.mark.parametrize("make_model", [make_tiny_gpt2, make_tiny_llama], ids=["gpt2", "llama"])
def test_kept_boundary_gives_the_full_forward(make_model):
    """The frozen blocks' output kept while decoding (keep_boundary) serves the update as well as one computed
    over the finished sequences: the same log-probs and values on every real completion token, the same states
    wherever something reads them (each row's last token predicts nothing)."""
    from agents.lm.policy import train_only_last_layers

    pol = train_only_last_layers(CausalLMPolicy(make_model(vocab_size=5), value_head_init="normal"), 1)
    r = rollout(pol, char_env(), prompts=PROMPTS, generator=torch.Generator().manual_seed(1), keep_boundary=True)
    assert r.boundary is not None and r.boundary.shape[:2] == r.input_ids.shape
    mb = {"actions": r.completion_ids, "input_ids": r.input_ids, "attention_mask": r.attention_mask}
    lp, _, v = pol.evaluate(mb)
    lp_kept, _, v_kept = pol.evaluate({**mb, "boundary": r.boundary})
    m = r.completion_mask.bool()
    torch.testing.assert_close(lp_kept[m], lp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(v_kept[m], v[m], atol=1e-5, rtol=0)
    computed = pol.boundary_states(r.input_ids, r.attention_mask)
    real = r.attention_mask.bool()
    P = r.prompt_ids.shape[1]
    real[torch.arange(len(real)), P + r.lengths - 1] = False  # a row's last token is fed as padding, if at all
    torch.testing.assert_close(r.boundary[real], computed[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("top_k,top_p", [(3, 1.0), (0, 0.6), (4, 0.8)])
def test_truncated_sampling_matches_the_truncated_distribution(top_k, top_p):
    """Tokens drawn with top-k / top-p follow the truncated, renormalised softmax (chi-square), and no token
    outside the kept set is ever drawn."""
    from scipy import stats

    from agents.lm.policy import truncate_logits

    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
    probs = torch.softmax(truncate_logits(logits, top_k, top_p), -1)[0]  # (V,)
    kept = probs > 0
    assert 1 <= int(kept.sum()) < 8
    if top_k:
        assert int(kept.sum()) <= top_k
    n = 20_000
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(truncate_logits(logits.expand(n, -1), top_k, top_p), g)
    counts = torch.bincount(draws, minlength=8).double()
    assert counts[~kept].sum() == 0
    expected = probs[kept].double() / probs[kept].double().sum() * n  # exact total (float32 probs sum to 1 +- 3e-8)
    res = stats.chisquare(counts[kept].numpy(), expected.numpy())
    assert res.pvalue > 1e-3, (counts, probs)
    # top_p keeps the smallest head of the sorted distribution whose mass reaches top_p
    full = torch.softmax(logits, -1)[0]
    if top_p < 1 and not top_k:
        assert full[kept].sum() >= top_p and full[kept].sum() - full[kept].min() < top_p


def test_truncated_rollout_log_probs_equal_one_forward_pass():
    pol = CausalLMPolicy(make_tiny_llama(vocab_size=5), temperature=0.9, top_k=3, top_p=0.9, value_head_init="normal")
    r = rollout(pol, char_env(), prompts=PROMPTS, generator=torch.Generator().manual_seed(2))
    lp, ent, _ = pol.evaluate({"actions": r.completion_ids, "input_ids": r.input_ids,
                               "attention_mask": r.attention_mask})
    m = r.completion_mask.bool()
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-5, rtol=0)
    assert torch.isfinite(lp[m]).all() and torch.isfinite(ent).all()
    assert r.support is not None and r.support.shape == (*r.completion_ids.shape, 5)
    assert (r.support.sum(-1)[m] <= 3).all()  # top-k = 3
    lp_s, _, _ = pol.evaluate({"actions": r.completion_ids, "input_ids": r.input_ids,
                               "attention_mask": r.attention_mask, "support": r.support})
    torch.testing.assert_close(lp_s[m], r.logprobs[m], atol=1e-5, rtol=0)  # the kept set, renormalised
    full = pol.sequence_logprobs(r.input_ids, r.attention_mask, r.completion_ids.shape[1], truncate=False)
    assert (lp[m] >= full[m] - 1e-6).all() and (lp[m] > full[m] + 1e-4).any()  # renormalised: more mass


@pytest.mark.parametrize("kw,match", [({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                                      ({"top_k": -1}, "top_k")])
def test_bad_truncation_values_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        CausalLMPolicy(make_tiny_gpt2(vocab_size=5), **kw)


def test_truncated_rollout_padding_has_finite_log_probs():
    # top-k = 2: a finished row's (ignored) step puts EOS outside the kept set whenever EOS is not in the top 2;
    # that -inf log-prob once reached the padding (as -inf * 0 = NaN) and made the PPO loss NaN
    pol = CausalLMPolicy(make_tiny_llama(vocab_size=5, seed=1), top_k=2, value_head_init="normal")
    r = rollout(pol, char_env(), prompts=PROMPTS, generator=torch.Generator().manual_seed(0))
    m = r.completion_mask.bool()
    assert (~m).any(), "the test needs episodes of different lengths"
    assert torch.isfinite(r.logprobs).all() and torch.isfinite(r.values).all()
    assert (r.logprobs[~m] == 0).all() and r.support[~m].all()
    lp, ent, _ = pol.evaluate({"actions": r.completion_ids, "input_ids": r.input_ids,
                               "attention_mask": r.attention_mask, "support": r.support})
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(lp[m], r.logprobs[m], atol=1e-5, rtol=0)
