"""The paired test behind every optimizer's final choice."""

import pytest

from toolkit.selection import DEFAULT_DEV_SIZE, select_final, simulate_choice
from toolkit.stats import mcnemar_one_sided, mcnemar_two_sided, paired_counts, spearman


def test_mcnemar_exact_values():
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(5, 0) == pytest.approx(1 / 32)
    assert mcnemar_one_sided(4, 1) == pytest.approx(6 / 32)
    assert mcnemar_two_sided(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_two_sided(3, 3) == 1.0
    assert paired_counts([True, True, False, False], [True, False, True, False]) == (1, 1)
    with pytest.raises(ValueError):
        paired_counts([True], [True, False])


def test_select_final_needs_a_significant_gain_at_its_level():
    initial = [True] * 10 + [False] * 10
    same = list(initial)
    small = [True] * 12 + [False] * 8  # +2
    big = [True] * 18 + [False] * 2  # +8, 0 broken
    sel = select_final(initial, [same, small])
    assert sel.chosen is None and not sel.significant and "kept" in sel.reason
    sel = select_final(initial, [same, small, big], train_scores=[0.1, 0.2, 0.3])
    assert sel.chosen == 2 and sel.significant and sel.wins == 8 and sel.losses == 0
    assert sel.p_value == pytest.approx(1 / 256)
    assert sel.order == [0, 1, 2] and sel.passed == [2]
    # third in the order: its own share (0.05 x 0.25) is still above 1/256
    assert sel.table[2]["level"] == pytest.approx(0.05 * 0.25)


def test_the_fallback_spends_the_level_in_the_training_order():
    initial = [False] * 32
    six = [True] * 6 + [False] * 26  # 6 fixed, 0 broken: p = 1/64 = 0.0156 (the news-topic case of issue 26)
    same = list(initial)
    # first in the training order: half the level (0.025) -> adopted (a flat x4 correction needed 7 fixed)
    sel = select_final(initial, [six, same, same, same], train_scores=[0.1, 0.2, 0.3, 0.4])
    assert sel.chosen == 0 and sel.table[0]["level"] == pytest.approx(0.025)
    # last in the order with nothing passed before it: its share, 0.05 x 0.5 / 3 < 0.0156 -> kept
    sel = select_final(initial, [six, same, same, same], train_scores=[0.4, 0.1, 0.2, 0.3])
    assert sel.chosen is None and sel.order == [1, 2, 3, 0]
    # ... unless the one before it passed: its level is carried forward
    five = [True] * 8 + [False] * 24  # p = 1/256
    sel = select_final(initial, [six, same, same, five], train_scores=[0.4, 0.1, 0.2, 0.3])
    assert sel.passed == [3, 0] and sel.chosen == 3  # both passed; the better on dev is chosen
    # lead=1: the fixed-sequence test, stops at the first failure
    sel = select_final(initial, [same, six], train_scores=[0.1, 0.2], lead=1.0)
    assert sel.chosen is None and sel.table[1]["level"] == 0.0


def test_a_candidate_15_points_better_on_100_dev_rows_is_adopted_and_an_equal_one_is_not():
    start = [True] * 50 + [False] * 50  # 50%
    better = [True] * 45 + [False] * 5 + [True] * 20 + [False] * 30  # 65%: 20 fixed, 5 broken
    equal = [True] * 42 + [False] * 8 + [True] * 8 + [False] * 42  # 50%: 8 fixed, 8 broken
    others = [[True] * 48 + [False] * 2 + [True] * 3 + [False] * 47, equal, equal]
    assert select_final(start, [better, *others], train_scores=[0, 1, 2, 3]).chosen == 0
    assert select_final(start, [*others, better], train_scores=[0, 1, 2, 3]).chosen == 3  # last in the order too
    assert select_final(start, [equal, *others], train_scores=[0, 1, 2, 3]).chosen is None


def test_false_adoption_and_power_by_simulation():
    """Synthetic paired outcomes at the default dev size: no better candidate is adopted in at most ~5% of
    runs (the level), and one 15 points better in most runs (better than the flat x4 Bonferroni rule when the
    search ranks it first)."""
    n = DEFAULT_DEV_SIZE
    assert simulate_choice(n=n, gain=0.0, seeds=600) <= 0.05 + 0.02
    power_first = simulate_choice(n=n, gain=0.15, seeds=300)
    assert power_first >= 0.65
    assert power_first > simulate_choice(n=n, gain=0.15, seeds=300, rule="bonferroni")
    assert simulate_choice(n=n, gain=0.15, seeds=300, position="random") >= 0.5


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
