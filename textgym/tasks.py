"""Generated prompt sources, named ``"gen:NAME"`` in :data:`textgym.prompts.PROMPT_GENERATORS` (lazy
``"module:attr"`` entries: this module is imported when one is first used, and registers nothing itself).

Each draws a fresh :class:`~textgym.core.Prompt` with its known answer in ``meta`` from the rng it is given
(the env's ``np_random``), and bounds its prompt length for the observation size with
``max_prompt_tokens(tokenizer)``.

- ``gen:target``: prompt ``">"``; the wanted completion ``meta["target"]`` is a fixed string (then EOS).
- ``gen:copy`` / ``gen:reverse``: 1-4 random letters over ``"abc"`` then ``">"``; target: the letters (reversed).
- ``gen:count``: 1-9 random letters over ``"ab"`` then ``"?"``; target: the number of ``a``'s as a digit.
- ``gen:data-analysis``: a small CSV table and a question (mean, sum, max, min, count above a threshold,
  which item has the max/min) with ``meta``: ``answer``, ``answer_type`` (``"number"``/``"label"``),
  ``table``, ``question``, ``kind``, ``column``, ``labels`` (the item names), ``threshold`` (count only).
  ``n=N`` gives a finite :class:`~textgym.prompts.PromptSet` of N prompts from ``seed`` (for before/after
  accuracy on a fixed set); ``curriculum=[[kinds], ...]`` widens the kinds as accuracy passes a threshold.
- ``gen:sql``: the same tables as an SQLite table ``t`` (``meta`` adds ``columns`` and ``rows``); the prompt asks
  for one SQLite ``SELECT`` whose result answers the question (scorer ``"sql"``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from textgym.core import Prompt
from textgym.prompts import PromptSet
from textgym.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer


def _max_tokens(tokenizer: Tokenizer, texts: Iterable[str]) -> int:
    """The most tokens any of ``texts`` encodes to (char/byte tokenizers: counted without encoding)."""
    if isinstance(tokenizer, CharTokenizer):
        return max(len(t) for t in texts)
    if isinstance(tokenizer, ByteTokenizer):
        return max(len(t.encode("utf-8")) for t in texts)
    return max(len(tokenizer.encode(t)) for t in texts)


class TargetTask:
    """Always the same prompt; the wanted completion ``meta["target"]`` is ``target`` followed by EOS.

    The default target, ``"abcda"`` (5 letters + EOS = 6 tokens), fits TextGen-Target-v0's ``max_new_tokens=6``.
    """

    def __init__(self, target: str = "abcda", prompt: str = ">") -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be a non-empty string, got {target!r}")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        self.prompt = Prompt(prompt, {"target": target})

    def sample(self, rng: np.random.Generator) -> Prompt:
        return self.prompt

    def max_prompt_tokens(self, tokenizer: Tokenizer) -> int:
        return _max_tokens(tokenizer, [self.prompt.text])

    def __repr__(self) -> str:
        return f"TargetTask(target={self.prompt.meta['target']!r})"


def random_letters(rng: np.random.Generator, alphabet: str, min_len: int, max_len: int) -> str:
    """A string of ``min_len..max_len`` letters drawn uniformly from ``alphabet`` (the toy tasks' prompts)."""
    n = int(rng.integers(min_len, max_len + 1))
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=n))


class LettersTask:
    """``min_len``-``max_len`` random letters from ``alphabet``, then ``sep``; the target is the letters
    (``reverse=True``: reversed). ``gen:copy`` and ``gen:reverse``."""

    def __init__(self, alphabet: str = "abc", min_len: int = 1, max_len: int = 4, sep: str = ">",
                 reverse: bool = False) -> None:
        if not alphabet:
            raise ValueError("alphabet must be a non-empty string of letters")
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        self.alphabet, self.min_len, self.max_len, self.sep, self.reverse = alphabet, min_len, max_len, sep, reverse

    def sample(self, rng: np.random.Generator) -> Prompt:
        letters = random_letters(rng, self.alphabet, self.min_len, self.max_len)
        return Prompt(letters + self.sep, {"target": letters[::-1] if self.reverse else letters})

    def max_prompt_tokens(self, tokenizer: Tokenizer) -> int:
        if isinstance(tokenizer, (CharTokenizer, ByteTokenizer)) or len(self.alphabet) ** self.max_len > 5000:
            longest = max(self.alphabet, key=lambda c: len(c.encode("utf-8")))
            return _max_tokens(tokenizer, [longest * self.max_len + self.sep])  # exact for char/byte
        return _max_tokens(tokenizer, ("".join(p) + self.sep for n in range(self.min_len, self.max_len + 1)
                                       for p in itertools.product(self.alphabet, repeat=n)))

    def __repr__(self) -> str:
        return f"LettersTask({self.alphabet!r}, {self.min_len}-{self.max_len}, reverse={self.reverse})"


