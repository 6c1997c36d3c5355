"""A Hugging Face causal LM as a PPO policy: the LM's next-token distribution plus a scalar value head.

Layout of one batch (the TRL layout): ``input_ids`` is ``(n, P + T)``, the prompts *left*-padded to ``P``
followed by the completions *right*-padded to ``T``; ``attention_mask`` is 1 on real tokens (prompt and
completion up to and including EOS). The completion token at column ``P + t`` is predicted by the logits at
``P + t - 1``, and its value is read from the same hidden state (the value of the state before the action).
:func:`model_inputs` is the one place where ids and mask become the model's inputs (position ids).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textgym._optional import require


def model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{input_ids, attention_mask, position_ids}`` for a batch with any padding (left, right or both).

    Position ids count real tokens: ``cumsum(mask) - 1``, so a left-padded prompt starts at position 0
    exactly as it would alone (TRL and HF ``generate`` do the same). Padding gets position 0 (never attended).
    """
    if input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
    attention_mask = attention_mask.long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (n, L)
    return {"input_ids": input_ids.long(), "attention_mask": attention_mask, "position_ids": position_ids}


def load_causal_lm(model: str | Path | nn.Module | None, dtype: torch.dtype | None = None) -> nn.Module:
    """A causal LM from a hub id, a local folder, a model object, or ``None`` (the embedded default model).

    Raises ``OSError`` naming the path or hub id when it cannot be found (offline, the hub is unreachable).
    """
    if isinstance(model, nn.Module):
        return model
    transformers = require("transformers", "language-model policies")
    if model is None or model == "default":
        from textgym.default_model import default_model_dir

        model = default_model_dir()
    name = str(model)
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32)
    except OSError as e:
        local = Path(name).expanduser()
        where = (f"the folder {name!r} has no model files (config.json + weights)" if local.exists()
                 else f"{name!r} is not a local folder, and as a hub id it is not in the local cache")
        raise OSError(f"could not load a causal LM: {where}. The Hugging Face hub is not reachable offline "
                      "(HF_HUB_OFFLINE=1); pass a local folder with config.json and weights, or no --model "
                      "for the embedded default model (SmolLM2-135M-Instruct).") from e


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (Huang et al. 2024, detail "disable dropout": PPO's ratio must be
    1 on the first minibatch, which dropout breaks)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    cfg = getattr(module, "config", None)
    if cfg is not None:
        for attr in ("dropout", "attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if isinstance(getattr(cfg, attr, None), float):
                setattr(cfg, attr, 0.0)


class CausalLMPolicy(nn.Module):
    """A causal LM with a value head, for :func:`agents.ppo.core.ppo_update`.

    - ``model``: a hub id, a local folder, a loaded ``PreTrainedModel`` (or a peft model), or ``None`` for the
      embedded default model.
    - ``vocab_size``: the tokenizer's vocabulary; logits of ids at or beyond it (a padded output layer) are
      set to -inf, so they are never sampled and carry no probability.
    - ``temperature``: divides the logits both when sampling and in :meth:`evaluate` (Huang et al. 2024,
      detail "temperature": log-probs of the sampling distribution, else the PPO ratio is off from step one).
    - ``separate_critic``: the value reads a second copy of the trunk instead of sharing it.
    - ``value_head_init``: ``"zeros"`` (every value starts at 0, so early advantages are the returns rather than
      value-head noise) or ``"normal"`` (std ``1/sqrt(d+1)``, the head init of OpenAI's lm-human-preferences,
      Huang et al. 2024; it assumes unit-scale features, which a final RMSNorm need not give).
    """

    def __init__(self, model: Any = None, *, vocab_size: int | None = None, temperature: float = 1.0,
                 separate_critic: bool = False, value_head_init: str = "zeros", dtype: torch.dtype | None = None,
                 ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if value_head_init not in ("normal", "zeros"):
            raise ValueError(f"value_head_init must be 'normal' or 'zeros', got {value_head_init!r}")
        self.model = load_causal_lm(model, dtype)
        disable_dropout(self.model)
        self.model.eval()  # no dropout, ever; train() below keeps it that way
        lm = self.hf_model
        self.out_size = int(lm.get_output_embeddings().weight.shape[0])
        self.vocab_size = self.out_size if vocab_size is None else int(vocab_size)
        if self.vocab_size > self.out_size:
            raise ValueError(f"the tokenizer has {self.vocab_size} tokens but the model outputs only "
                             f"{self.out_size} logits; use the tokenizer that belongs to this model")
        self.temperature = float(temperature)
        hidden = int(getattr(lm.config, "hidden_size", None) or lm.config.n_embd)
        self.value_head = nn.Linear(hidden, 1)
        if value_head_init == "normal":
            nn.init.normal_(self.value_head.weight, std=1 / math.sqrt(hidden + 1))  # lm-human-preferences
        else:
            nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(lm.parameters()).dtype)
        self.critic: nn.Module | None = copy.deepcopy(self._trunk(lm)) if separate_critic else None

    # -- the model's parts --------------------------------------------------------------------------------
    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (inside a peft wrapper if LoRA is on)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @staticmethod
    def _trunk(lm: nn.Module) -> nn.Module:
        return getattr(lm, lm.base_model_prefix)

    def train(self, mode: bool = True) -> CausalLMPolicy:
        super().train(mode)
        self.model.eval()  # dropout stays off (and so does any train-only behaviour of the LM)
        if self.critic is not None:
            self.critic.eval()
        return self

    def check_action_size(self, action_size: int) -> None:
        """Raise if the env's action space does not match this model's output layer."""
        if int(action_size) != self.out_size:
            raise ValueError(f"the env's action space has {action_size} ids but the model outputs {self.out_size} "
                             f"logits; make the env with action_size={self.out_size} (the model's output size) "
                             "and the model's own tokenizer")

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: Any = None, use_cache: bool = False, logits_from: int = 0,
                logits_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(logits, values, past)`` for the columns ``[logits_from, logits_to)`` of the input.

        ``logits`` are ``(n, k, V)`` float32, already divided by the temperature and with ids >= ``vocab_size``
        at -inf; ``values`` are ``(n, k)``. ``attention_mask`` covers the cache plus the new columns. With
        ``use_cache`` the third item is the updated KV cache (else None). A separate critic keeps no cache, so
        it is only supported without ``use_cache`` (:func:`agents.lm.rollout.rollout` re-runs it at the end).
        """
        lm = self.hf_model
        out = self._trunk(lm)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state[:, logits_from:logits_to]  # (n, k, d)
        logits = lm.get_output_embeddings()(hidden).float()  # (n, k, V); a no-op cast in fp32
        if self.temperature != 1.0:
            logits = logits.div_(self.temperature)  # in place: no second (n, k, V) copy (autograd-safe after a linear)
        if self.vocab_size < self.out_size:
            logits[..., self.vocab_size:] = float("-inf")  # padded ids: never sampled
        if self.critic is not None:
            if use_cache:
                values = torch.zeros(logits.shape[:2], device=logits.device)  # filled after the rollout
                return logits, values, out.past_key_values
            c = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            hidden = c.last_hidden_state[:, logits_from:logits_to]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()  # (n, k)
        return logits, values, out.past_key_values if use_cache else None

    def evaluate(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprob, entropy, value)`` of ``minibatch["actions"]``, each ``(n, T)``, from one forward pass over
        ``input_ids`` ``(n, P + T)`` (left-padded prompts, right-padded completions) and ``attention_mask``."""
        actions = minibatch["actions"]  # (n, T)
        T = actions.shape[1]
        ids, mask = minibatch["input_ids"], minibatch["attention_mask"]
        P = ids.shape[1] - T
        if P < 1:
            raise ValueError(f"input_ids has {ids.shape[1]} columns, fewer than the {T} actions + 1 prompt token")
        logits, values, _ = self(**model_inputs(ids, mask), logits_from=P - 1, logits_to=P - 1 + T)  # (n, T, V)
        logp_all = torch.log_softmax(logits, dim=-1)  # (n, T, V)
        logprob = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (n, T)
        p_all = logp_all.exp()
        entropy = -(p_all * logp_all.masked_fill(torch.isinf(logp_all), 0.0)).sum(-1)  # (n, T); 0*-inf -> 0
        return logprob, entropy, values

    @torch.no_grad()
    def sequence_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int) -> torch.Tensor:
        """Log-probs ``(n, T)`` of the last ``T`` columns of ``input_ids`` (the completions)."""
        P = input_ids.shape[1] - T
        logits, _, _ = self(**model_inputs(input_ids, attention_mask), logits_from=P - 1, logits_to=P - 1 + T)
        return torch.log_softmax(logits, -1).gather(-1, input_ids[:, P:].long().unsqueeze(-1)).squeeze(-1)

    def save_pretrained(self, folder: str | Path, tokenizer: Any = None) -> Path:
        """Export the LM (LoRA merged into a copy) so plain ``AutoModelForCausalLM.from_pretrained`` loads it;
        the value head is saved beside it as ``value_head.pt``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.model
        if hasattr(m, "merge_and_unload"):
            m = copy.deepcopy(m).merge_and_unload()
        m.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        torch.save(self.value_head.state_dict(), folder / "value_head.pt")
        return folder


def apply_lora(policy: CausalLMPolicy, r: int = 16, alpha: int = 32, dropout: float = 0.0,
               target_modules: list[str] | str | None = None) -> CausalLMPolicy:
    """Wrap the policy's LM with a peft LoRA adapter; only the adapter and the value head train.

    The reference model is then the same weights with the adapter disabled (no second copy).
    """
    peft = require("peft", "LoRA")
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                          target_modules=target_modules or "all-linear", task_type="CAUSAL_LM")
    policy.model = peft.get_peft_model(policy.model, cfg)
    policy.model.eval()
    return policy


def train_only_last_layers(policy: CausalLMPolicy, n: int) -> CausalLMPolicy:
    """Freeze the LM except its last ``n`` transformer blocks and the final norm (the value head and a separate
    critic still train). Embeddings and the (often tied) output layer stay frozen. The backward pass then stops
    at block ``L - n``, which makes PPO affordable on a CPU (a cheap form of the partial fine-tuning in
    Ziegler et al. 2019's ablations); ``n=0`` trains the value head only."""
    trunk = policy._trunk(policy.hf_model)
    blocks = max(((name, m) for name, m in trunk.named_children() if isinstance(m, nn.ModuleList)),
                 key=lambda x: len(x[1]), default=(None, None))
    if blocks[0] is None:
        raise ValueError(f"cannot find the transformer blocks of {type(trunk).__name__}; train all layers instead")
    name, layers = blocks
    if not 0 <= n <= len(layers):
        raise ValueError(f"trainable_layers must be in [0, {len(layers)}] for this model, got {n}")
    policy.model.requires_grad_(False)
    for block in list(layers)[len(layers) - n:]:
        block.requires_grad_(True)
    if n > 0:
        for child_name, child in trunk.named_children():
            if child_name != name and not isinstance(child, nn.Embedding) and \
                    not any(isinstance(m, nn.Embedding) for m in child.modules()):
                child.requires_grad_(True)  # the final norm (ln_f / norm)
    return policy
