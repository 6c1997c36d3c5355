import numpy as np
import pytest

from textgym.stats import mean_ci, proportion_ci


def test_mean_ci_matches_student_t_by_hand():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    m, h = mean_ci(x)
    # t_{0.975, 3} = 3.182446305284263 (scipy), sd = 2.6457513, n = 4
    assert m == pytest.approx(3.5)
    assert h == pytest.approx(3.182446305284263 * np.std(x, ddof=1) / 2.0, rel=1e-12)


def test_mean_ci_degenerate_inputs():
    assert np.isnan(mean_ci([])[0])
    m, h = mean_ci([2.0])
    assert m == 2.0 and np.isnan(h)
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_proportion_ci_is_wilsons_interval_by_hand():
    k, n, z = 7, 20, 1.959963984540054
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert proportion_ci(k, n) == pytest.approx((0.35, center - half, center + half), rel=1e-9)
    m, lo, hi = proportion_ci(0, 10)
    assert m == 0.0 and lo == pytest.approx(0.0, abs=1e-12) and 0.2 < hi < 0.35  # not a point at 0
    assert all(np.isnan(proportion_ci(0, 0)))
    with pytest.raises(ValueError, match="successes <= n"):
        proportion_ci(5, 3)
