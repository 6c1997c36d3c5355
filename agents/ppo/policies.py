"""Actor-critic policies for the toy-task PPO agent (``T = 1``: one action per sample).

Every policy is an ``nn.Module`` with

- ``act(obs, action_mask=None, deterministic=False) -> (action (n,), logprob (n,), value (n,))`` for rollouts,
- ``evaluate(minibatch) -> (logprob (n, 1), entropy (n, 1), value (n, 1))`` as :func:`agents.ppo.core.ppo_update`
  expects (it reads ``minibatch["obs"]``, ``minibatch["actions"]`` and, if present, ``minibatch["action_mask"]``),
- ``value(obs) -> (n,)``.

``obs`` is a tensor ``(n, ...)`` for vector observations, or a dict of tensors for textgym observations.
A Hugging Face causal LM with a value head (``agents/lm/``) implements the same ``evaluate`` with ``T`` =
completion length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def masked_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Set the logits of invalid actions (mask 0) to a large negative number (not -inf: no NaN in entropy)."""
    if action_mask is None:
        return logits
    return logits.masked_fill(action_mask == 0, -1e8)


def sample_categorical(logits: torch.Tensor, deterministic: bool, generator: torch.Generator | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(action (n,), logprob (n,))`` from logits ``(n, A)``: ``torch.multinomial``'s draw, the one SB3's
    ``Categorical.sample`` makes, without a ``torch.distributions`` object (it costs more than the draw)."""
    logp = logits.log_softmax(-1)  # (n, A)
    action = logp.argmax(-1) if deterministic else torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
    return action, logp.gather(-1, action[:, None]).squeeze(-1)


def logprob_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logprob (n,), entropy (n,))`` of integer ``actions`` (n,) under logits ``(n, A)``."""
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, actions.long()[:, None]).squeeze(-1), entropy


