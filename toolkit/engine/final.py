"""The improved schedule's final choice: which prompt version replaces the start (functions over the engine's
:class:`~toolkit.engine.parts.Parts`).

A prompt version is the instruction, optionally demonstrations (training rows shown as earlier chat turns) and,
optionally, a label calibration (:mod:`toolkit.calibration`). At the end of a run the candidates are:

* the best instructions the gradient search scored (``search`` all or instruction);
* the start with the best demonstration sets (``search`` all or demonstrations): sets drawn from the training
  rows *beyond* the scoring rows (so a demonstration is never scored on itself), with every label shown where
  it fits, scored exactly like any candidate (the training objective on the scoring rows, exact
  log-probabilities; the demonstrations are a prefix shared by every example, so fast execution computes their
  KV once per batch and expands it);
* each of those, and the start, with a label calibration fitted on the training rows (``search`` all or
  calibration, label tasks).

They are compared with the start on the same dev rows by the fallback procedure in a pre-declared order
(:func:`toolkit.selection.select_final`): first the start's own label decision (the calibrated start), then the
demonstration sets, then the searched instructions, each part in the order of its training score. The parts come
in that order because of what moves small models (docs/small-models.md: the label decision and the
demonstrations, hardly the instruction wording) and because the searched instructions' training scores are the
most optimistic: they were picked *for* those training rows (on Gemma-3-270M's sentiment task the calibrated
start, 21 fixed and 6 broken on dev, p = 0.003, came 8th of 13 by training error behind overfitted instructions,
and its level there was too small).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..selection import annotate, select_final
from .config import RunResult
from .parts import Parts

# How much the final choice's counted passes overstate its measured time, at least (Bench 10: 1.5-3.7x in 8 runs)
RESERVE_OVERCOUNT = 1.5


@dataclass
class Variant:
    """One candidate prompt version of the final choice."""

    value: float | None  # training score (lower is better); None for the start
    ids: list[int]
    calibration: Any = None  # toolkit.calibration.Calibration or None
    demos: tuple = ()  # ((input, answer), ...)
    order: float = 0.0  # its place in the pre-declared test order (lower first)

    @property
    def part(self) -> int:
        """Which part of the prompt it changes, in test order: 0 the start's label decision, 1 demonstrations,
        2 the instruction."""
        return 2 if self.value is not None and not self.demos else 1 if self.demos else 0

    dev: list[bool] = field(default_factory=list)


# ------------------------------------------------------------------ demonstrations


def _demonstrating(parts: Parts) -> bool:
    cfg = parts.config
    return cfg.search in ("all", "demonstrations") and cfg.demo_max > 0


def demo_sets(parts: Parts, rng: random.Random) -> list[tuple]:
    """Demonstration sets to try, drawn from the pool (training rows beyond the scoring rows): half with
    one example per label (or ``demo_max // 2`` for other tasks), half with up to ``demo_max``; labels
    take turns so every label is shown where the set is big enough; shuffled order. Sets longer than
    ``demo_tokens`` tokens are dropped."""
    cfg = parts.config
    pool = [(item.input, item.answer) for item in parts.pool]
    if not pool:
        return []
    labels = list(parts.spec.labels) if parts.spec.kind == "label" else []
    small = min(cfg.demo_max, len(labels) or max(1, cfg.demo_max // 2))
    sizes = sorted({max(1, small), cfg.demo_max})
    by_label: dict[str, list] = {}
    for row in pool:
        by_label.setdefault(row[1] if labels else "", []).append(row)
    sets: list[tuple] = []
    seen: set[tuple] = set()
    for i in range(cfg.demo_sets * 3):
        if len(sets) >= cfg.demo_sets:
            break
        k = min(sizes[i % len(sizes)], len(pool))
        groups = [list(g) for g in by_label.values()]
        for g in groups:
            rng.shuffle(g)
        rng.shuffle(groups)
        chosen: list[tuple[str, str]] = []
        while len(chosen) < k and any(groups):
            for g in groups:
                if g and len(chosen) < k:
                    chosen.append(g.pop())
        rng.shuffle(chosen)
        key = tuple(chosen)
        if key in seen:
            continue
        seen.add(key)
        if sum(len(parts.encode(a + " " + b)) for a, b in chosen) > cfg.demo_tokens:
            continue
        sets.append(key)
    return sets


def _demo_variants(parts: Parts, initial: list[int]) -> list[Variant]:
    """The start with each demonstration set, scored on the scoring rows; the ``demo_keep`` best."""
    rng = random.Random(f"{parts.config.seed}-demos")
    scored = []
    t0 = time.perf_counter()
    for demos in demo_sets(parts, rng):
        with parts.using_demos(demos):
            value = parts.scorer.score_prompts([initial])[0].value
        scored.append(Variant(value, list(initial), None, demos))
    parts.demo_stats = {"sets": len(scored), "seconds": time.perf_counter() - t0}
    scored.sort(key=lambda v: v.value if v.value is not None else float("inf"))
    return scored[: parts.config.demo_keep]


# ------------------------------------------------------------------ calibration


def _calibrating(parts: Parts) -> bool:
    cfg = parts.config
    return cfg.search in ("all", "calibration") and cfg.calibrate != "none" and parts.spec.kind == "label"


def _with_calibrations(parts: Parts, initial: list[int], cands: list[Variant]) -> list[Variant]:
    """``cands`` with a label calibration (fitted on the training rows only) of each and of the start added,
    all in one pre-declared order: by part (:attr:`Variant.part`), then the balanced training error of each
    decision (lower first; the uncalibrated version first on a tie)."""
    from ..calibration import CONTENT_FREE, argmax, fit
    from ..tasks import is_correct
    from .config import Item

    labels = parts.spec.labels
    cf_items = [Item(text, labels[0]) for text in CONTENT_FREE]
    out: list[Variant] = []
    keys: list[tuple[int, float, int, int]] = []
    for base in [*cands, Variant(None, list(initial))]:
        with parts.using_demos(base.demos):
            train_scores = parts.predictor.label_scores_items(base.ids, parts.train)
            if parts.config.calibrate == "contextual":
                cal = fit("contextual", parts.predictor.label_scores_items(base.ids, cf_items), labels)
            else:
                cal = fit("batch", train_scores, labels)
            dev_scores = parts.predictor.label_scores_items(base.ids, parts.dev)
        plain_err = _balanced_error(parts, [labels[argmax(r)] for r in train_scores])
        cal_err = _balanced_error(parts, [labels[cal.choose(r)] for r in train_scores])
        if base.value is not None or base.demos:  # the plain start is the baseline, not a candidate
            if not base.dev:  # the plain decision from the same scores (the label rule's argmax)
                base.dev = [is_correct(labels[argmax(r)], it.answer, "label") for r, it in zip(dev_scores, parts.dev)]
            out.append(base)
            keys.append((base.part, plain_err, 0, len(keys)))
        calibrated = Variant(base.value, base.ids, cal, base.demos)
        calibrated.dev = [is_correct(labels[cal.choose(r)], it.answer, "label") for r, it in zip(dev_scores, parts.dev)]
        out.append(calibrated)
        keys.append((calibrated.part, cal_err, 1, len(keys)))
    for rank, i in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        out[i].order = float(rank)
    return out


def _balanced_error(parts: Parts, predicted) -> float:
    """Mean error per gold label on the training rows (each label weighs the same)."""
    from ..tasks import is_correct

    per: dict[str, list[bool]] = {}
    for pred, item in zip(predicted, parts.train):
        per.setdefault(item.answer, []).append(is_correct(pred, item.answer, "label"))
    return 1.0 - sum(sum(v) / len(v) for v in per.values()) / max(1, len(per))


# ------------------------------------------------------------------ the budget


def final_reserve(parts: Parts, state: dict) -> float:
    """Seconds of ``time_budget_s`` set aside for the final choice, so that the search and the choice share one
    budget: the start's answers on the dev rows are computed first (the choice needs them anyway; kept in
    ``state``) and timed, and the choice's other passes are counted in units of that pass: each compared
    version on dev (x1.5 with demonstrations, which lengthen every example), the label scores of each base
    on training and dev rows when calibrating, the demonstration sets on the scoring rows, divided by
    ``RESERVE_OVERCOUNT``. 0 without a budget or a dev test.

    The count is pessimistic (the first dev pass includes the warm-up; the calibrated versions reuse their
    bases' scores): in the eight runs of Bench 10 whose budget left no step (docs/benchmarks.md) the final
    choice took 1.5-3.7 times less than counted (21-363 s against 62-604 s). The divisor is the smallest of
    those ratios: with it none of those runs would have overrun by more than a second."""
    cfg = parts.config
    if not cfg.time_budget_s or not (cfg.select_on_dev and parts.dev and state.get("initial_ids")):
        return 0.0
    if "initial_dev" not in state:
        t0 = time.perf_counter()
        state["initial_dev"] = [ok for ok, _ in parts.predictor.predict_items(list(state["initial_ids"]), parts.dev)]
        state["dev_pass_s"] = time.perf_counter() - t0
    unit = float(state["dev_pass_s"])  # one pass over the dev rows
    n_dev, n_train = len(parts.dev), len(parts.train)
    demos = cfg.demo_keep if _demonstrating(parts) and parts.pool else 0
    versions = cfg.dev_top + 1.5 * demos
    if _calibrating(parts):  # every base's label scores on training and dev rows (the start's too)
        passes = (versions + 1) * (1 + n_train / n_dev)
    else:
        passes = versions
    if demos:
        passes += 1.5 * cfg.demo_sets * n_train / n_dev
    passes += n_train / n_dev  # the adopted version's training score
    return unit * passes / RESERVE_OVERCOUNT


# ------------------------------------------------------------------ the choice


def _dev_correct(parts: Parts, v: Variant) -> list[bool]:
    extra = {"calibration": v.calibration} if v.calibration is not None else {}
    with parts.using_demos(v.demos):
        return [ok for ok, _ in parts.predictor.predict_items(v.ids, parts.dev, **extra)]


def finish_improved(parts: Parts, state: dict) -> RunResult:
    """Honest selection: the candidates above compared with the starting prompt on the same dev examples;
    the starting prompt stays unless one is significantly better (see :mod:`toolkit.selection`)."""
    cfg = parts.config
    initial = list(state.get("initial_ids") or [])
    top = [t for t in state["top"] if list(t[1]) != initial] if initial else list(state["top"])
    if not top and not initial:
        top = [[parts.scorer.score_prompts([state["prompt_ids"]])[0].value, state["prompt_ids"]]]
    cands = [Variant(value, list(ids)) for value, ids in top[: cfg.dev_top]]
    table, selection, best = [], None, None
    parts.demo_stats = {}
    if cfg.select_on_dev and parts.dev and initial:
        init_ok = state.get("initial_dev") or [ok for ok, _ in parts.predictor.predict_items(initial, parts.dev)]
        if _demonstrating(parts):
            cands += _demo_variants(parts, initial)
        calibrating = _calibrating(parts)
        for v in cands:
            if not calibrating:  # calibrating scores every label on dev once and reads both decisions
                v.dev = _dev_correct(parts, v)
        order = sorted(range(len(cands)), key=lambda i: (cands[i].part, cands[i].value or 0.0, i))
        for rank, i in enumerate(order):
            cands[i].order = float(rank)
        if calibrating:
            cands = _with_calibrations(parts, initial, cands)
        selection = select_final(
            init_ok, [v.dev for v in cands], train_scores=[v.order for v in cands], alpha=cfg.alpha
        )
        for v in cands:
            table.append(
                {
                    "prompt": parts.decode(v.ids),
                    "train_score": v.value,
                    "order_score": v.order,
                    "dev_accuracy": sum(v.dev) / len(v.dev),
                    "calibration": v.calibration.to_dict() if v.calibration is not None else None,
                    "demos": [list(d) for d in v.demos] or None,
                }
            )
        table.append(
            {
                "prompt": parts.decode(initial),
                "train_score": None,
                "dev_accuracy": selection.initial_accuracy,
                "initial": True,
            }
        )
        annotate(table, selection)
        best = cands[selection.chosen] if selection.chosen is not None else None
        best_dev = selection.best_accuracy if best is not None else selection.initial_accuracy
    else:
        best = cands[0] if cands else None
        best_dev = None
        table = [{"prompt": parts.decode(v.ids), "train_score": v.value, "dev_accuracy": None} for v in cands]
    best_ids = best.ids if best is not None else initial
    demos = best.demos if best is not None else ()
    with parts.using_demos(demos):
        train = parts.scorer.score_prompts([best_ids])[0]
    result = RunResult(
        prompt=parts.decode(best_ids),
        prompt_ids=list(best_ids),
        train=train,
        dev_accuracy=best_dev,
        top=table,
        steps_done=state["step"],
    )
    result.selection = selection.to_dict() if selection is not None else None
    if result.selection is not None and parts.demo_stats:
        result.selection["demo_sets"] = parts.demo_stats
    result.stop_reason = state.get("done")
    result.calibration = best.calibration.to_dict() if best is not None and best.calibration is not None else None
    result.demos = [list(d) for d in demos] or None
    return result
