import numpy as np
import pytest

from textgym.stats import mean_ci


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
