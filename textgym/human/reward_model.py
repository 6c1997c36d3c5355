"""Reward models from ratings: the model, its saved folder, and :class:`RewardModelScorer` (``"reward-model"``).

Model: a transformer encoder reads ``(prompt, completion)`` as a text pair, its last hidden states are
mean-pooled over the attention mask, and a linear head gives one reward. Training it on a rating store
(``textgym train-rm DB --out DIR``) is in :mod:`agents.reward_model`; the env library only loads and applies it.

Saved as ``DIR/model.safetensors`` (backbone and head), ``DIR/config.json`` (the backbone's config and
ours) and the tokenizer's files, so :func:`load_reward_model` needs nothing else. Loading is strict: a
weight the model has and the file lacks (another version, a damaged file) is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgym._optional import require
from textgym.core import Sample
from textgym.scorers.similarity import mean_pool

__all__ = ["RewardModel", "load_reward_model", "RewardModelScorer"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _torch_nn():
    torch = require("torch", "reward models")
    return torch, torch.nn


class RewardModel:
    """Backbone + mean pooling + linear head. ``__call__(prompts, completions) -> (B,)`` tensor of rewards."""

    def __init__(self, backbone: Any, tokenizer: Any, max_length: int = 128) -> None:
        torch, nn = _torch_nn()
        self.backbone, self.tokenizer, self.max_length = backbone, tokenizer, int(max_length)
        if tokenizer.pad_token is None:  # GPT-style tokenizers have none
            tokenizer.pad_token = tokenizer.eos_token
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)  # small init (Stiennon et al. 2020)

    def parameters(self):
        return list(self.backbone.parameters()) + list(self.head.parameters())

    def train(self, mode: bool = True) -> RewardModel:
        self.backbone.train(mode)
        self.head.train(mode)
        return self

    def eval(self) -> RewardModel:
        return self.train(False)

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, Any]:
        return self.tokenizer(list(prompts), list(completions), padding=True, truncation="longest_first",
                              max_length=self.max_length, return_tensors="pt")

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]):
        device = self.head.weight.device
        enc = {k: v.to(device) for k, v in self.encode(prompts, completions).items()
               if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.backbone(**enc).last_hidden_state  # (B, T, H)
        pooled = mean_pool(hidden, enc["attention_mask"])  # (B, H) mean over real tokens
        return self.head(pooled).squeeze(-1)  # (B,)

    def state_dict(self) -> dict[str, Any]:
        sd = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        sd.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return sd

    def save(self, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write weights (safetensors), config and tokenizer to ``out``."""
        save_file = require("safetensors.torch", "saving reward models").save_file
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(sd, str(out / WEIGHTS_NAME))
        cfg = {"textgym_reward_model": 1, "max_length": self.max_length,
               "backbone_config": self.backbone.config.to_dict(), **(extra or {})}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        self.tokenizer.save_pretrained(str(out))
        return out


def _load_strict(module: Any, state: dict[str, Any], path: Path, prefix: str) -> None:
    """``module.load_state_dict(state)`` that fails naming every missing or unexpected key. Only buffers may be
    absent (``position_ids`` and the like, which the model rebuilds and versions save or not): a missing
    weight would leave it at its random init and score with it."""
    buffers = {name for name, _ in module.named_buffers()}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise ValueError(f"{path / WEIGHTS_NAME} does not fit the model in {path / CONFIG_NAME}: {e}") from None
    problems = []
    missing = [prefix + k for k in missing if k not in buffers]
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {[prefix + k for k in unexpected]}")
    if problems:
        raise ValueError(f"{path / WEIGHTS_NAME} does not match the model of {path / CONFIG_NAME} "
                         f"({'; '.join(problems)}): the folder is damaged or from another version; train the model "
                         "again with `textgym train-rm DB --out DIR`")


def load_reward_model(path: str | Path, device: str = "cpu") -> RewardModel:
    """Load a model written by :meth:`RewardModel.save` (or ``textgym train-rm``)."""
    transformers = require("transformers", "reward models")
    load_file = require("safetensors.torch", "loading reward models").load_file
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ValueError(f"{path} is not a textgym reward model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                         "make one with `textgym train-rm DB --out DIR`")
    cfg = json.loads((path / CONFIG_NAME).read_text())
    if cfg.get("textgym_reward_model") != 1:
        raise ValueError(f"{path / CONFIG_NAME} is not a textgym reward-model config")
    bcfg = dict(cfg["backbone_config"])
    backbone = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(bcfg.pop("model_type"), **bcfg))
    rm = RewardModel(backbone, transformers.AutoTokenizer.from_pretrained(str(path)), cfg["max_length"])
    sd = load_file(str(path / WEIGHTS_NAME))
    _load_strict(rm.backbone, {k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, path, "backbone.")
    _load_strict(rm.head, {k[5:]: v for k, v in sd.items() if k.startswith("head.")}, path, "head.")
    rm.backbone.to(device)
    rm.head.to(device)
    return rm.eval()


class RewardModelScorer:
    """A :class:`~textgym.scorers.Scorer` from a saved reward model: batched, no grad, CPU by default."""

    def __init__(self, path: str | Path, batch_size: int = 32, device: str = "cpu", name: str = "reward-model") -> None:
        self.model = load_reward_model(path, device=device)
        self.batch_size, self.device, self.name = int(batch_size), device, name

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        torch, _ = _torch_nn()
        out = np.zeros(len(samples), dtype=np.float64)
        with torch.no_grad():
            for k in range(0, len(samples), self.batch_size):
                chunk = samples[k:k + self.batch_size]
                r = self.model([s.prompt for s in chunk], [s.completion for s in chunk])  # (b,)
                out[k:k + len(chunk)] = r.float().cpu().numpy()
        return out


