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
