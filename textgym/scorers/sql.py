"""Scores SQLite queries written for the tables of ``gen:sql`` (see :class:`textgym.tasks.SQLTask`) by running them.

Each prompt's meta holds the table (``columns``: ``[[name, SQLITE_TYPE], ...]``, ``rows``) and the known
``answer`` (a number or, with ``answer_type="label"``, an item name). The scorer takes the query out of the
completion (from the first line starting with ``SELECT`` or ``WITH``, inside a ```` ```sql ```` fence if there is
one), runs it on table ``t`` and compares the first cell of the first result row with the answer:

    score = correct + valid_weight * valid + typed_weight * typed

- ``valid``: 1 if the query ran and the first cell of its result is not NULL, else 0.
- ``typed`` (a part only when ``typed_weight > 0``): 1 if the first cell has the answer's type, else 0: one of
  the table's item names for a label question (which item has the highest ...), a number for the others.
- ``correct``: 1 if the first cell equals the answer (numbers within ``max(abs_tol, rel_tol * |answer|)``,
  labels case-insensitive, surrounding spaces ignored), else 0.
- ``valid_weight`` defaults to 0 (the score is the execution accuracy); a small value such as 0.1 pays a
  little for a query that runs, which gives RL a signal on kinds the model never gets right at first.
  ``typed_weight`` (default 0) pays a little more for an answer of the right type: it keeps a label question's
  queries selecting an item (``SELECT item ... ORDER BY ... LIMIT 1``) where the valid bonus alone lets them
  drift to the number that a max question wants (``SELECT MAX(qty)``).

**The completion is untrusted code.** Every query runs in a fresh in-memory database holding only ``t``, behind
four guards: an authorizer that allows ``SELECT``, reads of ``t``, recursive CTEs and function calls and denies
everything else (ATTACH, PRAGMA, writes, DDL, temp tables, transactions, ``load_extension`` and ``printf``, reads
of ``sqlite_master``); a progress handler that stops a query after ``max_vm_steps`` virtual-machine steps or
``time_budget_s`` seconds (a recursive CTE, a 10-way self-join); ``Connection.setlimit`` caps on string and blob
length, SQL length, expression depth, compound selects, attached databases (0) and so on (Python 3.11+; on older
Pythons a warning says these caps are missing and the other guards remain); and at most ``max_rows`` result rows
are fetched. Python's ``execute`` refuses a second statement. Any failure scores 0 and is explained in
``score_details``'s ``sql_error`` (the env puts it in ``info["sql_error"]``); nothing is raised and no file is
opened.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.core import Sample

# caps on what one query may build (sqlite3.Connection.setlimit, Python 3.11+)
LIMITS = {
    "SQLITE_LIMIT_LENGTH": 10_000,  # bytes of any string or blob: zeroblob(1e9) fails at once
    "SQLITE_LIMIT_SQL_LENGTH": 10_000,  # characters of SQL text
    "SQLITE_LIMIT_COLUMN": 100,
    "SQLITE_LIMIT_EXPR_DEPTH": 100,
    "SQLITE_LIMIT_COMPOUND_SELECT": 20,
    "SQLITE_LIMIT_VDBE_OP": 50_000,  # instructions of one prepared statement
    "SQLITE_LIMIT_FUNCTION_ARG": 16,
    "SQLITE_LIMIT_ATTACHED": 0,  # no ATTACH (the authorizer denies it too)
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 1000,
    "SQLITE_LIMIT_VARIABLE_NUMBER": 10,
    "SQLITE_LIMIT_TRIGGER_DEPTH": 1,
    "SQLITE_LIMIT_WORKER_THREADS": 0,
}
# function names a query may not call even though function calls are allowed: extension loading and file access
# (compiled out or disabled in Python's sqlite3, denied anyway), and printf/format, whose width argument makes one
# call run for seconds (printf('%.*c', 1e9, 'x'): 15 s), out of the progress handler's reach
DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "zipfile",
                              "printf", "format"})

_FENCE = re.compile(r"```[ \t]*(?:sqlite|sql)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)
_START = re.compile(r"^[ \t]*(?:SELECT|WITH)\b", re.IGNORECASE | re.MULTILINE)  # a line that starts a query
_warned_no_setlimit = False


def extract_query(completion: str) -> str:
    """The SQL in a completion: in the body of its first code fence (```` ```sql ... ``` ````, closed or not), or
    else in the whole text, everything from the first line that starts with ``SELECT`` or ``WITH``; stripped.
    ``""`` if there is none (``"CREATE TABLE u AS SELECT ..."`` has none: a query must start its line)."""
    m = _FENCE.search(completion)
    text = m.group(1) if m else completion
    s = _START.search(text)
    return "" if s is None else text[s.start():].strip()


def _authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, _trigger: str | None) -> int:
    """Allow SELECT, reads of table ``t``, recursive CTEs and function calls (but :data:`DENIED_FUNCTIONS`)."""
    if action == sqlite3.SQLITE_SELECT or action == sqlite3.SQLITE_RECURSIVE:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ:
        if arg1 == "t" and db in ("main", None):  # db None: COUNT(*), which reads no column
            return sqlite3.SQLITE_OK
        # COUNT(*) over a CTE reads "no column" of it; the only other tables are sqlite_master & co (denied)
        return sqlite3.SQLITE_OK if arg2 == "" and not (arg1 or "sqlite_").lower().startswith("sqlite_") \
            else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY  # ATTACH, PRAGMA, INSERT/UPDATE/DELETE, CREATE/DROP (temp too), TRANSACTION ...


def build_table(conn: sqlite3.Connection, columns: Sequence[Sequence[str]], rows: Sequence[Sequence[Any]]) -> None:
    """Create table ``t`` with the given ``[name, type]`` columns and insert ``rows`` (before any guard is set)."""
    if not columns or any(len(c) != 2 or not re.fullmatch(r"[A-Za-z_]\w*", str(c[0])) or
                          str(c[1]).upper() not in ("TEXT", "INTEGER", "REAL") for c in columns):
        raise ValueError(f"columns must be [name, TEXT|INTEGER|REAL] pairs with identifier names, got {columns!r}")
    conn.execute(f"CREATE TABLE t ({', '.join(f'{n} {ty.upper()}' for n, ty in columns)})")
    conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(columns))})", [tuple(r) for r in rows])


def run_query(query: str, columns: Sequence[Sequence[str]], rows: Sequence[Sequence[Any]], *, max_rows: int = 5,
              max_vm_steps: int = 1_000_000, time_budget_s: float = 0.05) -> list[tuple[Any, ...]]:
    """Run ``query`` on a fresh in-memory table ``t`` behind the guards of the module docstring; the first
    ``max_rows`` result rows. Raises ``sqlite3.Error`` (or ``ValueError`` for a bad table) on any failure."""
    global _warned_no_setlimit
    conn = sqlite3.connect(":memory:", isolation_level=None)  # autocommit: no implicit BEGIN
    try:
        build_table(conn, columns, rows)
        if hasattr(conn, "setlimit"):
            for name, value in LIMITS.items():
                conn.setlimit(getattr(sqlite3, name), value)
        elif not _warned_no_setlimit:
            _warned_no_setlimit = True
            warnings.warn("sqlite3.Connection.setlimit needs Python 3.11+: SQL queries run without length/depth "
                          "caps (the authorizer, step budget and row cap still apply)", RuntimeWarning, stacklevel=2)
        deadline = time.perf_counter() + time_budget_s
        steps = [0]
        every = 1000

        def progress() -> int:  # nonzero stops the query ("interrupted")
            steps[0] += every
            return int(steps[0] > max_vm_steps or time.perf_counter() > deadline)

        conn.set_progress_handler(progress, every)
        conn.set_authorizer(_authorizer)
        return conn.execute(query).fetchmany(max_rows)
    finally:
        conn.close()


def _typed(cell: Any, meta: Any) -> bool:
    """Whether ``cell`` has the answer's type: an item of the table (label answers) or a number."""
    if meta.get("answer_type", "number") == "label":
        labels = meta.get("labels") or [r[0] for r in meta["rows"]]
        return isinstance(cell, str) and cell.strip().lower() in {str(x).lower() for x in labels}
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return math.isfinite(cell)
    try:
        return isinstance(cell, str) and math.isfinite(float(cell.strip()))
    except (ValueError, OverflowError):
        return False


