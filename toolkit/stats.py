"""The statistics every report and decision uses, in one place: Wilson intervals, paired counts and exact
McNemar (sign) tests on the same examples, Spearman rank correlation. Pure Python, no dependencies; callers
count and decide, reports only render what these return."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from math import comb


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_one_sided(wins: int, losses: int) -> float:
    """P(X >= wins) for X ~ Binomial(wins + losses, 1/2): the exact one-sided McNemar p-value that a
    prompt which fixed ``wins`` examples and broke ``losses`` of the other's is no better."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2**n


def mcnemar_two_sided(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value (for reports: is there any difference at all)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2 * sum(comb(n, i) for i in range(0, k + 1)) / 2**n)


def paired_counts(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(examples a gets right and b wrong, examples b gets right and a wrong) on the same examples."""
    if len(a) != len(b):
        raise ValueError("A paired test needs the same examples for both prompts.")
    wins = sum(1 for x, y in zip(a, b) if x and not y)
    losses = sum(1 for x, y in zip(a, b) if y and not x)
    return wins, losses


def paired_counts_by_key(a: Mapping, b: Mapping) -> tuple[int, int, int]:
    """(a right and b wrong, b right and a wrong, shared) over the examples both scored: ``a`` and ``b`` map an
    example id to whether it was answered right."""
    shared = [k for k in a if k in b]
    wins = sum(1 for k in shared if a[k] and not b[k])
    losses = sum(1 for k in shared if b[k] and not a[k])
    return wins, losses, len(shared)


def sign_test(values: Sequence[float]) -> tuple[int, int, float]:
    """(positives, negatives, exact two-sided p) of the sign test that positive and negative values are equally
    likely; zeros are left out."""
    pos, neg = sum(1 for x in values if x > 0), sum(1 for x in values if x < 0)
    return pos, neg, mcnemar_two_sided(pos, neg)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with fewer than 3 points or a constant side."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None

    def ranks(v):
        order = sorted(range(n), key=lambda i: v[i])
        r = [0.0] * n
        i = 0
        while i < n:
            j = i
            while j + 1 < n and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(list(xs)), ranks(list(ys))
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / (vx * vy) ** 0.5
