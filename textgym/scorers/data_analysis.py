"""Scores answers to the data-analysis questions of ``gen:data-analysis`` (see :mod:`textgym.tasks`).

Each prompt's meta holds ``answer`` (a number or a label), ``answer_type`` (``"number"`` or ``"label"``) and,
for labels, the candidate ``labels`` (the table's item names). The scorer parses the *first* number (or the
first candidate label) in the completion and pays

    score = 0.5 * correct + 0.5 * closeness

- ``correct``: 1 if the parsed number is within ``max(abs_tol, rel_tol * |answer|)`` of the answer (labels:
  equal, case-insensitive), else 0.
- ``closeness``: 1 if correct; else ``exp(-rel_err / scale)`` with ``rel_err = |parsed - answer| /
  max(|answer|, 1)`` (in [0, 1), decays with the relative error); 0 for a wrong label or nothing parsed.
- ``parsed``: 1 if a number (label) was found, else 0 (weight 0: shown in ``info["score_parts"]`` only).
- ``strict``: 1 if the completion is the answer alone in the asked format (one number, or the item name; spaces
  and one final period allowed), else 0 (weight 0: reported only). Format and skill together.
- ``lenient``: 1 if the right value appears anywhere in the completion (any number within tolerance, or the item
  name as a word), else 0 (weight 0: reported only). Skill without format; an upper bound, since a completion
  that lists every item or echoes the table can hit it by luck.

So a correct answer scores 1.0, a wrong number less than 0.5 (more when closer), an unparseable one 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.core import Sample

# "12", "12.5", "-3", "+4", "1,234", "1,234.5", "$12", "-$3", ".5"; thousands separators only in groups of 3
_NUMBER = re.compile(r"(?<![\w.])([-+]?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_WORD = re.compile(r"[A-Za-z][\w-]*")


def parse_numbers(text: str) -> list[float]:
    """Every number in ``text``, in order (the forms of :func:`parse_number`)."""
    return [-float(m.group(2).replace(",", "")) if m.group(1) == "-" else float(m.group(2).replace(",", ""))
            for m in _NUMBER.finditer(text)]


def parse_number(text: str) -> float | None:
    """The first number in ``text`` (``"about $1,234.5 total"`` -> 1234.5), or None if there is none."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    value = float(m.group(2).replace(",", ""))
    return -value if m.group(1) == "-" else value


def parse_label(text: str, labels: Sequence[str] | None = None) -> str | None:
    """The candidate label that occurs first in ``text`` (case-insensitive, whole words), lower-cased.

    Without candidates: the first word. None if nothing matches.
    """
    if labels:
        best: tuple[int, str] | None = None
        for label in labels:
            m = re.search(r"(?<!\w)" + re.escape(str(label)) + r"(?!\w)", text, re.IGNORECASE)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), str(label).lower())
        return None if best is None else best[1]
    m = _WORD.search(text)
    return None if m is None else m.group(0).lower()


class DataAnalysisScorer:
    """Correctness and closeness of a parsed answer; see the module docstring for the formula.

    Arguments: ``abs_tol`` (default 0.05: an answer rounded to one decimal counts as right), ``rel_tol``
    (default 0.01), ``scale`` (default 0.25: the relative error at which closeness falls to 1/e).
    """

    def __init__(self, abs_tol: float = 0.05, rel_tol: float = 0.01, scale: float = 0.25,
                 name: str = "data-analysis") -> None:
        if abs_tol < 0 or rel_tol < 0 or scale <= 0:
            raise ValueError(f"DataAnalysisScorer needs abs_tol >= 0, rel_tol >= 0 and scale > 0, got "
                             f"abs_tol={abs_tol}, rel_tol={rel_tol}, scale={scale}")
        self.abs_tol, self.rel_tol, self.scale = float(abs_tol), float(rel_tol), float(scale)
        self.name = name
        self.weights = {"correct": 0.5, "closeness": 0.5, "parsed": 0.0, "strict": 0.0, "lenient": 0.0}

    def _close(self, value: float, answer: float) -> bool:
        return abs(value - answer) <= max(self.abs_tol, self.rel_tol * abs(answer)) + 1e-9

    def strict_lenient(self, completion: str, meta: Any) -> tuple[float, float]:
        """``(strict, lenient)`` of one completion (see the module docstring)."""
        answer = meta["answer"]
        alone = completion.strip().removesuffix(".").strip()
        if meta.get("answer_type", "number") == "label":
            label = str(answer).lower()
            lenient = re.search(r"(?<!\w)" + re.escape(label) + r"(?!\w)", completion, re.IGNORECASE) is not None
            return float(alone.lower() == label), float(lenient)
        answer = float(answer)
        strict = _NUMBER.fullmatch(alone) is not None and self._close(parse_number(alone), answer)
        return float(strict), float(any(self._close(v, answer) for v in parse_numbers(completion)))

    def judge(self, completion: str, meta: Any) -> tuple[float, float, float]:
        """``(correct, closeness, parsed)`` of one completion, given the prompt's meta."""
        if not meta or "answer" not in meta:
            raise ValueError("DataAnalysisScorer needs the known answer in prompt meta['answer'] (and "
                             "meta['answer_type']: 'number' or 'label'); use prompts='gen:data-analysis'")
        answer, kind = meta["answer"], meta.get("answer_type", "number")
        if kind == "label":
            got = parse_label(completion, meta.get("labels"))
            if got is None:
                return 0.0, 0.0, 0.0
            ok = float(got == str(answer).lower())
            return ok, ok, 1.0
        if kind != "number":
            raise ValueError(f"meta['answer_type'] must be 'number' or 'label', got {kind!r}")
        value = parse_number(completion)
        if value is None:
            return 0.0, 0.0, 0.0
        answer = float(answer)
        err = abs(value - answer)
        if self._close(value, answer):
            return 1.0, 1.0, 1.0
        return 0.0, math.exp(-err / max(abs(answer), 1.0) / self.scale), 1.0

    def score_parts(self, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
        judged = np.array([(*self.judge(s.completion, s.meta), *self.strict_lenient(s.completion, s.meta))
                           for s in samples], dtype=np.float64).reshape(-1, 5)
        return {"correct": judged[:, 0], "closeness": judged[:, 1], "parsed": judged[:, 2], "strict": judged[:, 3],
                "lenient": judged[:, 4]}

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        parts = self.score_parts(samples)
        return sum(self.weights[k] * v for k, v in parts.items())
