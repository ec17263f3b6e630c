"""The paired test behind every optimizer's final choice."""

import pytest

from toolkit.selection import mcnemar_one_sided, mcnemar_two_sided, paired_counts, select_final, spearman


def test_mcnemar_exact_values():
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_one_sided(4, 1) == pytest.approx(6 / 32)
    assert mcnemar_two_sided(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_two_sided(3, 3) == 1.0
    assert paired_counts([True, True, False, False], [True, False, True, False]) == (1, 1)
    with pytest.raises(ValueError):
        paired_counts([True], [True, False])


def test_select_final_needs_a_significant_gain_after_correction():
    initial = [True] * 10 + [False] * 10
    same = list(initial)
    small = [True] * 12 + [False] * 8  # +2
    big = [True] * 18 + [False] * 2  # +8, 0 broken
    sel = select_final(initial, [same, small])
    assert sel.chosen is None and sel.best_index == 1 and not sel.significant
    sel = select_final(initial, [same, small, big], train_scores=[0.1, 0.2, 0.3])
    assert sel.chosen == 2 and sel.significant and sel.wins == 8 and sel.losses == 0
    assert sel.p_value == pytest.approx(1 / 256)
    # 30 candidates compared: 1/256 x 30 > 0.05, the initial prompt stays.
    assert select_final(initial, [big] + [same] * 29).chosen is None
    assert select_final(None, [big]).chosen is None and select_final([], [big]).chosen is None


def test_select_final_breaks_accuracy_ties_by_training_score():
    initial = [False] * 20
    a = [True] * 10 + [False] * 10
    sel = select_final(initial, [a, list(a)], train_scores=[0.5, 0.2])
    assert sel.chosen == 1


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427, abs=1e-5)
