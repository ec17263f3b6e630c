"""Honest choice of a final prompt: a paired test against the starting prompt on the same examples.

Every optimizer (GReaTer, APE, OPRO) ends the same way: a few of its best prompts by training score are
scored on the dev split and compared with the starting prompt on the *same* dev examples (exact one-sided
McNemar test on the examples where the two disagree). The error budget is spent in a pre-declared order, the
order of the candidates' training scores (the fallback procedure, :func:`select_final`): the best on training
is tested at half the level, each later one at its share of the other half plus the whole level of the one
before it when that one passed. Every candidate that passes is significantly better than the starting prompt
with a family-wise error rate of at most ``alpha``; the one with the best dev accuracy among them is chosen.
Otherwise the starting prompt is kept and the reason is given.

Why not a flat Bonferroni correction (x the number compared, as before 2026-12-06): on 32 dev rows with four
candidates it needed 7 fixed and 0 broken, and threw away a prompt that was 16 points better on held-out test.
The best-on-training candidate is the one most likely to be better; it now gets half the level, and a good
candidate later in the order keeps a fair chance.
``benchmarks/selection_sim.py`` measures both rules' false-adoption rate and power (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .stats import mcnemar_one_sided, paired_counts

ALPHA = 0.05


# Dev examples the final choice uses by default: all dev rows up to this many (see docs/benchmarks.md,
# "The final choice": with 100 rows a prompt 15 points better than the start is adopted in most runs, and one
# no better in at most 5%).
DEFAULT_DEV_SIZE = 100


@dataclass
class Selection:
    chosen: int | None  # index into the candidates, or None: the starting prompt is kept
    initial_accuracy: float | None
    best_index: int | None
    best_accuracy: float | None
    wins: int = 0
    losses: int = 0
    p_value: float | None = None  # one-sided, of the chosen candidate (or of the first that failed)
    compared: int = 0
    alpha: float = ALPHA
    significant: bool = False
    reason: str = ""
    table: list[dict] = field(default_factory=list)
    procedure: str = "fallback"  # the candidates tested in training-score order (see select_final)
    order: list[int] = field(default_factory=list)  # the pre-declared order of the test (indices)
    passed: list[int] = field(default_factory=list)  # candidates significantly better than the start

    def to_dict(self) -> dict:
        return asdict(self)


def test_order(train_scores: Sequence[float]) -> list[int]:
    """The pre-declared order of the final test: best training score first (lower is better), earlier first."""
    return sorted(range(len(train_scores)), key=lambda i: (train_scores[i], i))


# The share of the error level the first candidate in the training order gets (the rest share the remainder
# equally); see :func:`fallback_levels` and docs/benchmarks.md, "The final choice".
LEAD = 0.5


def fallback_levels(k: int, lead: float = LEAD) -> list[float]:
    """Each ordered candidate's own share of ``alpha`` in the fallback procedure: ``lead`` for the first, the
    rest equally for the others (all of it to the first when it is the only one)."""
    if k <= 0:
        return []
    if k == 1:
        return [1.0]
    return [lead] + [(1.0 - lead) / (k - 1)] * (k - 1)


def select_final(
    initial: Sequence[bool] | None,
    candidates: Sequence[Sequence[bool]],
    *,
    train_scores: Sequence[float] | None = None,
    alpha: float = ALPHA,
    lead: float = LEAD,
) -> Selection:
    """Choose among ``candidates`` (per-example correctness on the dev split, same examples as ``initial``).

    The fallback procedure (Wiens 2003), in the order of ``train_scores`` (lower is better; fixed before the
    dev split is seen): the i-th candidate is tested (one-sided exact McNemar against the starting prompt) at
    its own share of ``alpha`` (:func:`fallback_levels`) plus the whole level of the candidate before it when
    that one passed. The family-wise error rate is at most ``alpha``: with no candidate truly better, the
    starting prompt is replaced in at most 5% of runs. ``lead=1`` is the fixed-sequence test (all to the best
    on training); equal shares are Bonferroni with the level carried forward. Among the candidates that passed,
    the best by dev accuracy (ties: earlier in the order) replaces the starting prompt. With no dev examples
    nothing can be decided: the starting prompt is kept.
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
    pairs = [paired_counts(c, initial) for c in candidates]
    pvals = [mcnemar_one_sided(w, lo) for w, lo in pairs]
    order = test_order(train_scores)
    passed: list[int] = []
    levels: dict[int, float] = {}
    carried = 0.0
    for i, share in zip(order, fallback_levels(k, lead)):
        levels[i] = share * alpha + carried
        ok = pvals[i] < levels[i] and pairs[i][0] > pairs[i][1]
        if ok:
            passed.append(i)
        carried = levels[i] if ok else 0.0
    table = [
        {
            "index": i,
            "dev_accuracy": accs[i],
            "train_score": train_scores[i],
            "wins": pairs[i][0],
            "losses": pairs[i][1],
            "p_value": pvals[i],
            "rank": order.index(i) + 1,
            "level": levels[i],
            "passed": i in passed,
        }
        for i in range(k)
    ]
    if passed:
        best = min(passed, key=lambda i: (-accs[i], order.index(i)))
    else:  # the one that came closest: the lowest p-value relative to its level
        best = min(range(k), key=lambda i: (pvals[i] / levels[i] if levels[i] else float("inf"), order.index(i)))
    wins, losses = pairs[best]
    head = (
        f"dev {100 * accs[best]:.1f}% vs {100 * init_acc:.1f}% for the starting prompt on the same {n} examples "
        f"({wins} fixed, {losses} broken; one-sided McNemar p={pvals[best]:.4f}"
    )
    if passed:
        reason = (
            f"{head} < {levels[best]:.4f}, its level as number {order.index(best) + 1} of {k} in training-score "
            f"order; {len(passed)} of {k} passed)"
        )
    else:
        reason = (
            f"no candidate is significantly better than the starting prompt: the closest, {head}, needed < "
            f"{levels[best]:.4f} as number {order.index(best) + 1} of {k} in training-score order): the starting "
            "prompt is kept"
        )
    return Selection(
        chosen=best if passed else None,
        initial_accuracy=init_acc,
        best_index=best,
        best_accuracy=accs[best],
        wins=wins,
        losses=losses,
        p_value=pvals[best],
        compared=k,
        alpha=alpha,
        significant=bool(passed),
        reason=reason,
        table=table,
        order=order,
        passed=passed,
    )


