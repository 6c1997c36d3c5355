"""Confidence intervals and two-sample tests: the project's one place for them, on :mod:`scipy.stats`.

scipy is imported inside the functions, so ``import textgym`` still needs only gymnasium and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym._optional import require


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def mean_ci(x: Sequence[float] | np.ndarray | Any, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half-width)`` of the Student-t confidence interval of the mean of ``x``.

    The half-width is NaN with fewer than two values (no interval can be given), and 0 when all are equal.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    a = _as_array(x)
    if a.size == 0:
        return float("nan"), float("nan")
    if a.size < 2:
        return float(a.mean()), float("nan")
    stats = require("scipy.stats", "confidence intervals")
    sem = float(a.std(ddof=1)) / math.sqrt(a.size)
    return float(a.mean()), float(stats.t.ppf(0.5 + confidence / 2, a.size - 1) * sem)


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(proportion, low, high)``: the Wilson score interval of a binomial proportion (scipy's
    ``binomtest(...).proportion_ci(method="wilson")``), which stays inside [0, 1] and is sane at 0 or n successes,
    where a normal interval collapses to a point. ``(nan, nan, nan)`` for ``n == 0``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n, bool) or int(n) != n or n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need integers 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    stats = require("scipy.stats", "confidence intervals")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return successes / n, float(ci.low), float(ci.high)
