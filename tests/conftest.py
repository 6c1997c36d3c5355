"""Tiny shared fixtures: file-free tokenizers and a 2-layer GPT-2 with random weights. No test touches the
network."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from a test
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def char_tokenizer():
    from textgym.tokenizers import CharTokenizer

    return CharTokenizer("abc>")


@pytest.fixture
def byte_tokenizer():
    from textgym.tokenizers import ByteTokenizer

    return ByteTokenizer()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def make_tiny_gpt2(vocab_size: int = 257, n_positions: int = 128, seed: int = 0):
    """A 2-layer GPT-2 with random weights (dropout off), built from a config: no files, no hub."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=32, n_layer=2,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def tiny_gpt2():
    return make_tiny_gpt2()
