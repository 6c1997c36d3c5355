import numpy as np
import pytest

from textgym.stats import mean_ci, min_detectable_difference, proportion_ci, tost_welch, welch_test


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


A = np.array([-85.0, -90.2, -80.1, -101.0, -83.3, -79.9, -84.0, -88.8])
B = np.array([-81.0, -83.5, -78.8, -80.2, -82.9, -79.1, -84.4])


def _welch_by_hand(a, b):
    from scipy import stats

    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch-Satterthwaite
    return a.mean() - b.mean(), se, df, stats.t


def test_welch_test_by_hand():
    diff, se, df, t = _welch_by_hand(A, B)
    w = welch_test(A, B, 0.95)
    assert w.difference == pytest.approx(diff) and w.se == pytest.approx(se) and w.df == pytest.approx(df)
    assert w.p_value == pytest.approx(2 * t.sf(abs(diff / se), df))
    half = t.ppf(0.975, df) * se
    assert w.ci == pytest.approx((diff - half, diff + half))
    assert welch_test(A, B, 0.90).ci == pytest.approx((diff - t.ppf(0.95, df) * se, diff + t.ppf(0.95, df) * se))


def test_tost_by_hand_and_its_ci_form():
    diff, se, df, t = _welch_by_hand(A, B)
    for delta in (2.0, 5.0, 10.0, 20.0):
        p = max(t.sf((diff + delta) / se, df), t.cdf((diff - delta) / se, df))
        assert tost_welch(A, B, delta) == pytest.approx(p)
        lo, hi = welch_test(A, B, 0.90).ci
        assert (tost_welch(A, B, delta) < 0.05) == (-delta < lo and hi < delta)  # Schuirmann: the 90% CI inside
    with pytest.raises(ValueError, match="delta"):
        tost_welch(A, B, 0.0)


def test_min_detectable_difference_by_hand():
    _, se, df, t = _welch_by_hand(A, B)
    assert min_detectable_difference(A, B) == pytest.approx((t.ppf(0.975, df) + t.ppf(0.8, df)) * se)
    assert min_detectable_difference(A, B, power=0.9) > min_detectable_difference(A, B)


def test_welch_degenerate_inputs():
    w = welch_test([500.0] * 5, [500.0] * 5)  # both constant and equal (CartPole at its cap)
    assert w.ci == (0.0, 0.0) and w.p_value == 1.0 and w.se == 0.0
    assert tost_welch([500.0] * 5, [500.0] * 5, 1.0) == 0.0
    assert welch_test([1.0, 1.0], [2.0, 2.0]).p_value == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_test([1.0], [1.0, 2.0])


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
