"""Adam for many small parameter tensors, bit for bit torch's plain (single-tensor) Adam, as SB3 uses it.

A small policy on CPU spends most of an Adam step in per-tensor overhead: torch's Adam runs about 8 kernels per
parameter tensor (96 for a 64-64 actor-critic), each on a few thousand numbers. :class:`FlatAdam` keeps every
parameter's ``exp_avg``, ``exp_avg_sq`` and ``step`` as views of one flat buffer per group, gathers the gradients
and parameters into flat buffers, does Adam's update once over them and copies the new values back. Adam's update
is element-wise, so each number goes through the same operations as in torch's loop (checked bit for bit in
``tests/agents/test_ppo_optim.py``), and ``state_dict``/``load_state_dict`` are Adam's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Flat:
    """One parameter group's flat buffers, and views of them shaped like its parameters."""

    ids: tuple[int, ...]  # the parameters these were made for
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: torch.Tensor  # (n_params,): every parameter's step count (the state holds views of it)
    count: float  # the step count as a Python float, as Adam reads it
    grad: torch.Tensor
    param: torch.Tensor
    grad_views: list[torch.Tensor]
    param_views: list[torch.Tensor]


def _views(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in params:
        out.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam(params, lr, betas, eps)`` with one flat update per parameter group (see the module doc).

    The flat path needs what PPO's update gives it: every parameter of the group has a dense gradient, all are on
    one device with one floating dtype, their step counts agree, and the group uses none of amsgrad, weight decay,
    maximize, capturable, differentiable or a Tensor learning rate. Otherwise the step is torch's own loop (which
    updates the same state in place).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=False)
        self._flat: dict[int, _Flat] = {}  # group index -> its buffers

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._flat.clear()  # the loaded state is separate tensors: flattened again on the next step

    def _flat_group(self, i: int, group: dict[str, Any]) -> _Flat | None:
        """Group ``i``'s flat buffers (made on first use from zeros or from the state there is, which then becomes
        views of them); None when the flat path cannot take this group."""
        params: list[torch.Tensor] = group["params"]
        if not params or any(p.grad is None or p.grad.is_sparse for p in params):
            return None
        flat = self._flat.get(i)
        if flat is not None and flat.ids == tuple(map(id, params)):
            return flat
        if (group["amsgrad"] or group["weight_decay"] or group["maximize"] or group["capturable"]
                or group["differentiable"] or isinstance(group["lr"], torch.Tensor)
                or len({(p.device, p.dtype) for p in params}) > 1 or not params[0].is_floating_point()):
            return None
        states = [self.state[p] for p in params]
        n, like = sum(p.numel() for p in params), params[0]
        if all(states):
            counts = {float(s["step"]) for s in states}
            if len(counts) > 1:
                return None
            count = counts.pop()
            exp_avg = torch.cat([s["exp_avg"].reshape(-1) for s in states])
            exp_avg_sq = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states])
            step = torch.full((len(params),), count, dtype=states[0]["step"].dtype)
        elif not any(states):  # what Adam's first step makes: zeros, and float32 step counts on the CPU
            count = 0.0
            exp_avg, exp_avg_sq = like.new_zeros(n), like.new_zeros(n)
            step = torch.zeros(len(params), dtype=torch.float64 if torch.get_default_dtype() == torch.float64
                               else torch.float32)
        else:
            return None
        for j, (s, ea, es) in enumerate(zip(states, _views(exp_avg, params), _views(exp_avg_sq, params))):
            s["step"], s["exp_avg"], s["exp_avg_sq"] = step[j], ea, es  # Adam's keys, in Adam's order
        grad, param = like.new_empty(n), like.new_empty(n)
        flat = _Flat(tuple(map(id, params)), exp_avg, exp_avg_sq, step, count, grad, param,
                     _views(grad, params), _views(param, params))
        self._flat[i] = flat
        return flat

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        flats = [self._flat_group(i, g) for i, g in enumerate(self.param_groups)]
        if any(f is None for f in flats):  # torch's own step, on the same state
            super().step()
            self._flat.clear()  # it may have made state for new parameters, or stepped only some
            return loss
        for group, f in zip(self.param_groups, flats):
            params = group["params"]
            beta1, beta2 = group["betas"]
            torch._foreach_copy_(f.grad_views, [p.grad for p in params])
            torch._foreach_copy_(f.param_views, params)
            # torch.optim.adam._single_tensor_adam, every tensor the concatenation of the group's
            f.step += 1
            f.count += 1
            f.exp_avg.lerp_(f.grad, 1 - beta1)
            f.exp_avg_sq.mul_(beta2).addcmul_(f.grad, f.grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**f.count
            bias_correction2 = 1 - beta2**f.count
            step_size = group["lr"] / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            denom = (f.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
            f.param.addcdiv_(f.exp_avg, denom, value=-step_size)
            torch._foreach_copy_(params, f.param_views)
        return loss
