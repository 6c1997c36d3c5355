"""CausalLMPolicy: model inputs from padding, evaluate's shapes and parity, vocab masking, bad inputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from agents.lm.policy import CausalLMPolicy, load_causal_lm, model_inputs  # noqa: E402
from tests.conftest import make_tiny_gpt2  # noqa: E402


def test_model_inputs_position_ids_count_real_tokens():
    ids = torch.tensor([[9, 9, 5, 6, 7, 9], [1, 2, 3, 4, 9, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    out = model_inputs(ids, mask)
    assert out["position_ids"].tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 3, 3]]
    with pytest.raises(ValueError, match="differ"):
        model_inputs(ids, mask[:, :3])


def test_evaluate_left_padding_matches_unpadded_forward():
    """A left-padded prompt gives the same completion log-probs as the same sequence alone."""
    m = make_tiny_gpt2()
    pol = CausalLMPolicy(m, vocab_size=257, value_head_init="normal")
    prompt, completion = [10, 20, 30], [40, 50, 60, 70]
    alone = torch.tensor([prompt + completion])
    padded = torch.tensor([[256, 256] + prompt + completion])
    mb_alone = {"actions": torch.tensor([completion]), "input_ids": alone, "attention_mask": torch.ones_like(alone)}
    mb_pad = {"actions": torch.tensor([completion]), "input_ids": padded,
              "attention_mask": torch.tensor([[0, 0] + [1] * 7])}
    lp_a, ent_a, v_a = pol.evaluate(mb_alone)
    lp_p, ent_p, v_p = pol.evaluate(mb_pad)
    assert lp_a.shape == ent_a.shape == v_a.shape == (1, 4)
    torch.testing.assert_close(lp_a, lp_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(v_a, v_p, atol=1e-5, rtol=0)
    # the same log-probs straight from the HF model (off-by-one: logits at t-1 predict token t)
    ref = torch.log_softmax(m(alone).logits[0, 2:6], -1).gather(-1, torch.tensor([completion]).T).squeeze(-1)
    torch.testing.assert_close(lp_a[0], ref, atol=1e-5, rtol=0)


def test_padded_vocab_ids_get_no_probability():
    m = make_tiny_gpt2(vocab_size=264)  # a model whose output layer is padded past the tokenizer's 257 ids
    pol = CausalLMPolicy(m, vocab_size=257)
    ids = torch.tensor([[1, 2, 3]])
    logits, values, _ = pol(**model_inputs(ids, torch.ones_like(ids)))
    assert torch.isinf(logits[..., 257:]).all() and torch.isfinite(logits[..., :257]).all()
    _, entropy, _ = pol.evaluate({"actions": torch.tensor([[4]]), "input_ids": torch.tensor([[1, 2, 4]]),
                                  "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    assert torch.isfinite(entropy).all()


def test_temperature_divides_logits():
    m = make_tiny_gpt2()
    ids = torch.tensor([[1, 2, 3]])
    l1, _, _ = CausalLMPolicy(m, vocab_size=257)(**model_inputs(ids, torch.ones_like(ids)))
    l2, _, _ = CausalLMPolicy(m, vocab_size=257, temperature=0.5)(**model_inputs(ids, torch.ones_like(ids)))
    torch.testing.assert_close(l2, l1 / 0.5)


def test_temperature_gradients_match_an_out_of_place_division():
    # forward() divides the logits by the temperature in place (no second (n, T, V) copy); the gradient must be
    # the one of plain ``logits / temperature``
    m = make_tiny_gpt2()
    ids = torch.tensor([[1, 2, 3, 4]])
    pol = CausalLMPolicy(m, vocab_size=257, temperature=0.7)
    batch = {"actions": ids[:, 2:], "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    lp, _, _ = pol.evaluate(batch)
    grads = torch.autograd.grad(lp.sum(), [p for p in m.parameters() if p.requires_grad])
    hidden = m.transformer(input_ids=ids).last_hidden_state[:, 1:3]
    ref = torch.log_softmax(m.lm_head(hidden) / 0.7, -1).gather(-1, ids[:, 2:, None]).sum()
    ref_grads = torch.autograd.grad(ref, [p for p in m.parameters() if p.requires_grad], allow_unused=True)
    torch.testing.assert_close(lp.sum(), ref)
    for g, r in zip(grads, ref_grads):
        if r is not None:
            torch.testing.assert_close(g, r)


def test_separate_critic_has_its_own_trunk():
    m = make_tiny_gpt2()
    pol = CausalLMPolicy(m, vocab_size=257, separate_critic=True, value_head_init="zeros")
    assert pol.critic is not None and pol.critic is not pol.hf_model.transformer
    ids = torch.tensor([[1, 2, 3, 4]])
    _, _, v = pol.evaluate({"actions": ids[:, 2:], "input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert torch.equal(v, torch.zeros(1, 2))  # zeros init


def test_missing_model_names_the_path_and_offline_hub(tmp_path):
    with pytest.raises(OSError, match="no-such-model.*hub is not reachable offline"):
        load_causal_lm(str(tmp_path / "no-such-model"))
    with pytest.raises(OSError, match="someone/not-cached-model"):
        load_causal_lm("someone/not-cached-model")


def test_vocab_mismatch_is_an_error():
    m = make_tiny_gpt2()
    with pytest.raises(ValueError, match="outputs only 257 logits"):
        CausalLMPolicy(m, vocab_size=300)
    pol = CausalLMPolicy(m, vocab_size=257)
    with pytest.raises(ValueError, match="action space has 300 ids but the model outputs 257"):
        pol.check_action_size(300)


def test_dropout_is_off_even_in_train_mode():
    m = make_tiny_gpt2()
    m.config.resid_pdrop = 0.5
    pol = CausalLMPolicy(m, vocab_size=257).train()
    assert not pol.model.training
    assert all(mod.p == 0.0 for mod in pol.modules() if isinstance(mod, torch.nn.Dropout))


def test_train_only_last_layers_freezes_the_rest():
    from agents.lm.policy import train_only_last_layers

    pol = train_only_last_layers(CausalLMPolicy(make_tiny_gpt2(), vocab_size=257), 1)
    trainable = {n for n, p in pol.named_parameters() if p.requires_grad}
    assert any(".h.1." in n for n in trainable) and not any(".h.0." in n for n in trainable)
    assert any("ln_f" in n for n in trainable) and "value_head.weight" in trainable
    assert not any("wte" in n or "wpe" in n for n in trainable)
    with pytest.raises(ValueError, match=r"trainable_layers must be in \[0, 2\]"):
        train_only_last_layers(pol, 3)


def test_export_loads_in_plain_transformers(tmp_path):
    pol = CausalLMPolicy(make_tiny_gpt2(), vocab_size=257)
    pol.save_pretrained(tmp_path / "export")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids).logits, pol.model(ids).logits)
    assert (tmp_path / "export" / "value_head.pt").exists()


def test_lora_export_merges_the_adapter_into_a_plain_model(tmp_path):
    pytest.importorskip("peft")
    from agents.lm.policy import apply_lora

    pol = apply_lora(CausalLMPolicy(make_tiny_gpt2(), vocab_size=257), r=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # lora_B starts at zero (a no-op adapter): give it weights
        for name, p in pol.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    inputs = model_inputs(ids, torch.ones_like(ids))
    with torch.no_grad():
        lora_logits = pol(**inputs)[0]  # the policy's own forward (trunk + output layer), adapter on
        with pol.model.disable_adapter():
            base_logits = pol(**inputs)[0]
    assert not torch.allclose(lora_logits, base_logits, atol=1e-3)  # the adapter is not a no-op

    folder = pol.save_pretrained(tmp_path / "export")
    names = {p.name for p in folder.iterdir()}
    assert "config.json" in names and "model.safetensors" in names and "value_head.pt" in names
    assert not any(n.startswith("adapter_") for n in names), names  # no peft adapter files
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any("lora" in k or k.startswith("base_model.") for k in keys), keys  # plain transformers keys

    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not hasattr(loaded, "peft_config")
    with torch.no_grad():
        exported = loaded(ids).logits
    torch.testing.assert_close(exported, lora_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(exported, base_logits, atol=1e-3)
    with torch.no_grad():  # exporting merged a copy: the policy still has its adapter, unmerged
        torch.testing.assert_close(pol(**inputs)[0], lora_logits)
        with pol.model.disable_adapter():
            torch.testing.assert_close(pol(**inputs)[0], base_logits)


def tiny_llama(layers: int = 3, vocab_size: int = 50):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   tie_word_embeddings=True, eos_token_id=2, pad_token_id=2)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch,n", [("gpt2", 1), ("llama", 1), ("llama", 2)])
def test_trunk_reuse_equals_the_full_forward(arch, n):
    """With the last n of the blocks training, the boundary states (the frozen blocks' output, computed once)
    give the same log-probs, entropies, values and gradients as running every block."""
    from agents.lm.policy import train_only_last_layers

    model = make_tiny_gpt2(vocab_size=50) if arch == "gpt2" else tiny_llama()
    pol = train_only_last_layers(CausalLMPolicy(model, vocab_size=48, value_head_init="normal", temperature=0.8), n)
    assert pol.frozen_blocks == len(pol._trunk(pol.hf_model).h if arch == "gpt2" else model.model.layers) - n
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 48, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    mask[1, -2:] = 0  # a completion that ended early
    mb = {"actions": ids[:, 5:], "input_ids": ids, "attention_mask": mask}
    params = [p for p in pol.parameters() if p.requires_grad]
    out_full = pol.evaluate(mb)
    grads_full = torch.autograd.grad(sum(x.sum() for x in out_full), params)
    boundary = pol.boundary_states(ids, mask)
    assert boundary.shape == (3, 9, 32) and not boundary.requires_grad
    out_reuse = pol.evaluate({**mb, "boundary": boundary})
    grads_reuse = torch.autograd.grad(sum(x.sum() for x in out_reuse), params)
    for a, b in zip(out_full, out_reuse):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads_full, grads_reuse):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # the trunk is restored after each pass: the full forward still runs every block
    torch.testing.assert_close(pol.evaluate(mb)[0], out_full[0])


@pytest.mark.parametrize("arch,n", [("gpt2", 1), ("llama", 1), ("llama", 2)])
def test_shared_prompts_in_the_top_blocks_equal_every_row_whole(arch, n):
    """Rows with the same prompt (group sampling) run the trainable top blocks over it once and share its KV
    cache: log-probs, entropies, values and gradients equal running every row whole, with left-padded prompts of
    different lengths and completions that ended early; the blocks' layer numbers are restored afterwards."""
    from agents.lm.policy import train_only_last_layers

    model = make_tiny_gpt2(vocab_size=50) if arch == "gpt2" else tiny_llama()
    pol = train_only_last_layers(CausalLMPolicy(model, vocab_size=48, value_head_init="normal", temperature=0.8), n)
    g = torch.Generator().manual_seed(1)
    P, T = 6, 4
    prompts = torch.randint(0, 48, (3, P), generator=g)
    pmask = torch.ones_like(prompts)
    pmask[1, :2] = 0  # a shorter, left-padded prompt
    rows = torch.tensor([0, 1, 0, 2, 1, 0])  # groups of unequal size, interleaved (a shuffled minibatch)
    ids = torch.cat([prompts[rows], torch.randint(0, 48, (6, T), generator=g)], 1)
    mask = torch.cat([pmask[rows], torch.ones(6, T, dtype=torch.long)], 1)
    mask[3, -2:] = 0  # a completion that ended early
    mb = {"actions": ids[:, P:], "input_ids": ids, "attention_mask": mask, "boundary": pol.boundary_states(ids, mask)}
    params = [p for p in pol.parameters() if p.requires_grad]
    idx_before = [m.layer_idx for m in pol.modules() if isinstance(getattr(m, "layer_idx", None), int)]

    calls: list[int] = []
    hook = pol._trunk(pol.hf_model).register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw["input_ids"].shape[0]), with_kwargs=True)
    out_shared = pol.evaluate(mb)
    grads_shared = torch.autograd.grad(sum(x.sum() for x in out_shared), params)
    assert calls == [3, 6]  # the 3 distinct prompts once, then the 6 rows' completions
    pol.share_prompts = False
    calls.clear()
    out_whole = pol.evaluate(mb)
    grads_whole = torch.autograd.grad(sum(x.sum() for x in out_whole), params)
    assert calls == [6]
    hook.remove()
    for a, b in zip(out_whole, out_shared):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_whole, grads_shared):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert idx_before == [m.layer_idx for m in pol.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    pol.share_prompts = True  # the reference's log-probs go through the same path
    lp = pol.sequence_logprobs(ids, mask, T, mb["boundary"])
    torch.testing.assert_close(lp, out_whole[0].detach(), atol=1e-5, rtol=1e-5)


def test_reference_parts_hold_only_what_trains():
    from agents.lm.policy import train_only_last_layers

    pol = train_only_last_layers(CausalLMPolicy(tiny_llama(layers=4), vocab_size=50), 1)
    parts = pol.reference_parts()
    assert sorted(parts) == ["model.layers.3", "model.norm"]  # one block and the final norm, not the LM
    n_ref = sum(p.numel() for m in parts.values() for p in m.parameters())
    assert n_ref == sum(p.numel() for p in pol.hf_model.parameters() if p.requires_grad)
    assert all(not p.requires_grad for m in parts.values() for p in m.parameters())
    full = CausalLMPolicy(tiny_llama(layers=4), vocab_size=50).reference_parts()
    assert list(full) == [""]  # full fine-tuning: the whole LM
    none = train_only_last_layers(CausalLMPolicy(tiny_llama(layers=4), vocab_size=50), 0).reference_parts()
    assert none == {}  # nothing trains in the LM: the policy's LM is the reference


def test_forward_passes_the_cache_under_its_current_name():
    """transformers 5 names the KV cache ``cache`` and warns on ``past_key_values``; 4.x only knows the latter.
    The policy passes it under the name the trunk's forward declares, so no deprecation warning is printed."""
    import inspect

    from agents.lm.policy import kv_cache_io

    pol = CausalLMPolicy(tiny_llama(), vocab_size=50)
    trunk = pol._trunk(pol.hf_model)
    expected = "cache" if "cache" in inspect.signature(type(trunk).forward).parameters else "past_key_values"
    assert kv_cache_io(trunk, None)[1] == expected
    seen: list[set[str]] = []
    trunk.register_forward_pre_hook(lambda m, a, kw: seen.append(set(kw)), with_kwargs=True)
    ids = torch.tensor([[3, 4, 5]])
    inputs = model_inputs(ids, torch.ones_like(ids))
    _, _, past = pol(**inputs, use_cache=True, logits_from=-1)
    assert past is not None
    nxt = {"input_ids": torch.tensor([[6]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
           "position_ids": torch.tensor([[3]])}
    logits_cached, _, _ = pol(**nxt, past_key_values=past, use_cache=True, logits_from=-1)
    full = torch.tensor([[3, 4, 5, 6]])
    logits_full, _, _ = pol(**model_inputs(full, torch.ones_like(full)), logits_from=-1)
    torch.testing.assert_close(logits_cached, logits_full, atol=1e-5, rtol=0)
    assert all(expected in kw and ({"cache", "past_key_values"} - {expected}).isdisjoint(kw) for kw in seen)
