"""Gymnasium environments of textgym: :class:`TextGenEnv` (one prefix) and :class:`BatchedTextGenEnv` (N prefixes
as arrays, one scorer call per step)."""

from textgym.envs.text_gen import TextGenEnv
from textgym.envs.vector import BatchedTextGenEnv

__all__ = ["TextGenEnv", "BatchedTextGenEnv"]