def init_layer(layer: nn.Linear, gain: float, ortho: bool) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias, as SB3's ActorCriticPolicy (and CleanRL)."""
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(sizes: list[int], activation: str, ortho: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [init_layer(nn.Linear(a, b), math.sqrt(2), ortho), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class _ActorCritic(nn.Module):
    """Shared ``act``/``evaluate``/``value`` on top of ``features(obs) -> (pi_features, vf_features)``."""

    action_net: nn.Linear
    value_net: nn.Linear

    def features(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def act(self, obs: Any, action_mask: torch.Tensor | None = None, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pi, vf = self.features(obs)
        logits = masked_logits(self.action_net(pi), action_mask)  # (n, A)
        action, logprob = sample_categorical(logits, deterministic, generator)
        return action, logprob, self.value_net(vf).squeeze(-1)

    def value(self, obs: Any) -> torch.Tensor:
        return self.value_net(self.features(obs)[1]).squeeze(-1)

    def evaluate(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pi, vf = self.features(minibatch["obs"])
        logits = masked_logits(self.action_net(pi), minibatch.get("action_mask"))
        # logprob_entropy with the (n, 1) shapes kept: the same numbers, fewer autograd nodes (the entropy is made
        # first, as there: the order in which autograd sums logp's gradients, so their rounding, is unchanged)
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1, keepdim=True)
        logprob = logp.gather(-1, minibatch["actions"][:, :1].long())
        return logprob, entropy, self.value_net(vf)  # (n, 1) each


class MLPPolicy(_ActorCritic):
    """Separate policy and value MLPs (SB3's default ``net_arch=dict(pi=[64, 64], vf=[64, 64])``, tanh).

    Observations: ``Box`` (flattened, cast to float, no normalisation, as SB3) or ``Discrete`` (one-hot).
    Initialisation as SB3's ``ActorCriticPolicy(ortho_init=True)``: hidden layers gain sqrt(2), action head
    0.01, value head 1, biases 0.
    """

    def __init__(self, observation_space: spaces.Space, n_actions: int, net_arch: tuple[int, ...] = (64, 64),
                 activation: str = "tanh", ortho_init: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if isinstance(observation_space, spaces.Discrete):
            self.one_hot: int | None = int(observation_space.n)
            obs_dim = self.one_hot
        elif isinstance(observation_space, spaces.Box):
            self.one_hot = None
            obs_dim = int(np.prod(observation_space.shape))
        else:
            raise TypeError(f"MLPPolicy needs a Box or Discrete observation space, got {observation_space}; "
                            "use TokenPolicy for textgym observations")
        sizes = [obs_dim, *net_arch]
        self.pi_net = mlp(sizes, activation, ortho_init)
        self.vf_net = mlp(sizes, activation, ortho_init)
        self.action_net = init_layer(nn.Linear(sizes[-1], n_actions), 0.01, ortho_init)
        self.value_net = init_layer(nn.Linear(sizes[-1], 1), 1.0, ortho_init)

    def features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.one_hot is not None:
            x = nn.functional.one_hot(obs.long().reshape(-1), self.one_hot).float()
        else:
            x = obs.reshape(obs.shape[0], -1).float()  # (n, obs_dim)
        return self.pi_net(x), self.vf_net(x)


class TokenPolicy(_ActorCritic):
    """A small policy over a textgym prefix ``{"input_ids": (n, L), "attention_mask": (n, L)}``.

    Token + position embeddings, then a GRU or a small transformer encoder over the real tokens (padding
    masked out), and the hidden state at the prefix's last real token feeds a policy head and a value head.
    The last token sees the whole prefix (the GRU reads left to right; the encoder attends everywhere), so
    it knows the prompt, what has been written and how many tokens remain.
    """

    def __init__(self, vocab_size: int, n_actions: int, max_length: int, d_model: int = 64, n_layers: int = 1,
                 arch: str = "gru", ortho_init: bool = True) -> None:
        super().__init__()
        if arch not in ("gru", "transformer"):
            raise ValueError(f"arch must be 'gru' or 'transformer', got {arch!r}")
        self.arch = arch
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_length, d_model)
        if arch == "gru":
            self.encoder: nn.Module = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)
        else:
            layer = nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=2 * d_model, dropout=0.0,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.pi_head = nn.Sequential(init_layer(nn.Linear(d_model, d_model), math.sqrt(2), ortho_init), nn.Tanh())
        self.vf_head = nn.Sequential(init_layer(nn.Linear(d_model, d_model), math.sqrt(2), ortho_init), nn.Tanh())
        self.action_net = init_layer(nn.Linear(d_model, n_actions), 0.01, ortho_init)
        self.value_net = init_layer(nn.Linear(d_model, 1), 1.0, ortho_init)

    def features(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()  # (n, L) each
        last = (mask.sum(-1) - 1).clamp_min(0)  # (n,) index of the last real token (prefixes are left-aligned)
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)[None]  # (n, L, d)
        if self.arch == "gru":
            h, _ = self.encoder(x)  # (n, L, d); causal, so padding after the prefix cannot leak into h[last]
        else:
            h = self.encoder(x, src_key_padding_mask=mask == 0)  # (n, L, d)
        z = h[torch.arange(ids.shape[0], device=ids.device), last]  # (n, d)
        return self.pi_head(z), self.vf_head(z)


def make_policy(observation_space: spaces.Space, action_space: spaces.Space, *, net_arch: tuple[int, ...] = (64, 64),
                activation: str = "tanh", ortho_init: bool = True, token_arch: str = "gru", d_model: int = 64,
                n_layers: int = 1) -> _ActorCritic:
    """The policy for a pair of spaces: :class:`TokenPolicy` for a textgym ``Dict(input_ids, attention_mask)``,
    :class:`MLPPolicy` for ``Box``/``Discrete`` observations. The action space must be ``Discrete``."""
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"our PPO supports Discrete action spaces only, got {action_space}")
    n_actions = int(action_space.n)
    if isinstance(observation_space, spaces.Dict):
        if set(observation_space.spaces) != {"input_ids", "attention_mask"}:
            raise TypeError(f"a Dict observation space must be textgym's {{input_ids, attention_mask}}, got "
                            f"keys {sorted(observation_space.spaces)}")
        max_length = int(observation_space["input_ids"].shape[0])
        vocab = max(n_actions, int(observation_space["input_ids"].high.max()) + 1)
        return TokenPolicy(vocab, n_actions, max_length, d_model, n_layers, token_arch, ortho_init)
    return MLPPolicy(observation_space, n_actions, net_arch, activation, ortho_init)
