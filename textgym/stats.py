"""Confidence intervals and two-sample tests: the project's one place for them, on :mod:`scipy.stats`.

scipy is imported inside the functions, so ``import textgym`` still needs only gymnasium and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class WelchResult:
    """Welch's two-sample t-test of ``mean(a) - mean(b)`` (unequal variances) and what follows from it."""

    difference: float
    """mean(a) - mean(b)"""
    ci: tuple[float, float]
    """the Welch confidence interval of the difference at ``confidence``"""
    confidence: float
    p_value: float
    """two-sided p of H0: the means are equal"""
    df: float
    """Welch-Satterthwaite degrees of freedom"""
    se: float
    """standard error of the difference, sqrt(var_a / n_a + var_b / n_b)"""


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
               confidence: float = 0.95) -> WelchResult:
    """Welch's t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``) with its CI of the difference.

    When both samples are constant (standard error 0) the difference is known exactly: the CI is the point and
    p is 1 if it is 0, else 0 (scipy would give NaN). Needs at least two values on each side.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    xa, xb = _as_array(a), _as_array(b)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"Welch's test needs at least 2 values per sample, got {xa.size} and {xb.size}")
    diff = float(xa.mean() - xb.mean())
    se = math.sqrt(xa.var(ddof=1) / xa.size + xb.var(ddof=1) / xb.size)
    if se == 0.0:
        return WelchResult(diff, (diff, diff), confidence, 1.0 if diff == 0 else 0.0, float(xa.size + xb.size - 2),
                           0.0)
    stats = require("scipy.stats", "Welch's t-test")
    res = stats.ttest_ind(xa, xb, equal_var=False)
    ci = res.confidence_interval(confidence)
    return WelchResult(diff, (float(ci.low), float(ci.high)), confidence, float(res.pvalue), float(res.df), se)


def tost_welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, delta: float) -> float:
    """p-value of the two one-sided Welch tests (TOST) of equivalence within ``±delta``.

    H0: ``|mean(a) - mean(b)| >= delta``. The p-value is the larger of the one-sided p of
    ``mean(a) - mean(b) > -delta`` and of ``mean(a) - mean(b) < delta``; p < alpha exactly when the
    ``1 - 2 alpha`` Welch CI of the difference lies inside ``(-delta, delta)`` (Schuirmann 1987).
    """
    if not delta > 0:
        raise ValueError(f"the equivalence margin delta must be positive, got {delta!r}")
    xa, xb = _as_array(a), _as_array(b)
    w = welch_test(xa, xb)
    if w.se == 0.0:
        return 0.0 if abs(w.difference) < delta else 1.0
    stats = require("scipy.stats", "the TOST equivalence test")
    lower = stats.ttest_ind(xa + delta, xb, equal_var=False, alternative="greater").pvalue
    upper = stats.ttest_ind(xa - delta, xb, equal_var=False, alternative="less").pvalue
    return float(max(lower, upper))


def min_detectable_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                              alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference of means that a two-sided Welch test at ``alpha`` detects with probability
    ``power`` at these sample sizes and (observed) spreads: ``(t_{1-alpha/2, df} + t_{power, df}) * se``."""
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha!r} and {power!r}")
    w = welch_test(a, b)
    if w.se == 0.0:
        return 0.0
    stats = require("scipy.stats", "the minimum detectable difference")
    return float((stats.t.ppf(1 - alpha / 2, w.df) + stats.t.ppf(power, w.df)) * w.se)


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
