"""Data-parallel training on Hugging Face ``accelerate``: a thin :class:`Dist` that the trainers call.

The same code runs

- single-process (``python -m agents.cli train ...``): ``world_size == 1``, every collective is the identity;
  ``accelerate`` is used when installed, else plain torch (``Dist(use_accelerate=False)`` forces that);
- multi-process under ``accelerate launch`` (or ``torchrun``): one process per GPU (DDP on NCCL), or several
  CPU processes (DDP on gloo) when there is no CUDA. DeepSpeed and FSDP come through accelerate's config files
  (``examples/accelerate/``); see ``docs/scaling.md`` for what was tested.

Data parallelism for PPO (the scheme of TRL and the N-details reproductions): every process rolls out its
own share of the envs with its own seed (:meth:`Dist.seed_for_rank`), computes the loss on its own rows, and
DDP averages the gradients, so all processes keep identical weights. Everything that is a statistic of the
whole batch is computed across processes: advantage/score whitening (:meth:`Dist.global_masked_whiten`),
the KL that drives the adaptive KL controller and the logged metrics (:meth:`Dist.global_mean`,
:meth:`Dist.all_reduce_mean`). Logs and checkpoints are written once, by rank 0
(:meth:`Dist.main_process_only`, :meth:`Dist.save_state`).

A policy's ``evaluate`` must run through DDP's ``forward`` for the gradients to be all-reduced (DDP
synchronises only what its forward saw); :meth:`Dist.prepare_policy` makes ``evaluate`` the forward of a
small wrapper and returns an object with ``evaluate`` and ``parameters``, what
:func:`agents.ppo.core.ppo_update` needs.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from agents.ppo.core import masked_mean, masked_var, masked_whiten

__all__ = ["Dist", "PreparedPolicy", "RANK_SEED_STRIDE", "launched_world_size"]

# rank r draws from seed + r * RANK_SEED_STRIDE: rank 0 keeps the seed (a 1-process run is the plain run), and
# the stride is far larger than the offsets a run adds to its seed (+1 for the sampler, +i for env i, ...)
RANK_SEED_STRIDE = 1_000_003

F = TypeVar("F", bound=Callable[..., Any])


def _env_world_size() -> int:
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 1


def launched_world_size() -> int:
    """The number of processes the launcher (``accelerate launch``, ``torchrun``, MPI) started; 1 without one.
    Read from the environment, before any process group exists."""
    return _env_world_size()


class _EvaluateAsForward(nn.Module):
    """``forward(minibatch) = policy.evaluate(minibatch)``, so that DDP sees (and all-reduces) its gradients."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.policy.evaluate(minibatch)


