"""One torch thread for the agent tests (not tests/agents/lm, which manages its own): the CI machine is small
and shared, and thread oversubscription made these tests 20x slower there."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    if "lm" in request.node.path.parts:
        yield
        return
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def byte_gpt2_dir(tmp_path_factory):
    """A saved tiny GPT-2 with the byte tokenizer's 257 ids and room for chat-templated prompts."""
    pytest.importorskip("transformers")
    from tests.conftest import make_tiny_gpt2

    d = tmp_path_factory.mktemp("tiny-byte-gpt2")
    make_tiny_gpt2(vocab_size=257, n_positions=512).save_pretrained(d)
    return d
