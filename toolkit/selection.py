"""Honest choice of a final prompt: a paired test against the starting prompt on the same examples.

Every optimizer (GReaTer, APE, OPRO) ends the same way: a few of its best prompts by training score are
scored on the dev split, the best of them by dev accuracy is compared with the starting prompt on the *same*
dev examples (exact one-sided McNemar test on the examples where the two disagree), and it replaces the
starting prompt only when it is significantly better after a Bonferroni correction for the number of prompts
that were compared. Otherwise the starting prompt is kept and the reason is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import comb
from typing import Sequence

ALPHA = 0.05


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


@dataclass
class Selection:
    chosen: int | None  # index into the candidates, or None: the starting prompt is kept
    initial_accuracy: float | None
    best_index: int | None
    best_accuracy: float | None
    wins: int = 0
    losses: int = 0
    p_value: float | None = None  # one-sided, before the correction
    compared: int = 0
    alpha: float = ALPHA
    significant: bool = False
    reason: str = ""
    table: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def select_final(
    initial: Sequence[bool] | None,
    candidates: Sequence[Sequence[bool]],
    *,
    train_scores: Sequence[float] | None = None,
    alpha: float = ALPHA,
) -> Selection:
    """Choose among ``candidates`` (per-example correctness on the dev split, same examples as ``initial``).

    The best candidate by dev accuracy (ties: the better training score, given lower-is-better, then the
    earlier one) replaces the starting prompt only if its one-sided McNemar p-value times the number of
    candidates compared is below ``alpha``. With no dev examples nothing can be decided: the starting prompt
    is kept.
    """
    k = len(candidates)
    train_scores = list(train_scores) if train_scores is not None else [0.0] * k
    if initial is None or not len(initial) or k == 0:
        return Selection(
            chosen=None,
            initial_accuracy=None,
            best_index=None,
            best_accuracy=None,
            compared=k,
            alpha=alpha,
            reason="no dev examples to decide on: the starting prompt is kept",
        )
    n = len(initial)
    init_acc = sum(initial) / n
    accs = [sum(c) / n for c in candidates]
    best = min(range(k), key=lambda i: (-accs[i], train_scores[i], i))
    wins, losses = paired_counts(candidates[best], initial)
    p = mcnemar_one_sided(wins, losses)
    corrected = min(1.0, p * k)
    significant = corrected < alpha and wins > losses
    table = [
        {
            "index": i,
            "dev_accuracy": accs[i],
            "train_score": train_scores[i],
            "wins": paired_counts(candidates[i], initial)[0],
            "losses": paired_counts(candidates[i], initial)[1],
        }
        for i in range(k)
    ]
    if significant:
        reason = (
            f"dev {100 * accs[best]:.1f}% vs {100 * init_acc:.1f}% for the starting prompt on the same {n} "
            f"examples ({wins} fixed, {losses} broken; one-sided McNemar p={p:.4f}, x{k} compared "
            f"= {corrected:.4f} < {alpha})"
        )
    else:
        reason = (
            f"no candidate is significantly better than the starting prompt on {n} dev examples (best "
            f"{100 * accs[best]:.1f}% vs {100 * init_acc:.1f}%: {wins} fixed, {losses} broken; one-sided "
            f"McNemar p={p:.4f}, x{k} compared = {corrected:.4f}, needs < {alpha}): the starting prompt is kept"
        )
    return Selection(
        chosen=best if significant else None,
        initial_accuracy=init_acc,
        best_index=best,
        best_accuracy=accs[best],
        wins=wins,
        losses=losses,
        p_value=p,
        compared=k,
        alpha=alpha,
        significant=significant,
        reason=reason,
        table=table,
    )


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
