"""A Hugging Face causal LM as a PPO policy: the LM's next-token distribution plus a scalar value head.

Layout of one batch (the TRL layout): ``input_ids`` is ``(n, P + T)``, the prompts *left*-padded to ``P``
followed by the completions *right*-padded to ``T``; ``attention_mask`` is 1 on real tokens (prompt and
completion up to and including EOS). The completion token at column ``P + t`` is predicted by the logits at
``P + t - 1``, and its value is read from the same hidden state (the value of the state before the action).
:func:`model_inputs` is the one place where ids and mask become the model's inputs (position ids).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
from collections.abc import Iterator
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


def shared_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(first, inverse)`` when some rows of the left-padded prompts ``(N, P)`` are equal: ``first`` (U,) the
    first row of each distinct prompt, ``inverse`` (N,) the distinct prompt of each row (rows = distinct[inverse]).
    None when every prompt differs (nothing to share), or when this transformers' cache cannot copy rows."""
    from transformers import DynamicCache

    if not hasattr(DynamicCache, "batch_select_indices"):
        return None
    N = prompt_ids.shape[0]
    _, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], 1), dim=0, return_inverse=True)  # (N,)
    U = int(inverse.max()) + 1 if N else 0
    if U == N:
        return None
    first = torch.full((U,), N, dtype=torch.long, device=prompt_ids.device).scatter_reduce(
        0, inverse, torch.arange(N, device=prompt_ids.device), reduce="amin")  # (U,)
    return first, inverse


def check_truncation(top_k: int, top_p: float) -> None:
    """Raise ``ValueError`` for a top-k below 0 or a top-p outside (0, 1]."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0: no top-k), got {top_k!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1: no nucleus truncation), got {top_p!r}")


@torch.no_grad()
def _truncation_mask(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    remove = torch.zeros_like(logits, dtype=torch.bool)
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        remove |= logits < kth  # ties with the k-th logit stay (transformers' TopKLogitsWarper too)
    if top_p < 1.0:
        # transformers' TopPLogitsWarper: drop the least likely tokens whose total mass is <= 1 - top_p,
        # never the most likely one
        ordered, order = logits.masked_fill(remove, float("-inf")).sort(dim=-1)  # ascending
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False
        remove |= drop.scatter(-1, order, drop)
    return remove


def truncate_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """``logits`` with every token outside the ``top_k`` most likely and outside the nucleus of mass ``top_p``
    at -inf (after the temperature): their softmax is the truncated, renormalised distribution. The kept set is
    chosen without gradient; the kept logits keep theirs."""
    return logits.masked_fill(_truncation_mask(logits, top_k, top_p), float("-inf"))


def transformer_blocks(trunk: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(attribute name, blocks)`` of a transformers trunk: its longest ``nn.ModuleList`` (``h``, ``layers``)."""
    name, blocks = max(((n, m) for n, m in trunk.named_children() if isinstance(m, nn.ModuleList)),
                       key=lambda x: len(x[1]), default=(None, None))
    if name is None:
        raise ValueError(f"cannot find the transformer blocks of {type(trunk).__name__}; train all layers instead")
    return name, blocks


