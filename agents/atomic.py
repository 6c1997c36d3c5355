"""Writes that a kill (or a power cut) leaves whole: files and folders replaced by renames, with fsyncs.

Used by the RLHF checkpoints (:mod:`agents.lm.checkpoint`), ``textgym train``'s run files and
:meth:`agents.ppo.agent.PPOAgent.save`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a folder's entries (what makes a rename inside it durable), to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError:  # Windows cannot open a folder; its renames are not fsynced there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``path`` so that a reader (or a later run after a kill) sees the old content or the new, never
    half of it: a temporary file in the same folder, fsynced, then renamed over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def previous_dir(path: str | Path) -> Path:
    """Where :func:`replace_dir` keeps the previous ``path`` while it swaps in the new one."""
    path = Path(path)
    return path.with_name(f"{path.name}.old")


def replace_dir(new: str | Path, path: str | Path) -> Path:
    """Put the folder ``new`` (fully written, on the same file system) in place of the folder ``path``.

    A folder cannot be renamed over a non-empty one, so the previous ``path`` is renamed to
    :func:`previous_dir` first and deleted after; a kill in between leaves it there, whole, and
    :func:`existing_dir` finds it. Every file of ``new`` is fsynced first, and the parent folder after
    each rename.
    """
    new, path = Path(new), Path(path)
    for f in new.rglob("*"):
        if f.is_file():
            fsync_path(f)
    fsync_path(new)
    old = previous_dir(path)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)  # path is whole: the older copy is not needed
        os.replace(path, old)
        fsync_path(path.parent)
    os.replace(new, path)
    fsync_path(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def existing_dir(path: str | Path) -> Path:
    """``path``, or the previous copy :func:`replace_dir` left when a kill came between its two renames."""
    path = Path(path)
    return path if path.exists() or not previous_dir(path).exists() else previous_dir(path)
