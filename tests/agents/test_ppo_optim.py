"""agents/ppo/optim.py: FlatAdam is torch's plain Adam bit for bit (steps, learning-rate changes, state_dict round
trips both ways, the fallback for a parameter without a gradient)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gymnasium import spaces  # noqa: E402

from agents.ppo.optim import FlatAdam  # noqa: E402
from agents.ppo.policies import MLPPolicy  # noqa: E402


def policy() -> MLPPolicy:
    torch.manual_seed(0)
    return MLPPolicy(spaces.Box(-1, 1, (4,), np.float32), 2)  # 12 tensors, 2- and 1-element biases among them


def set_grads(params, g: torch.Generator, skip: int | None = None) -> None:
    scale = 10.0 ** float(torch.empty(()).uniform_(-6, 0, generator=g))  # gradients from 1e-6 to 1
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=g) * scale


def same(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    pa = [p for grp in a.param_groups for p in grp["params"]]
    pb = [p for grp in b.param_groups for p in grp["params"]]
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return all(torch.equal(x, y) for x, y in zip(pa, pb)) and sa.keys() == sb.keys() and all(
        list(sa[k]) == list(sb[k]) and all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k]) for k in sa)


def run(opts: list[torch.optim.Optimizer], steps: int, seed: int, skip_at: int | None = None) -> None:
    """The same gradients and learning rates (decayed as PPO's linear schedule) into every optimizer."""
    for t in range(steps):
        for opt in opts:
            g = torch.Generator().manual_seed(seed * 1000 + t)
            params = [p for grp in opt.param_groups for p in grp["params"]]
            set_grads(params, g, skip=3 if t == skip_at else None)
            for grp in opt.param_groups:
                grp["lr"] = 1e-3 * (1 - t / (2 * steps))
            opt.step()


def test_flat_adam_is_torch_adam_bitwise():
    a, b = policy(), policy()
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, eps=1e-5)  # SB3's optimizer: torch's single-tensor loop
    flat = FlatAdam(b.parameters(), lr=1e-3, eps=1e-5)
    run([ref, flat], 300, seed=1)
    assert flat._flat  # the flat path ran
    assert same(ref, flat)
    assert flat.state_dict()["param_groups"][0]["lr"] == ref.state_dict()["param_groups"][0]["lr"]


def test_flat_adam_falls_back_to_torch_adam_for_a_missing_gradient():
    a, b = policy(), policy()
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, eps=1e-5)
    flat = FlatAdam(b.parameters(), lr=1e-3, eps=1e-5)
    run([ref, flat], 20, seed=2, skip_at=10)  # at step 10 one tensor has no gradient: its step count lags behind
    assert same(ref, flat) and not flat._flat  # torch's loop from then on (the counts differ)


@pytest.mark.parametrize("direction", ["flat_to_adam", "adam_to_flat"])
def test_state_dict_round_trips_with_torch_adam(tmp_path, direction):
    a, b = policy(), policy()
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, eps=1e-5)
    flat = FlatAdam(b.parameters(), lr=1e-3, eps=1e-5)
    run([ref, flat], 30, seed=3)
    src = flat if direction == "flat_to_adam" else ref
    torch.save(src.state_dict(), tmp_path / "opt.pt")
    c = copy.deepcopy(a)
    cls = torch.optim.Adam if direction == "flat_to_adam" else FlatAdam
    loaded = cls(c.parameters(), lr=1e-3, eps=1e-5)
    loaded.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    run([ref, loaded], 30, seed=4)
    assert same(ref, loaded)