class CountTask:
    """``min_len``-``max_len`` random letters from ``alphabet``, then ``sep``; the target is how many times
    ``letter`` occurs, in decimal (one digit while ``max_len <= 9``). ``gen:count``."""

    def __init__(self, alphabet: str = "ab", letter: str = "a", min_len: int = 1, max_len: int = 9,
                 sep: str = "?") -> None:
        if letter not in alphabet or len(letter) != 1:
            raise ValueError(f"letter must be one character of alphabet {alphabet!r}, got {letter!r}")
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        self.alphabet, self.letter, self.min_len, self.max_len, self.sep = alphabet, letter, min_len, max_len, sep

    def sample(self, rng: np.random.Generator) -> Prompt:
        letters = random_letters(rng, self.alphabet, self.min_len, self.max_len)
        return Prompt(letters + self.sep, {"target": str(letters.count(self.letter))})

    def max_prompt_tokens(self, tokenizer: Tokenizer) -> int:
        return LettersTask(self.alphabet, self.min_len, self.max_len, self.sep).max_prompt_tokens(tokenizer)

    def __repr__(self) -> str:
        return f"CountTask({self.alphabet!r}, letter={self.letter!r}, {self.min_len}-{self.max_len})"


# -- data analysis -----------------------------------------------------------------------------------------
ITEMS = ("apple", "bread", "milk", "cheese", "rice", "tea", "eggs", "soap", "pens", "lamp", "chair", "plate")
# column name -> (low, high, decimals): values are distinct multiples of 10**-decimals in [low, high]
NUMERIC_COLUMNS = {"price": (0.5, 20.0, 1), "qty": (1, 20, 0), "weight": (0.1, 5.0, 1)}
KINDS = ("mean", "sum", "max", "min", "count", "argmax", "argmin")
_QUESTIONS = {
    "mean": "What is the average {col}?",
    "sum": "What is the total {col} of all rows?",
    "max": "What is the largest {col}?",
    "min": "What is the smallest {col}?",
    "count": "How many rows have a {col} greater than {thr}?",
    "argmax": "Which item has the highest {col}?",
    "argmin": "Which item has the lowest {col}?",
}


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


