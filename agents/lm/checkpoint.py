"""Atomic checkpoints: a kill at any moment leaves a complete checkpoint readable.

``DIR/checkpoint/state.pt`` holds the trainable weights (value head included), optimizer, KL controller, RNG
states, iteration and config; ``meta.json`` beside it is written after it, so a folder holding both is complete.
:func:`save_checkpoint` keeps a complete checkpoint on disk at every instant:

1. the new one is written to ``DIR/.checkpoint-tmp-*`` and fsynced (file, then folder);
2. if ``DIR/checkpoint`` is complete, it is renamed to ``DIR/checkpoint.old`` (a previous ``checkpoint.old``
   is removed first, which is safe because ``checkpoint`` is complete); if ``checkpoint`` is missing,
   ``checkpoint.old`` (left by an earlier kill) is the one complete checkpoint and is kept as it is;
3. the new one is renamed to ``DIR/checkpoint``; only then is ``checkpoint.old`` removed.

Every rename is followed by an fsync of ``DIR``, so the order survives a power cut too. A folder is removed by
renaming it to a ``.checkpoint-tmp-*`` name first (the removal looks atomic to a reader); the leftovers of a
kill are ``.checkpoint-tmp-*`` folders, which are never read and are removed by the next save.
:func:`find_checkpoint` returns ``checkpoint`` when it is complete, else ``checkpoint.old``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.atomic import fsync_path

CHECKPOINT = "checkpoint"
STATE = "state.pt"
META = "meta.json"
TMP_PREFIX = ".checkpoint-tmp-"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (all of them, or the LoRA adapter + value head): the frozen base weights
    are reloaded from the model itself."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if k in names}


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a whole checkpoint (``meta.json`` is written after ``state.pt``)."""
    return (folder / STATE).is_file() and (folder / META).is_file()


def _discard(folder: Path, run_dir: Path) -> None:
    """Remove a folder: renamed away first (atomic), then deleted (a kill meanwhile leaves a tmp folder)."""
    trash = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    os.replace(folder, trash)  # onto the empty folder mkdtemp made (POSIX rename allows that)
    fsync_path(run_dir)
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_tmp(run_dir: str | Path) -> None:
    """Delete the ``.checkpoint-tmp-*`` folders a killed save left behind (one run writes to a folder at a time)."""
    for p in Path(run_dir).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (torch-serialisable) as ``run_dir/checkpoint``, keeping a complete checkpoint on disk at
    every instant (the order is in the module docstring); returns its folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    try:
        torch.save(state, tmp / STATE)
        fsync_path(tmp / STATE)
        (tmp / META).write_text(json.dumps({"iteration": state.get("iteration")}))
        fsync_path(tmp / META)
        fsync_path(tmp)
        if is_complete(final):
            if old.exists():
                _discard(old, run_dir)  # checkpoint is complete: checkpoint.old is not needed
            os.replace(final, old)
            fsync_path(run_dir)
        elif final.exists():
            _discard(final, run_dir)  # not a checkpoint (only a foreign hand makes one): it would block the rename
        # here checkpoint.old is complete, or this is the first save
        os.replace(tmp, final)
        fsync_path(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists():
        _discard(old, run_dir)
    return final


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run (``checkpoint``, else ``checkpoint.old``), or None."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        if is_complete(run_dir / name):
            return run_dir / name
    return None


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(folder) / STATE, map_location=map_location, weights_only=False)
