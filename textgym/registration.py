"""Registered env ids. Every id is ``TextGenEnv`` with a task's keyword arguments; ``gym.make`` kwargs
override them (``gym.make("TextGen-v0", scorer="length", max_new_tokens=8)``)."""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym

ENTRY_POINT = "textgym.envs.text_gen:TextGenEnv"
# gym.make_vec(id, num_envs=N) builds the batched env (same semantics as SyncVectorEnv, one scorer call per
# step); pass vectorization_mode="sync" or "async" for Gymnasium's own vector envs.
VECTOR_ENTRY_POINT = "textgym.envs.vector:BatchedTextGenEnv"

# id -> (one-line description, kwargs). The README's table of ids is printed from this dict.
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "TextGen-v0": (
        "default task: SmolLM2 tokenizer, movie-review prompts, VADER sentiment of the completion",
        {"tokenizer": "default", "prompts": "builtin:sentiment", "scorer": "vader", "max_new_tokens": 24},
    ),
    "TextGen-Sentiment-v0": (
        "positive sentiment (VADER compound score in [-1, 1]) of completions of review openers",
        {"tokenizer": "default", "prompts": "builtin:sentiment", "scorer": "vader", "max_new_tokens": 24},
    ),
    "TextGen-DataAnalysis-v0": (
        "answer a question (mean, sum, max, count, which row) about a small CSV table; scored on the number",
        {"tokenizer": "default", "prompts": "gen:data-analysis", "scorer": "data-analysis", "max_new_tokens": 12,
         "chat_template": "auto"},
    ),
    "TextGen-SQL-v0": (
        "write one SQLite SELECT that answers a question about a small table; the query runs sandboxed, scored 1 "
        "if its first cell is the answer",
        {"tokenizer": "default", "prompts": "gen:sql", "scorer": "sql", "max_new_tokens": 48, "chat_template": "auto",
         "stop_strings": (";", re.compile(r"```.*?```", re.DOTALL))},  # ends at ';' or a closing code fence
    ),
    "TextGen-Target-v0": (
        "toy: emit a fixed target string then EOS (6 actions: a-d, > and EOS); reward per correct position",
        {"tokenizer": "char:abcd>", "prompts": "gen:target", "scorer": "target", "max_new_tokens": 6,
         "reward_mode": "token"},
    ),
    "TextGen-Copy-v0": (
        "toy: copy a random 1-4 letter prompt over {a,b,c}, then EOS; reward per correct position",
        {"tokenizer": "char:abc>", "prompts": "gen:copy", "scorer": "copy", "max_new_tokens": 5,
         "reward_mode": "token"},
    ),
    "TextGen-Reverse-v0": (
        "toy: write a random 1-4 letter prompt over {a,b,c} reversed, then EOS; reward per correct position",
        {"tokenizer": "char:abc>", "prompts": "gen:reverse", "scorer": "target", "max_new_tokens": 5,
         "reward_mode": "token"},
    ),
    "TextGen-Count-v0": (
        "toy: count the a's in a random prompt over {a,b} and answer with one digit, then EOS",
        {"tokenizer": "char:ab0123456789?", "prompts": "gen:count", "scorer": "target", "max_new_tokens": 2,
         "reward_mode": "token"},
    ),
}


def short_name(env_id: str) -> str:
    """``"TextGen-DataAnalysis-v0"`` -> ``"data-analysis"``, ``"TextGen-SQL-v0"`` -> ``"sql"``, ``"TextGen-v0"`` ->
    ``"default"``: the names ``textgym train --task`` also accepts."""
    core = env_id.removeprefix("TextGen-").removesuffix("-v0").removesuffix("v0")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", core).lower() or "default"


def resolve_task(task: str) -> str:
    """A registered id from an id (``"TextGen-SQL-v0"``, ``"textgym:TextGen-SQL-v0"``) or a short name (``"sql"``);
    ``ValueError`` listing both for anything else."""
    task = task.removeprefix("textgym:")
    if task in TASKS:
        return task
    by_short = {short_name(i): i for i in TASKS}
    if task.lower() in by_short:
        return by_short[task.lower()]
    raise ValueError(f"unknown task {task!r}; pass a short name ({', '.join(by_short)}) or a registered id "
                     f"({', '.join(TASKS)})")


def register_envs() -> None:
    """Register every id of :data:`TASKS` with Gymnasium (idempotent; ``import textgym`` calls it)."""
    for env_id, (_, kwargs) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT, vector_entry_point=VECTOR_ENTRY_POINT,
                         kwargs=dict(kwargs))