class DataAnalysisTask:
    """A CSV table (``min_rows``-``max_rows`` rows; an ``item`` column and 1-2 of price/qty/weight) and one
    question about it, with the answer computed from the same values.

    Numeric answers are exact (a mean is rounded to 4 decimals); the prompt asks for a single number or the
    item name and ends with ``"Answer:"``. ``kinds`` restricts the question kinds (default: all of
    :data:`KINDS`).

    ``max_prompt_tokens(tokenizer)`` is estimated: the longest of 256 prompts drawn from a fixed seed, plus a
    margin of 10% (at least 8 tokens). A longer prompt is then very unlikely; if one occurs the env raises a
    ``ValueError`` naming ``max_prompt_tokens``, which you can pass to the env explicitly.

    Difficulty: ``kinds`` and ``min_rows``/``max_rows``. Curriculum (optional): ``curriculum`` is a list of
    stages, each a list of kinds added to those asked so far (``[["max", "min"], ["argmax", "argmin"],
    ["count", "sum", "mean"]]``); the env reports each finished episode to :meth:`observe`, and once the
    accuracy (score part ``curriculum_part``, default ``"correct"``) over the last ``window`` episodes of the
    current stage reaches ``threshold``, the next stage's kinds are added. The stage lives in this object: it
    is per env process and not part of a training checkpoint.
    """

    def __init__(self, min_rows: int = 3, max_rows: int = 6, kinds: Sequence[str] | None = None,
                 curriculum: Sequence[Sequence[str]] | None = None, threshold: float = 0.6, window: int = 64,
                 curriculum_part: str = "correct") -> None:
        if not 2 <= min_rows <= max_rows <= len(ITEMS):
            raise ValueError(f"need 2 <= min_rows <= max_rows <= {len(ITEMS)}, got {min_rows}, {max_rows}")
        if curriculum is not None:
            if kinds is not None:
                raise ValueError("pass kinds or curriculum, not both: a curriculum's first stage is its first kinds")
            stages = [tuple(st) for st in curriculum]
            if not stages or any(not st for st in stages):
                raise ValueError(f"curriculum must be a non-empty list of non-empty lists of kinds, got {curriculum!r}")
            kinds = stages[0]
            flat = [k for st in stages for k in st]
            unknown = [k for k in flat if k not in KINDS]
            if unknown or len(set(flat)) != len(flat):
                raise ValueError(f"curriculum kinds must be distinct kinds of {KINDS}, got {curriculum!r}")
            if not 0.0 < threshold <= 1.0 or int(window) < 1:
                raise ValueError(f"curriculum needs 0 < threshold <= 1 and window >= 1, got {threshold}, {window}")
        kinds = tuple(KINDS if kinds is None else kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown question kinds {unknown}; choose from {KINDS}")
        self.min_rows, self.max_rows, self.kinds = min_rows, max_rows, kinds
        self.stages = None if curriculum is None else [tuple(st) for st in curriculum]
        self.stage, self.threshold, self.window = 0, float(threshold), int(window)
        self.curriculum_part = curriculum_part
        self._recent: list[float] = []  # the current stage's last `window` results

    def observe(self, samples: Sequence[Any], parts: dict[str, np.ndarray]) -> None:
        """Called by the env with each batch of finished episodes: moves the curriculum on (no-op without one)."""
        if self.stages is None or self.stage + 1 >= len(self.stages):
            return
        ok = parts.get(self.curriculum_part)
        if ok is None:
            raise ValueError(f"the curriculum reads score part {self.curriculum_part!r}, but the scorer gives "
                             f"{sorted(parts)}; pass curriculum_part= one of those")
        self._recent = (self._recent + [float(x) for x in np.asarray(ok).ravel()])[-self.window:]
        if len(self._recent) >= self.window and sum(self._recent) / self.window >= self.threshold:
            self.stage += 1
            self.kinds = self.kinds + self.stages[self.stage]
            self._recent = []

    def sample(self, rng: np.random.Generator) -> Prompt:
        n_rows = int(rng.integers(self.min_rows, self.max_rows + 1))
        items = [ITEMS[i] for i in rng.choice(len(ITEMS), size=n_rows, replace=False)]
        names = list(NUMERIC_COLUMNS)
        n_cols = int(rng.integers(1, 3))
        cols = [names[i] for i in sorted(rng.choice(len(names), size=n_cols, replace=False))]
        values: dict[str, list[float]] = {}
        for c in cols:
            low, high, dec = NUMERIC_COLUMNS[c]
            grid = np.arange(round(low * 10**dec), round(high * 10**dec) + 1)
            values[c] = [round(int(v) / 10**dec, dec) for v in rng.choice(grid, size=n_rows, replace=False)]
        header = ",".join(["item", *cols])
        lines = [",".join([it, *(_fmt(values[c][r], NUMERIC_COLUMNS[c][2]) for c in cols)])
                 for r, it in enumerate(items)]
        table = "\n".join([header, *lines])

        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        col = cols[int(rng.integers(len(cols)))]
        v, dec = values[col], NUMERIC_COLUMNS[col][2]
        meta: dict[str, Any] = {"kind": kind, "column": col, "table": table, "labels": items,
                                "answer_type": "number"}
        thr = None
        if kind == "mean":
            answer: float | int | str = round(sum(v) / len(v), 4)
        elif kind == "sum":
            answer = round(sum(v), dec)
        elif kind == "max":
            answer = max(v)
        elif kind == "min":
            answer = min(v)
        elif kind == "count":
            thr = sorted(v)[int(rng.integers(len(v)))]  # a value of the column: 0 .. n_rows-1 rows above it
            answer = sum(x > thr for x in v)
            meta["threshold"] = thr
        else:
            pick = max if kind == "argmax" else min
            answer = items[v.index(pick(v))]  # values are distinct: one right item
            meta["answer_type"] = "label"
        if dec == 0 and isinstance(answer, float) and kind != "mean":
            answer = int(answer)
        meta["answer"] = answer
        question = _QUESTIONS[kind].format(col=col, thr=None if thr is None else _fmt(thr, dec))
        meta["question"] = question
        how = "Answer with the item name only." if meta["answer_type"] == "label" else \
            "Answer with a single number only."
        text = f"Here is a table in CSV format:\n{table}\n\nQuestion: {question}\n{how}\nAnswer:"
        return Prompt(text, meta)

    def max_prompt_tokens(self, tokenizer: Tokenizer) -> int:
        rng = np.random.default_rng(12345)  # fixed: the bound must not depend on the env's seed
        every = type(self)(self.min_rows, self.max_rows)  # all kinds: a curriculum may widen them later
        longest = _max_tokens(tokenizer, (every.sample(rng).text for _ in range(256)))
        return longest + max(8, math.ceil(0.1 * longest))

    def __repr__(self) -> str:
        return f"DataAnalysisTask(rows={self.min_rows}-{self.max_rows}, kinds={self.kinds})"


def data_analysis_prompts(n: int | None = None, seed: int = 0, **kwargs: Any) -> DataAnalysisTask | PromptSet:
    """``gen:data-analysis``: a fresh table each reset, or (``n=N``) a fixed set of N prompts drawn from ``seed``."""
    task = DataAnalysisTask(**kwargs)
    if n is None:
        return task
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive int (the number of fixed prompts), got {n!r}")
    rng = np.random.default_rng(seed)
    return PromptSet([task.sample(rng) for _ in range(int(n))], name=f"gen:data-analysis(n={n}, seed={seed})")


class SQLTask(DataAnalysisTask):
    """The tables and questions of :class:`DataAnalysisTask` as an SQLite table ``t``: the prompt shows its schema
    and rows and asks for one SQLite ``SELECT`` that answers the question (``gen:sql``, scored by ``"sql"``).

    ``meta`` adds ``columns`` (``[[name, type], ...]``: ``item TEXT``, ``qty INTEGER``, ``price``/``weight``
    ``REAL``) and ``rows`` (the typed values) to the data-analysis meta. Arguments as :class:`DataAnalysisTask`.
    """

    def sample(self, rng: np.random.Generator) -> Prompt:
        meta = dict(super().sample(rng).meta)
        header, *lines = meta["table"].split("\n")
        names = header.split(",")
        types = ["TEXT"] + ["INTEGER" if NUMERIC_COLUMNS[c][2] == 0 else "REAL" for c in names[1:]]
        rows = []
        for line in lines:
            cells = line.split(",")
            rows.append([cells[0], *(int(x) if ty == "INTEGER" else float(x) for x, ty in zip(cells[1:], types[1:]))])
        meta["columns"], meta["rows"] = [[n, ty] for n, ty in zip(names, types)], rows
        schema = f"CREATE TABLE t ({', '.join(f'{n} {ty}' for n, ty in zip(names, types))});"
        text = (f"SQLite table t:\n{schema}\n\nIts rows (CSV):\n{meta['table']}\n\nQuestion: {meta['question']}\n"
                "Write one SQLite SELECT query on table t whose result is the answer. Reply with the query only.")
        return Prompt(text, meta)

    def __repr__(self) -> str:
        return f"SQLTask(rows={self.min_rows}-{self.max_rows}, kinds={self.kinds})"


def sql_prompts(n: int | None = None, seed: int = 0, **kwargs: Any) -> SQLTask | PromptSet:
    """``gen:sql``: a fresh table each reset, or (``n=N``) a fixed set of N prompts drawn from ``seed``."""
    task = SQLTask(**kwargs)
    if n is None:
        return task
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive int (the number of fixed prompts), got {n!r}")
    rng = np.random.default_rng(seed)
    return PromptSet([task.sample(rng) for _ in range(int(n))], name=f"gen:sql(n={n}, seed={seed})")


def reverse_task(**kwargs: Any) -> LettersTask:
    """``gen:reverse``: :class:`LettersTask` with ``reverse=True``."""
    return LettersTask(**{"reverse": True, **kwargs})

