"""textgym: reinforcement learning on text generation, as Gymnasium environments.

``import textgym`` registers the env ids (``gym.make("TextGen-v0")``) and needs only gymnasium and numpy;
everything heavier is imported where it is used.
"""

from textgym.core import Prompt, Sample
from textgym.envs import BatchedTextGenEnv, TextGenEnv
from textgym.registration import TASKS, register_envs

__version__ = "0.1.0"
__all__ = ["Prompt", "Sample", "TextGenEnv", "BatchedTextGenEnv", "TASKS", "register_envs", "__version__"]

register_envs()
