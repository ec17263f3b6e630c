"""toolkit.stats: the one place the reports' and decisions' statistics are computed (exact values by hand)."""

import math

import pytest

from toolkit.stats import (
    mcnemar_one_sided,
    mcnemar_two_sided,
    paired_counts,
    paired_counts_by_key,
    sign_test,
    spearman,
    wilson_interval,
)


def test_exact_tests_and_intervals():
    assert mcnemar_two_sided(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 0.0386
    assert mcnemar_one_sided(10, 2) == pytest.approx((1 + 12 + 66) / 4096)
    assert mcnemar_two_sided(0, 0) == mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_two_sided(6, 6) == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_counts_by_position_and_by_example():
    assert paired_counts([True, True, False, False], [False, True, True, False]) == (1, 1)
    with pytest.raises(ValueError):
        paired_counts([True], [True, False])
    a = {1: True, 2: True, 3: False, 4: True}
    b = {1: False, 2: True, 3: True, 5: False}  # example 4 and 5 were scored by one side only
    assert paired_counts_by_key(a, b) == (1, 1, 3)


def test_sign_test_and_spearman():
    assert sign_test([0.5, 0.2, -0.1, 0.0, 0.3]) == (3, 1, mcnemar_two_sided(3, 1))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    assert math.isclose(spearman([1, 2, 2, 3], [1, 3, 2, 4]), 4.5 / math.sqrt(4.5 * 5))  # tied ranks averaged
