"""Agents for textgym (and any Gymnasium env with discrete actions): a protocol, a random baseline, our
PyTorch PPO (toy policies and Hugging Face causal LMs), and an SB3 adapter.

Imports point one way: ``agents`` uses ``textgym``; ``textgym`` never imports ``agents``.
"""
