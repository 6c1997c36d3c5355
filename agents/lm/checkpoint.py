"""Atomic checkpoints: a kill at any moment leaves the last good checkpoint readable.

``DIR/checkpoint/state.pt`` holds the trainable weights (value head included), optimizer, KL controller, RNG
states, iteration and config. A new checkpoint is written to ``DIR/.checkpoint-tmp-*``, the old one is renamed
to ``DIR/checkpoint.old``, the new one renamed into place, and only then is the old one deleted; a kill between
the two renames leaves ``checkpoint.old``, which :func:`find_checkpoint` falls back to.
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

CHECKPOINT = "checkpoint"
STATE = "state.pt"


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


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (torch-serialisable) as ``run_dir/checkpoint`` atomically; returns its folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-tmp-", dir=run_dir))
    final, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.old"
    try:
        torch.save(state, tmp / STATE)
        (tmp / "meta.json").write_text(json.dumps({"iteration": state.get("iteration")}))
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The last good checkpoint folder of a run (``checkpoint``, else ``checkpoint.old``), or None."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        if (run_dir / name / STATE).exists():
            return run_dir / name
    return None


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(folder) / STATE, map_location=map_location, weights_only=False)