def annotate(table: list[dict], selection: Selection | None) -> list[dict]:
    """The final choice's table (one row per candidate, in the candidates' order, then the starting prompt's
    row) with each candidate's paired test: fixed, broken, p-value, its level, its place in the order, passed."""
    if selection is None:
        return table
    for row in selection.table:
        i = row["index"]
        if i < len(table):
            table[i].update({k: row[k] for k in ("wins", "losses", "p_value", "level", "rank", "passed")})
            table[i]["chosen"] = i == selection.chosen
    return table


def bonferroni_choice(
    initial: Sequence[bool], candidates: Sequence[Sequence[bool]], alpha: float = ALPHA
) -> int | None:
    """The rule before 2026-12-06, kept for comparison: the best candidate by dev accuracy, adopted when its
    one-sided p-value times the number compared is below ``alpha``."""
    k = len(candidates)
    if not k or not len(initial):
        return None
    best = max(range(k), key=lambda i: (sum(candidates[i]), -i))
    wins, losses = paired_counts(candidates[best], initial)
    return best if wins > losses and mcnemar_one_sided(wins, losses) * k < alpha else None


def simulate_choice(
    *,
    n: int,
    k: int = 4,
    gain: float = 0.0,
    discord: float = 0.3,
    position: str = "first",
    rule: str = "fallback",
    lead: float = LEAD,
    seeds: int = 2000,
    alpha: float = ALPHA,
    p0: float = 0.4,
) -> float:
    """The share of ``seeds`` synthetic final choices that adopt a candidate (the false-adoption rate when
    ``gain`` is 0, the power when one candidate is ``gain`` better).

    Each of the ``k`` candidates disagrees with the starting prompt on a share ``discord`` of the ``n`` dev rows
    (paired outcomes); a candidate no better fixes and breaks alike, the better one fixes ``(discord + gain) / 2``
    and breaks ``(discord - gain) / 2``. The better candidate sits first in the training order (``position``
    "first": the search ranked it best) or at a random place ("random"). ``rule``: "fallback"
    (:func:`select_final` with ``lead``; ``lead=1`` is the fixed-sequence test) or "bonferroni"
    (:func:`bonferroni_choice`)."""
    import random

    if not 0 <= gain <= discord <= 1:
        raise ValueError("Need 0 <= gain <= discord <= 1.")
    rng = random.Random(0)
    adopted = 0
    for _ in range(seeds):
        initial = [rng.random() < p0 for _ in range(n)]
        better_at = 0 if position == "first" else rng.randrange(k)
        cands = []
        for c in range(k):
            g = gain if c == better_at else 0.0
            fix, brk = (discord + g) / 2, (discord - g) / 2
            row = []
            for ok in initial:
                u = rng.random()
                # disagreement: a fixed row where the start is wrong, a broken one where it is right, in
                # proportion, so the discordant counts have the shares above whatever p0 is
                if ok:
                    row.append(not (u < brk / p0) if p0 > 0 else ok)
                else:
                    row.append(u < fix / (1 - p0) if p0 < 1 else ok)
            cands.append(row)
        if rule == "bonferroni":
            chosen = bonferroni_choice(initial, cands, alpha)
        else:
            chosen = select_final(initial, cands, train_scores=list(range(k)), alpha=alpha, lead=lead).chosen
        adopted += chosen is not None
    return adopted / seeds