@functools.cache
def _cache_arg(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def kv_cache_io(trunk: nn.Module, past: Any, use_cache: bool = False) -> tuple[dict[str, Any], str]:
    """The one transformers-version shim: ``({name: past}, name)`` with the KV-cache argument's name of this
    trunk's ``forward`` (transformers 5 calls it ``cache`` and warns on ``past_key_values``; 4.46, the oldest
    version pyproject allows, only knows ``past_key_values``, and warns unless the cache is a ``Cache`` object,
    so a first step gets an empty ``DynamicCache``). The output holds the cache under the same name."""
    name = _cache_arg(type(trunk))
    if name == "past_key_values" and past is None and use_cache:
        past = require("transformers", "language-model policies").DynamicCache()
    return {name: past}, name


class CausalLMPolicy(nn.Module):
    """A causal LM with a value head, for :func:`agents.ppo.core.ppo_update`.

    - ``model``: a hub id, a local folder, a loaded ``PreTrainedModel`` (or a peft model), or ``None`` for the
      embedded default model.
    - ``vocab_size``: the tokenizer's vocabulary; logits of ids at or beyond it (a padded output layer) are
      set to -inf, so they are never sampled and carry no probability.
    - ``temperature``: divides the logits both when sampling and in :meth:`evaluate` (Huang et al. 2024,
      detail "temperature": log-probs of the sampling distribution, else the PPO ratio is off from step one).
    - ``top_k`` (0: off) and ``top_p`` (1: off): truncation after the temperature (:func:`truncate_logits`).
      Sampling, the rollout's log-probs and :meth:`evaluate`'s all use the truncated, renormalised distribution,
      the one the tokens were drawn from; the update renormalises over the *support kept at sampling time*
      (``minibatch["support"]``, :attr:`agents.lm.rollout.Rollout.support`), so a sampled token never falls
      outside it as the policy moves (its log-prob would be -inf). The reference's log-probs are not truncated
      (``truncate=False``): truncated, it would give probability 0 to tokens the policy samples, an infinite KL.
    - ``value_head``: False for the critic-free algorithms (GRPO, RLOO, REINFORCE++): no value head is made,
      so none trains or is saved; the values are then zeros (no parameters, no gradient).
    - ``separate_critic``: the value reads a second copy of the trunk instead of sharing it.
    - ``value_head_init``: ``"zeros"`` (every value starts at 0, so early advantages are the returns rather than
      value-head noise) or ``"normal"`` (std ``1/sqrt(d+1)``, the head init of OpenAI's lm-human-preferences,
      Huang et al. 2024; it assumes unit-scale features, which a final RMSNorm need not give).
    """

    def __init__(self, model: Any = None, *, vocab_size: int | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, separate_critic: bool = False, value_head_init: str = "zeros",
                 dtype: torch.dtype | None = None, value_head: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        check_truncation(top_k, top_p)
        self.top_k, self.top_p = int(top_k), float(top_p)
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
        if separate_critic and not value_head:
            raise ValueError("separate_critic needs a value head (value_head=True)")
        self.value_head: nn.Linear | None = None
        if value_head:
            hidden = int(getattr(lm.config, "hidden_size", None) or lm.config.n_embd)
            self.value_head = nn.Linear(hidden, 1)
            if value_head_init == "normal":
                nn.init.normal_(self.value_head.weight, std=1 / math.sqrt(hidden + 1))  # lm-human-preferences
            else:
                nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(next(lm.parameters()).dtype)
        self.critic: nn.Module | None = copy.deepcopy(self._trunk(lm)) if separate_critic else None
        self.trainable_layers: int | None = None  # set by train_only_last_layers
        # trunk reuse: rows with the same prompt (group sampling) run the top blocks over it once (see forward)
        self.share_prompts = True

    # -- the model's parts --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device

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

    # -- trunk reuse: the frozen bottom blocks run once per iteration (issue 11) ---------------------------
    @property
    def frozen_blocks(self) -> int:
        """How many bottom blocks are frozen (and equal in the reference) when only the last N train
        (:func:`train_only_last_layers`): the hidden states after them, the *boundary states*, can be computed
        once per iteration (:meth:`boundary_states`) and every later pass runs only the N blocks on top.
        0 when every block trains, under LoRA (every block has an adapter) and with N = 0 (nothing to run)."""
        n = self.trainable_layers
        if not n:
            return 0
        return len(transformer_blocks(self._trunk(self.hf_model))[1]) - n

    @contextlib.contextmanager
    def _only_blocks(self, start: int, stop: int | None, inject: torch.Tensor | None = None,
                     renumber: bool = False) -> Iterator[None]:
        """Inside it, the trunk runs only its blocks ``[start, stop)``, through transformers' own forward
        (embeddings, attention mask, rotary positions, final norm), block ``start`` reading ``inject`` in place
        of its input. The embeddings' output is then discarded: a lookup, cheap beside a block. The blocks
        keep their own attributes; a model that picks a block's mask by its *index* in the list (interleaved
        sliding-window attention) would need the offset, which SmolLM2, Llama and GPT-2 do not.

        ``renumber``: the view's attention modules read and write KV-cache layers ``0, 1, ...`` (their
        ``layer_idx`` shifted down by ``start``), so that a cache filled by these blocks alone has its first layer
        filled: transformers reads the cached length and the mask sizes from layer 0."""
        trunk = self._trunk(self.hf_model)
        name, blocks = transformer_blocks(trunk)
        view = nn.ModuleList(list(blocks)[start:stop])
        renamed = [m for m in view.modules() if isinstance(getattr(m, "layer_idx", None), int)] if renumber else []
        for m in renamed:
            m.layer_idx -= start
        handle = None
        if inject is not None:
            def feed(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                if args:
                    return (inject, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": inject}
            handle = view[0].register_forward_pre_hook(feed, with_kwargs=True)
        setattr(trunk, name, view)
        try:
            yield
        finally:
            setattr(trunk, name, blocks)
            for m in renamed:
                m.layer_idx += start
            if handle is not None:
                handle.remove()

    @torch.no_grad()
    def boundary_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(n, L, d)`` hidden states after the :attr:`frozen_blocks` bottom blocks (no grad): pass them as
        ``boundary`` to :meth:`forward` / :meth:`evaluate` (as ``minibatch["boundary"]``) and only the blocks
        on top run. The frozen blocks are shared with the reference, so one computation serves both."""
        K = self.frozen_blocks
        if K == 0:
            raise ValueError("boundary_states needs frozen bottom blocks: train_only_last_layers(policy, n) "
                             "with 0 < n < the number of blocks")
        trunk = self._trunk(self.hf_model)
        grabbed: list[torch.Tensor] = []
        hook = transformer_blocks(trunk)[1][K - 1].register_forward_hook(
            lambda m, a, out: grabbed.append(out[0] if isinstance(out, tuple) else out))
        try:
            with self._only_blocks(0, K):
                trunk(**model_inputs(input_ids, attention_mask), use_cache=False, **kv_cache_io(trunk, None)[0])
        finally:
            hook.remove()
        return grabbed[-1]  # (n, L, d)

    # -- the reference: frozen copies of what trains, run through this forward -----------------------------
    def reference_parts(self) -> dict[str, nn.Module]:
        """Frozen copies of the LM's modules that train, by path in :attr:`hf_model` (``""`` is the whole LM).

        With :func:`train_only_last_layers` these are the N top blocks and the final norm: the reference
        shares every frozen module (embeddings, bottom blocks, output layer) with the policy and holds only
        N blocks and a norm. Full fine-tuning copies the whole LM; N = 0 copies nothing (the LM is frozen).
        Run the reference with ``with policy.swapped(parts): ...`` so that its log-probs come from the same
        :meth:`forward` as the policy's (temperature, vocabulary mask, trunk reuse)."""
        paths = _trainable_paths(self.hf_model)
        return {p: copy.deepcopy(self.hf_model.get_submodule(p)).requires_grad_(False) for p in paths}

    @contextlib.contextmanager
    def swapped(self, parts: dict[str, nn.Module]) -> Iterator[None]:
        """Inside it, the LM's modules at the paths of ``parts`` are ``parts``' modules (the reference)."""
        if "" in parts:  # the whole LM (full fine-tuning)
            if hasattr(self.model, "get_base_model"):
                raise ValueError("swapping the whole LM of a peft model: use its disable_adapter() instead")
            old, self.model = self.model, parts[""]
            try:
                yield
            finally:
                self.model = old
            return
        lm, undo = self.hf_model, []
        try:
            for path, module in parts.items():
                parent_path, _, attr = path.rpartition(".")
                parent = lm.get_submodule(parent_path)
                undo.append((parent, attr, getattr(parent, attr)))
                setattr(parent, attr, module)
            yield
        finally:
            for parent, attr, module in reversed(undo):
                setattr(parent, attr, module)

    # -- forward ------------------------------------------------------------------------------------------
    def head_logits(self, hidden: torch.Tensor, truncate: bool = True, support: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """``(n, k, V)`` float32 logits of hidden states ``(n, k, d)``, divided by the temperature, with ids
        >= ``vocab_size`` at -inf, and (``truncate``) outside ``top_k`` / ``top_p`` at -inf, or outside
        ``support`` ``(n, k, V)`` bool when given (the set kept when the tokens were sampled): the one place
        that turns the trunk's output into the policy's distribution (the reference's log-probs go through it
        too)."""
        n, k, d = hidden.shape
        # the head on a 2-D contiguous copy: on a (n, k, d) column slice that needs grad, torch's linear takes a
        # batched-matmul path, 2.8x slower forward + backward at (32, 8, 576) x 49 152 on one CPU thread
        logits = self.hf_model.get_output_embeddings()(hidden.reshape(n * k, d)).view(n, k, -1).float()  # (n, k, V)
        if self.temperature != 1.0:
            logits = logits.div_(self.temperature)  # in place: no second (n, k, V) copy (autograd-safe after a linear)
        if self.vocab_size < self.out_size:
            logits[..., self.vocab_size:] = float("-inf")  # padded ids: never sampled
        if truncate and support is not None:
            logits = logits.masked_fill(~support, float("-inf"))
        elif truncate and self.truncates:
            logits = truncate_logits(logits, self.top_k, self.top_p)
        return logits

    @property
    def truncates(self) -> bool:
        """Whether sampling is truncated (top-k or top-p on)."""
        return bool(self.top_k) or self.top_p < 1.0

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.value_head is None:  # critic-free: no values (zeros, no gradient)
            return hidden.new_zeros(hidden.shape[:2], dtype=torch.float32)  # (n, k)
        # fp32 even under bf16 autocast (the value loss is a small difference of values): a (d, 1) matmul
        with torch.autocast(hidden.device.type, enabled=False):
            return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()  # (n, k)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: Any = None, use_cache: bool = False, logits_from: int = 0,
                logits_to: int | None = None, boundary: torch.Tensor | None = None, truncate: bool = True,
                support: torch.Tensor | None = None, prompt_len: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(logits, values, past)`` for the columns ``[logits_from, logits_to)`` of the input.

        ``logits`` are :meth:`head_logits` (``truncate``, ``support``: top-k / top-p); ``values`` are ``(n, k)``.
        ``attention_mask`` covers the cache plus the new columns. With ``use_cache`` the third item is the
        updated KV cache (else None). ``boundary`` (from :meth:`boundary_states`, over the same ``input_ids``)
        runs only the blocks above the frozen ones. A separate critic keeps no cache, so it is only supported
        without ``use_cache`` (:func:`agents.lm.rollout.rollout` re-runs it at the end).

        ``prompt_len`` ``P`` (with ``boundary``): the first ``P`` columns are the left-padded prompts. Rows with
        the same prompt (group sampling) then run the top blocks over it once, and its KV cache is copied to each
        row for the completion columns (:meth:`_shared_prompt_hidden`): the same result, with the prompt's share
        of the work divided by the group size.
        """
        trunk = self._trunk(self.hf_model)
        cache_kw, cache_name = kv_cache_io(trunk, past_key_values, use_cache)
        if boundary is not None and use_cache:
            raise ValueError("boundary states and use_cache do not go together (a rollout runs every block)")
        if boundary is not None and prompt_len is not None and self.critic is None and self.share_prompts:
            hidden = self._shared_prompt_hidden(trunk, input_ids, attention_mask, position_ids, boundary, prompt_len,
                                                logits_from, logits_to)
            if hidden is not None:
                return self.head_logits(hidden, truncate, support), self._values(hidden), None
        reuse = self._only_blocks(self.frozen_blocks, None, inject=boundary) if boundary is not None else \
            contextlib.nullcontext()
        with reuse:
            out = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=use_cache, **cache_kw)
        hidden = out.last_hidden_state[:, logits_from:logits_to]  # (n, k, d)
        logits = self.head_logits(hidden, truncate, support)  # (n, k, V)
        past = getattr(out, cache_name) if use_cache else None
        if self.critic is not None:
            if use_cache:
                return logits, torch.zeros(logits.shape[:2], device=logits.device), past  # filled after the rollout
            c = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kv_cache_io(self.critic, None)[0])
            hidden = c.last_hidden_state[:, logits_from:logits_to]
        return logits, self._values(hidden), past

    def _shared_prompt_hidden(self, trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              position_ids: torch.Tensor, boundary: torch.Tensor, P: int, lo: int,
                              hi: int | None) -> torch.Tensor | None:
        """The top blocks' hidden states ``(n, hi - lo, d)`` for columns ``[lo, hi)``, computed with each distinct
        prompt (the first ``P`` columns) run once: its KV cache, with gradient, is copied to its rows
        (``batch_select_indices``) and the completion columns run on top of it. None when every prompt differs,
        when ``[lo, hi)`` does not start in the prompt and end after it, or when this transformers' cache cannot
        copy rows: :meth:`forward` then runs every row whole."""
        n, L = input_ids.shape
        hi = L if hi is None else hi
        if not (0 <= lo < P < hi <= L):
            return None
        shared = shared_prompts(input_ids[:, :P], attention_mask[:, :P])
        if shared is None:
            return None
        first, inverse = shared
        K = self.frozen_blocks
        cache_kw, cache_name = kv_cache_io(trunk, None, True)
        with self._only_blocks(K, None, inject=boundary[first, :P], renumber=True):
            head = trunk(input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P],
                         position_ids=position_ids[first, :P], use_cache=True, **cache_kw)
        past = getattr(head, cache_name)
        if not hasattr(past, "batch_select_indices"):  # a legacy (tuple) cache
            return None
        past.batch_select_indices(inverse)  # (U, ...) -> (n, ...), differentiable indexing
        with self._only_blocks(K, None, inject=boundary[:, P:], renumber=True):
            tail = trunk(input_ids=input_ids[:, P:], attention_mask=attention_mask, position_ids=position_ids[:, P:],
                         use_cache=True, **kv_cache_io(trunk, past, True)[0])
        return torch.cat([head.last_hidden_state[:, lo:P][inverse], tail.last_hidden_state[:, : hi - P]], 1)

    def evaluate(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logprob, entropy, value)`` of ``minibatch["actions"]``, each ``(n, T)``, from one forward pass over
        ``input_ids`` ``(n, P + T)`` (left-padded prompts, right-padded completions) and ``attention_mask``;
        ``minibatch["boundary"]`` (optional, :meth:`boundary_states`) runs only the trainable top blocks;
        ``minibatch["support"]`` (optional, ``(n, T, V)`` bool) is the truncated sampling's kept set."""
        actions = minibatch["actions"]  # (n, T)
        T = actions.shape[1]
        ids, mask = minibatch["input_ids"], minibatch["attention_mask"]
        P = ids.shape[1] - T
        if P < 1:
            raise ValueError(f"input_ids has {ids.shape[1]} columns, fewer than the {T} actions + 1 prompt token")
        logits, values, _ = self(**model_inputs(ids, mask), logits_from=P - 1, logits_to=P - 1 + T,
                                 boundary=minibatch.get("boundary"), support=minibatch.get("support"),
                                 prompt_len=P)  # (n, T, V)
        logp_all = torch.log_softmax(logits, dim=-1)  # (n, T, V), float32
        logprob = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (n, T)
        p_all = logp_all.exp()
        entropy = -(p_all * logp_all.masked_fill(torch.isinf(logp_all), 0.0)).sum(-1)  # (n, T); 0*-inf -> 0
        return logprob, entropy, values

    @torch.no_grad()
    def sequence_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int,
                          boundary: torch.Tensor | None = None, truncate: bool = True) -> torch.Tensor:
        """Log-probs ``(n, T)`` of the last ``T`` columns of ``input_ids`` (the completions)."""
        P = input_ids.shape[1] - T
        logits, _, _ = self(**model_inputs(input_ids, attention_mask), logits_from=P - 1, logits_to=P - 1 + T,
                            boundary=boundary, truncate=truncate, prompt_len=P)
        return torch.log_softmax(logits, -1).gather(-1, input_ids[:, P:].long().unsqueeze(-1)).squeeze(-1)

    def save_pretrained(self, folder: str | Path, tokenizer: Any = None) -> Path:
        """Export the LM (LoRA merged into a copy) so plain ``AutoModelForCausalLM.from_pretrained`` loads it;
        the value head, when there is one, is saved beside it as ``value_head.pt``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.model
        if hasattr(m, "merge_and_unload"):
            m = copy.deepcopy(m).merge_and_unload()
        m.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if self.value_head is not None:
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
    at block ``L - n``, and the blocks below are shared with the reference and run once per iteration
    (:attr:`CausalLMPolicy.frozen_blocks`), which makes PPO affordable on a CPU (a cheap form of the partial
    fine-tuning in Ziegler et al. 2019's ablations); ``n=0`` trains the value head only."""
    trunk = policy._trunk(policy.hf_model)
    name, layers = transformer_blocks(trunk)
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
    policy.trainable_layers = n
    return policy


def _trainable_paths(module: nn.Module, prefix: str = "") -> list[str]:
    """The fewest submodule paths whose modules hold every parameter that requires grad, each module trainable
    throughout (its own parameters all require grad)."""
    params = list(module.parameters())
    if params and all(p.requires_grad for p in params):
        return [prefix]
    if any(p.requires_grad for p in module.parameters(recurse=False)):
        raise ValueError(f"module {prefix or type(module).__name__!r} is only partly trainable; cannot copy it "
                         "as a reference part")
    return [path for name, child in module.named_children()
            for path in _trainable_paths(child, f"{prefix}.{name}" if prefix else name)]