class PreparedPolicy:
    """What :func:`agents.ppo.core.ppo_update` needs of a policy, routed through the prepared (DDP) module.

    ``module`` is the plain policy (same parameters): use it for rollouts (no gradients, no DDP), saving and
    anything else; use this object only as the ``policy`` argument of ``ppo_update``.
    """

    def __init__(self, wrapped: nn.Module, module: nn.Module) -> None:
        self.wrapped = wrapped  # DDP(_EvaluateAsForward(policy)) under several processes, else the wrapper itself
        self.module = module

    def evaluate(self, minibatch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.wrapped(minibatch)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def train(self, mode: bool = True) -> PreparedPolicy:
        self.wrapped.train(mode)
        return self

    def eval(self) -> PreparedPolicy:
        return self.train(False)


class Dist:
    """Rank, device and collectives of a data-parallel run; every method works with one process too.

    Args:
        cpu: run on CPU even when CUDA is there (None: CPU when CUDA is not available, or when
            ``ACCELERATE_USE_CPU`` is set). Several CPU processes talk over gloo.
        mixed_precision: accelerate's ``"no"``, ``"bf16"`` or ``"fp16"`` (None: the launch config's).
        find_unused_parameters: DDP's flag; set it when a loss leaves some trainable parameters without a
            gradient (without it, DDP does not finish that step's all-reduce and raises at the next forward:
            "Expected to have finished reduction in the prior iteration").
        use_accelerate: None: use accelerate when installed (required for several processes); False: plain
            torch, one process only.
    """

    def __init__(self, *, cpu: bool | None = None, mixed_precision: str | None = None,
                 find_unused_parameters: bool = False, use_accelerate: bool | None = None) -> None:
        if cpu is None:
            cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        elif not cpu and not torch.cuda.is_available():
            raise ValueError("Dist(cpu=False) needs a CUDA device, and torch sees none; pass cpu=True (or None)")
        if use_accelerate is None:
            try:
                import accelerate  # noqa: F401
                use_accelerate = True
            except ImportError:
                use_accelerate = False
        if not use_accelerate and _env_world_size() > 1:
            from textgym._optional import require

            require("accelerate", f"a run with {_env_world_size()} processes")  # raises, naming the extra
            raise ValueError("use_accelerate=False cannot run several processes; drop it or launch one process")
        self.accelerator: Any = None
        if use_accelerate:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            kwargs = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
            self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=kwargs)
            self.rank: int = self.accelerator.process_index
            self.local_rank: int = self.accelerator.local_process_index
            self.world_size: int = self.accelerator.num_processes
            self.device: torch.device = self.accelerator.device
        else:
            self.rank, self.local_rank, self.world_size = 0, 0, 1
            self.device = torch.device("cpu" if cpu else "cuda")

    # -- who am I -----------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def seed_for_rank(self, seed: int, rank: int | None = None) -> int:
        """The seed of this process's rollouts: ``seed + rank * RANK_SEED_STRIDE`` (rank 0 keeps ``seed``).

        Every process then draws other prompts and other tokens. Seed what must agree across processes
        (weight initialisation, minibatch order) with ``seed`` itself; DDP also copies rank 0's weights to
        every process when the model is prepared.
        """
        r = self.rank if rank is None else int(rank)
        if r < 0:
            raise ValueError(f"rank must be >= 0, got {r}")
        return int(seed) + r * RANK_SEED_STRIDE

    def local_size(self, global_size: int, name: str = "batch size") -> int:
        """This process's share of a global size (``num_envs``, ``minibatch_size``): ``global_size / world_size``.

        Raises ``ValueError`` when it does not divide, so the global batch is what the config says.
        """
        if global_size % self.world_size:
            raise ValueError(f"{name}={global_size} must be divisible by the number of processes "
                             f"({self.world_size}); each process takes an equal share")
        return global_size // self.world_size

    # -- training -----------------------------------------------------------------------------------------
    def prepare(self, *objs: Any) -> Any:
        """``accelerator.prepare(*objs)`` (models wrapped in DDP and moved to the device, optimizers wrapped);
        one object in, one out. Without accelerate: modules moved to the device, others unchanged."""
        if self.accelerator is not None:
            return self.accelerator.prepare(*objs)
        out = tuple(o.to(self.device) if isinstance(o, nn.Module) else o for o in objs)
        return out[0] if len(out) == 1 else out

    def prepare_policy(self, policy: nn.Module, optimizer: torch.optim.Optimizer
                       ) -> tuple[PreparedPolicy, torch.optim.Optimizer]:
        """Prepare a policy with ``evaluate(minibatch)`` and its optimizer for :func:`ppo_update`.

        Returns ``(prepared, optimizer)``: pass both to ``ppo_update``; keep using ``policy`` itself for
        rollouts and saving (the parameters are the same objects; DDP keeps them equal across processes).
        """
        if not callable(getattr(policy, "evaluate", None)):
            raise TypeError(f"prepare_policy needs a policy with evaluate(minibatch), got {type(policy).__name__}")
        wrapped, optimizer = self.prepare(_EvaluateAsForward(policy), optimizer)
        return PreparedPolicy(wrapped, policy), optimizer

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module inside a prepared one (for saving and ``save_pretrained``)."""
        if isinstance(model, PreparedPolicy):
            return model.module
        if self.accelerator is not None:
            model = self.accelerator.unwrap_model(model)
        return model.policy if isinstance(model, _EvaluateAsForward) else model

    def no_sync(self, prepared: PreparedPolicy | nn.Module) -> contextlib.AbstractContextManager[None]:
        """Inside it, ``backward`` accumulates gradients locally without the all-reduce: wrap every micro-batch
        but the last of a minibatch (gradient accumulation), so DDP communicates once per optimizer step."""
        model = prepared.wrapped if isinstance(prepared, PreparedPolicy) else prepared
        if self.accelerator is not None and self.distributed:
            return self.accelerator.no_sync(model)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """``accelerator.backward(loss)`` (handles loss scaling, DeepSpeed); ``loss.backward()`` without it."""
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    # -- collectives --------------------------------------------------------------------------------------
    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return t
        import torch.distributed as td

        out = t.detach().to(self.device, torch.float64).clone()  # float64: sums of many rows stay exact enough
        td.all_reduce(out, op=td.ReduceOp.SUM)
        return out.to(t.device, t.dtype)

    def all_reduce_sum(self, x: torch.Tensor | float) -> torch.Tensor:
        """Sum over processes: a new, detached tensor (the input is unchanged); with one process, the input."""
        t = torch.as_tensor(x)
        return self._all_reduce_sum(t if t.is_floating_point() else t.double())

    def all_reduce_mean(self, x: torch.Tensor | float | Mapping[str, Any]) -> Any:
        """Mean over processes of a tensor, a number, or a dict of numbers/0-d tensors (one collective for the
        whole dict: use it for logged metrics). A dict comes back as ``{key: float}``; the keys must be the
        same on every process."""
        if isinstance(x, Mapping):
            keys = sorted(x)
            vals = torch.tensor([float(x[k]) for k in keys], dtype=torch.float64)
            mean = self._all_reduce_sum(vals) / self.world_size
            return {k: float(v) for k, v in zip(keys, mean.tolist())}
        t = torch.as_tensor(x)
        t = t if t.is_floating_point() else t.double()
        return self._all_reduce_sum(t) / self.world_size

    # the masked statistics of agents.ppo.core over every process's entries (detached: no gradient flows through
    # the all-reduce); processes may hold different numbers of rows
    def global_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over every element of ``x`` on every process."""
        return self.global_masked_mean(x, torch.ones_like(x))

    def global_masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:func:`agents.ppo.core.masked_mean` over every process; 0 when all masks are empty."""
        return masked_mean(x, mask.to(x.dtype), all_reduce=self.all_reduce_sum)

    def global_masked_var(self, x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
        """:func:`agents.ppo.core.masked_var` over every process (Bessel's correction with the global count)."""
        return masked_var(x, mask.to(x.dtype), unbiased, all_reduce=self.all_reduce_sum)

    def global_masked_whiten(self, x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                             eps: float = 1e-8) -> torch.Tensor:
        """:func:`agents.ppo.core.masked_whiten` with the mean and variance of every process's entries, so
        that N processes whiten as one process holding the whole batch would."""
        return masked_whiten(x, mask.to(x.dtype), shift_mean, eps, all_reduce=self.all_reduce_sum)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's ``x`` along dim 0, in rank order (the first dimension may differ)."""
        if not self.distributed:
            return x
        parts = self.gather_object(x.detach().cpu())
        return torch.cat(parts, 0).to(x.device)

    def gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process (any picklable object)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        import torch.distributed as td

        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            import torch.distributed as td

            td.barrier()

    # -- once per run ---------------------------------------------------------------------------------------
    def main_process_only(self, fn: F) -> F:
        """Decorator: ``fn`` runs on rank 0 only (returns None elsewhere). For logging, plots, samples."""
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs) if self.is_main else None
        return wrapper  # type: ignore[return-value]

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs)

    def save_state(self, run_dir: str | Path, shared: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                   rank_state: Mapping[str, Any] | None = None) -> Path:
        """Write one checkpoint for the whole run, atomically (:func:`agents.lm.checkpoint.save_checkpoint`).

        ``shared``: what is the same on every process (weights, optimizer, KL controller, iteration, config);
        a zero-argument callable is called on rank 0 only. ``rank_state``: what differs per process (RNG
        states, sampling generators); every process's is gathered to rank 0 and saved in the same file, so a
        kill leaves either the old or the new checkpoint of *all* processes. Every process must call this.
        Returns the checkpoint folder.
        """
        from agents.lm.checkpoint import CHECKPOINT, save_checkpoint

        rank_states = self.gather_object(dict(rank_state or {}))
        path = Path(run_dir) / CHECKPOINT
        if self.is_main:
            state = dict(shared() if callable(shared) else shared)
            state["world_size"] = self.world_size
            state["rank_states"] = rank_states
            path = save_checkpoint(run_dir, state)
        self.barrier()  # nobody reads or resumes before the file is there
        return path

    def load_state(self, run_dir: str | Path, map_location: str | torch.device | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read the checkpoint :meth:`save_state` wrote: ``(shared, this process's rank_state)``.

        Every process reads the file (multi-node runs need ``run_dir`` on a shared filesystem). Raises
        ``FileNotFoundError`` when there is none and ``ValueError`` when it was written by another number of
        processes (each process's RNG state belongs to its rank).
        """
        from agents.lm.checkpoint import find_checkpoint, load_checkpoint

        folder = find_checkpoint(run_dir)
        if folder is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir}; start a new run there instead of resuming")
        if map_location is None or torch.device(map_location).type == "cpu":
            map_location = "cpu"  # accelerate's CPU device is "cpu:0", which torch.load cannot map to
        state = load_checkpoint(folder, map_location=map_location)
        saved = int(state.pop("world_size", 1))
        rank_states = state.pop("rank_states", [{}])
        if saved != self.world_size:
            raise ValueError(f"{folder} was written by a run with {saved} process(es) but this one has "
                             f"{self.world_size}; resume with the same number of processes "
                             f"(accelerate launch --num_processes {saved}) or start a new run")
        return state, rank_states[self.rank]

    def end(self) -> None:
        """Release the process group (call at the very end of a run, once on every process).

        Garbage-collects first: reference cycles can keep Gloo work objects (and the tensors they hold) alive
        until interpreter shutdown, where destroying them aborts the process ("terminate called without an
        active exception", seen about 1 run in 7 of the 2-process CPU test before this collect; 0 in 80
        after it).
        """
        if self.accelerator is not None:
            self.accelerator.end_training()
            if self.distributed:
                import gc

                import torch.distributed as td

                gc.collect()
                if td.is_initialized():
                    td.destroy_process_group()

    def __repr__(self) -> str:
        backend = "accelerate" if self.accelerator is not None else "torch"
        return f"Dist(rank={self.rank}, world_size={self.world_size}, device={self.device}, {backend})"