def _matches(cell: Any, meta: Any, abs_tol: float, rel_tol: float) -> bool:
    answer = meta["answer"]
    if meta.get("answer_type", "number") == "label":
        return isinstance(cell, str) and cell.strip().lower() == str(answer).strip().lower()
    if isinstance(cell, bytes) or cell is None:
        return False
    try:
        value = float(cell.strip()) if isinstance(cell, str) else float(cell)
    except (ValueError, OverflowError):
        return False
    answer = float(answer)
    return math.isfinite(value) and abs(value - answer) <= max(abs_tol, rel_tol * abs(answer)) + 1e-9


class SQLScorer:
    """Executes the completion as an SQLite query on the prompt's table; see the module docstring.

    Arguments: ``valid_weight`` (default 0), ``typed_weight`` (default 0), ``abs_tol`` (default 0.01:
    ``ROUND(AVG(x), 2)`` counts as right),
    ``rel_tol`` (default 0), ``max_rows`` (5), ``max_vm_steps`` (1e6), ``time_budget_s`` (0.05).
    """

    def __init__(self, valid_weight: float = 0.0, abs_tol: float = 0.01, rel_tol: float = 0.0, max_rows: int = 5,
                 max_vm_steps: int = 1_000_000, time_budget_s: float = 0.05, name: str = "sql",
                 typed_weight: float = 0.0) -> None:
        for what, w in (("valid_weight", valid_weight), ("typed_weight", typed_weight)):
            if not 0.0 <= w <= 1.0:
                raise ValueError(f"{what} must be in [0, 1], got {w}")
        if abs_tol < 0 or rel_tol < 0:
            raise ValueError(f"abs_tol and rel_tol must be >= 0, got {abs_tol}, {rel_tol}")
        if max_rows < 1 or max_vm_steps < 1 or not time_budget_s > 0:
            raise ValueError(f"max_rows, max_vm_steps and time_budget_s must be positive, got {max_rows}, "
                             f"{max_vm_steps}, {time_budget_s}")
        self.valid_weight, self.abs_tol, self.rel_tol = float(valid_weight), float(abs_tol), float(rel_tol)
        self.max_rows, self.max_vm_steps, self.time_budget_s = int(max_rows), int(max_vm_steps), float(time_budget_s)
        self.name = name
        self.typed_weight = float(typed_weight)
        self.weights = {"correct": 1.0, "valid": self.valid_weight}
        if self.typed_weight:
            self.weights["typed"] = self.typed_weight

    def judge(self, completion: str, meta: Any) -> tuple[float, float, str | None]:
        """``(valid, correct, sql_error)`` of one completion, given the prompt's meta."""
        valid, correct, _typed_ok, error = self._judge(completion, meta)
        return valid, correct, error

    def _judge(self, completion: str, meta: Any) -> tuple[float, float, float, str | None]:
        """``(valid, correct, typed, sql_error)``."""
        if not meta or "answer" not in meta or "columns" not in meta or "rows" not in meta:
            raise ValueError("SQLScorer needs meta['answer'], meta['columns'] and meta['rows'] (the table); use "
                             "prompts='gen:sql'")
        query = extract_query(completion)
        if not query:
            return 0.0, 0.0, 0.0, "no query: expected a SELECT (or WITH) statement"
        try:
            result = run_query(query, meta["columns"], meta["rows"], max_rows=self.max_rows,
                               max_vm_steps=self.max_vm_steps, time_budget_s=self.time_budget_s)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as e:
            msg = str(e) or type(e).__name__
            if msg == "interrupted":
                msg = f"interrupted: the query ran past {self.max_vm_steps} steps or {self.time_budget_s * 1e3:.0f} ms"
            return 0.0, 0.0, 0.0, f"{type(e).__name__}: {msg}"
        if not result or not result[0]:
            return 0.0, 0.0, 0.0, "the query returned no rows"
        cell = result[0][0]
        if cell is None:
            return 0.0, 0.0, 0.0, "the query's first cell is NULL"
        return 1.0, float(_matches(cell, meta, self.abs_tol, self.rel_tol)), float(_typed(cell, meta)), None

    def score_details(self, samples: Sequence[Sample]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Parts ``valid`` and ``correct`` (and ``typed`` when weighted), each (B,), and one info dict per sample
        (``{"sql_error": ...}`` on failure)."""
        judged = [self._judge(s.completion, s.meta) for s in samples]
        parts = {"valid": np.array([j[0] for j in judged]), "correct": np.array([j[1] for j in judged])}
        if self.typed_weight:
            parts["typed"] = np.array([j[2] for j in judged])
        return parts, [{} if j[3] is None else {"sql_error": j[3]} for j in judged]

    def score_parts(self, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
        return self.score_details(samples)[0]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        parts = self.score_parts(samples)
        score = parts["correct"] + self.valid_weight * parts["valid"]
        return score + self.typed_weight * parts["typed"] if self.typed_weight else score
