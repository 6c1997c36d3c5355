"""Gymnasium environments of textgym."""

from textgym.envs.text_gen import TextGenEnv

__all__ = ["TextGenEnv"]
