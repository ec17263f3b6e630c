"""The improved schedule's search: wide candidate scoring, a schedule that never repeats a state, honest
selection. Functions over the engine's :class:`~toolkit.engine.parts.Parts` (proposal, gradient, scoring); see
docs/engine.md, "Wide search".

One step at position ``pos`` of the prompt:

1. the model proposes a pool of tokens for the slot (its own next-token distribution, intersected across
   examples, grown to ``pool`` tokens); candidates whose prompt text does not tokenize back to the same ids are
   dropped (a server given the text must see what was scored);
2. the gradient through the model (and the reasoning chain) ranks the pool; ``rank="random"`` replaces it by a
   seeded random order (the ablation);
3. the top ``width`` by rank and a random ``probe`` of the rest are scored in full on the training examples
   (direct mode: on each example's KV cache of the unchanged prefix, all candidates in one batch; reasoning
   mode: fresh chains, raced against the current prompt);
4. the Spearman agreement between the rank and the true scores of everything scored is stored; when it is low
   the next step scores wider, when it is high narrower (never below the configured width);
5. the best candidate replaces the current token only if its score is strictly better.

The schedule: each (position, prompt) is searched once. The next position is the next one not yet searched
for the current prompt; after the end of the prompt it may grow by one token (the longer prompt must score
better). When every position of the current prompt was searched without a change, it tries two-token changes
built from the best single swaps of that sweep; if none helps the run stops early with its reason.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator, Sequence

from ..stats import spearman
from .config import Score, StepRecord
from .final import final_reserve
from .parts import Parts

# ------------------------------------------------------------------ candidates


def deployable(parts: Parts, prompt: Sequence[int], pos: int, cands: Sequence[int]) -> list[int]:
    """The candidate tokens for slot ``pos`` whose prompt round-trips through its text (nanoGCG's
    ``filter_ids``); the current token is kept."""
    if not parts.config.roundtrip:
        return list(cands)
    current = prompt[pos] if pos < len(prompt) else None
    keep = []
    for c in cands:
        p = list(prompt)
        p[pos] = c
        if c == current or parts.text.roundtrips(p):
            keep.append(c)
    return keep


def auto_width(parts: Parts) -> int:
    if parts.config.width:
        return parts.config.width
    if parts.config.mode == "direct":
        return 16
    return 12 if parts.config.fresh else 4  # with the teacher-forced pre-rank, a wider set is cheap


def _suffix_scores(parts: Parts, prompt, pos, tokens, chains=None) -> dict[int, Score]:
    """Scores of the single swaps ``tokens`` at ``pos``: on the cached prefix (fast execution with
    ``suffix_kv``) or on each full sequence (naive execution, or ``suffix_kv`` off); the same numbers."""

    n = len(parts.train)
    if parts.forward.naive or not parts.config.suffix_kv:
        chains = chains if chains is not None else [[] for _ in parts.train]
        terms = parts.scorer.item_terms(
            [(swap(prompt, pos, t), item, ch) for t in tokens for item, ch in zip(parts.train, chains)]
        )
        per_token = [terms[i * n : (i + 1) * n] for i in range(len(tokens))]
    else:
        per_token = parts.scorer.suffix_terms(prompt, pos, tokens, chains=chains)
    return {tok: parts.scorer.score_of(rows, parts.train) for tok, rows in zip(tokens, per_token)}


def _score_singles(
    parts: Parts, prompt: list[int], pos: int, tokens: list[int], current_tok: int | None, bound_score
) -> tuple[dict[int, Score], dict[int, Score]]:
    """(full scores, teacher-forced pre-rank scores) of the prompts with ``tokens`` at ``pos`` (and the
    current token, when given).

    Direct mode with ``suffix_kv``: every one in one pass over each example's cached prefix (exact).
    Reasoning mode with ``fresh``: all of them teacher-forced on the current chains (cheap, approximate),
    then the ``fresh`` best of those get fresh chains and a full score, raced against ``bound_score``.
    Otherwise every one is fully scored by the racing scorer."""
    todo = list(dict.fromkeys(tokens + ([current_tok] if current_tok is not None else [])))
    cfg = parts.config
    if cfg.mode == "direct" and cfg.suffix_kv and not parts.forward.naive:
        return _suffix_scores(parts, prompt, pos, todo), {}
    pre = {}
    if cfg.mode == "reasoning" and cfg.fresh and len(tokens) > cfg.fresh:
        chains = parts.decoder.chains(prompt if current_tok is not None else prompt[:-1])  # grown: the shorter one's
        pre = _suffix_scores(parts, prompt, pos, todo, chains=chains)
        ranked = sorted((t for t in tokens if t != current_tok), key=lambda t: (pre[t].value, t))
        todo = ranked[: cfg.fresh] + ([current_tok] if current_tok is not None else [])
    prompts = []
    for tok in todo:
        p = list(prompt)
        p[pos] = tok
        prompts.append(p)
    if bound_score is None:
        scores = parts.scorer.score_prompts(prompts)
    else:
        scores = parts.scorer.race_prompts(prompts, bound_score.value)
    return dict(zip(todo, scores)), pre


# ------------------------------------------------------------------ the loop


def run_improved(parts: Parts, state: dict, stop: threading.Event | None = None) -> Iterator[StepRecord]:
    cfg = parts.config
    parts.forward.torch.manual_seed(cfg.seed)
    if cfg.search in ("calibration", "demonstrations"):  # no instruction steps: the final choice decides
        return
    # one budget: the final choice's share is set aside first (its dev pass of the start lands in ``state``,
    # the caller's too, so that a run with no step still reuses it)
    t_start = time.perf_counter()
    reserve = final_reserve(parts, state)
    if state["step"] == 0 and parts.out_of_time(None, t_start, reserve):
        state["done"] = (
            f"the budget ({cfg.time_budget_s:.0f} s) leaves no time for instruction steps: the final choice alone "
            f"needs about {reserve:.0f} s"
        )
        return
    state = {
        **state,
        "prompt_ids": list(state["prompt_ids"]),
        "visited": list(state.get("visited", [])),
        "top": [list(t) for t in state.get("top", [])],
    }
    state.setdefault(
        "width",
        auto_width(
            parts,
        ),
    )
    state.setdefault("sweep_best", [])
    placeholder = parts.encode(" _")[-1]
    state["final_reserve_s"] = reserve
    while state["step"] < cfg.steps:
        if state.get("done") or parts.out_of_time(stop, t_start, reserve):
            return
        step = state["step"]
        rng = random.Random(f"{cfg.seed}-{step}")
        before = list(state["prompt_ids"])
        pos = state["pos"]
        timings: dict[str, float] = {}
        if pos == "pair":
            record = _pair_step(parts, state, before, rng, timings)
        else:
            record = _single_step(parts, state, before, pos, placeholder, rng, timings, stop)
            if record is None:  # stopped between phases
                return
        new_prompt = record["prompt_ids"]
        new_score = record.pop("_score")
        # Keep the best distinct prompts by training score among everything scored (for the dev pick).
        _remember(parts, state, record.pop("_scored"))
        # Where next.
        if new_prompt != before:
            state["visited"], state["sweep_best"] = [], []
        _next_position(parts, state, record, new_prompt, pos)
        dev_accuracy = None
        if cfg.dev_every > 0 and parts.dev and (step + 1) % cfg.dev_every == 0:
            t0 = time.perf_counter()  # progress only: dev scores never steer the search
            dev_accuracy = parts.scorer.score_prompts([new_prompt], items=parts.dev)[0].accuracy
            timings["dev"] = time.perf_counter() - t0
        if cfg.width == 0 and step == 0 and cfg.time_budget_s and record["search"].get("scored"):
            state["width"] = _width_for_budget(parts, record, timings, len(new_prompt), reserve)
        state.update(prompt_ids=list(new_prompt), step=step + 1)
        if parts.scorer.balanced:  # what the score counts, beside the plain accuracy users read
            record["search"]["objective"] = "balanced"
            record["search"]["train_balanced_accuracy"] = new_score.objective_accuracy
        record.update(
            step=step,
            prompt_before=parts.decode(before),
            prompt_after=parts.decode(new_prompt),
            prompt_ids=list(new_prompt),
            train_score=new_score.value,
            train_accuracy=new_score.accuracy,
            train_nll=new_score.fluency_nll,
            dev_accuracy=dev_accuracy,
            timings=timings,
            events=list(parts.events),
            state=dict(state),
        )
        parts.events.clear()
        yield record


def _single_step(parts: Parts, state, before, pos, placeholder, rng, timings, stop):
    cfg = parts.config
    prompt = list(before)
    grown = pos >= len(prompt)
    if grown:
        prompt = prompt + [placeholder]
    key = f"{pos}:{','.join(map(str, before))}"
    state["visited"] = state["visited"] + [key]
    t0 = time.perf_counter()
    current_score = None if grown else parts.scorer.score_prompts([prompt])[0]
    timings["reasoning_and_current"] = time.perf_counter() - t0
    if stop is not None and stop.is_set():
        return None
    t0 = time.perf_counter()
    proposed = parts.proposer.propose(prompt, pos, rng)
    pool = deployable(parts, prompt, pos, proposed)
    timings["proposal"] = time.perf_counter() - t0
    current_tok = prompt[pos]
    others = [c for c in pool if c != current_tok]
    t0 = time.perf_counter()
    if cfg.rank == "random" or len(others) <= 1:
        grad = None
        order = list(others)
        random.Random(f"{cfg.seed}-{state['step']}-rank").shuffle(order)
    else:
        cand_list = pool if current_tok in pool else pool + [current_tok]
        g = parts.proposer.gradient(prompt, pos, cand_list)
        grad = {c: float(g[i]) for i, c in enumerate(cand_list)}
        order = sorted(others, key=lambda c: (grad[c], c))
    timings["gradient"] = time.perf_counter() - t0
    if stop is not None and stop.is_set():
        return None
    width = min(state["width"], len(order))
    top = order[:width]
    rest = order[width:]
    probe = rng.sample(rest, min(cfg.probe, len(rest))) if rest else []
    t0 = time.perf_counter()
    shorter = None
    if grown:  # a grown prompt must beat the shorter one (which wins ties)
        shorter = parts.scorer.score_prompts([before])[0]
    bound = shorter if grown else current_score
    scores, pre = _score_singles(parts, prompt, pos, top + probe, None if grown else current_tok, bound)
    timings["scoring"] = time.perf_counter() - t0
    if not grown and current_tok in scores and not scores[current_tok].raced:
        current_score = scores[current_tok]  # the same pass as the candidates: compared like with like
    bound = shorter if grown else current_score
    assert bound is not None  # a grown prompt has the shorter one's score, any other its own
    ranks = {c: i for i, c in enumerate(order)}
    candidates = []
    for c in top + probe:
        s = scores.get(c)
        row = {
            "token": c,
            "text": parts.decode([c]),
            "grad": None if grad is None else grad[c],
            "rank": ranks[c],
            "probe": c in probe,
        }
        if c in pre:  # reasoning mode: the teacher-forced pre-rank score (approximate)
            row["prerank_score"] = pre[c].value
        if s is not None:
            row.update(
                score=s.value,
                accuracy=s.accuracy,
                loss=s.loss,
                nll=s.fluency_nll,
                **({"raced_after": s.seen} if s.raced else {}),
            )
        candidates.append(row)
    full = [c for c in top + probe if c in scores and not scores[c].raced]
    # The gradient's worth: its ranking against the true scores (reasoning mode with a pre-rank: against the
    # teacher-forced scores of the whole scored set, since only a few get fresh chains).
    judged = [c for c in top + probe if c in pre] if pre else full
    truth = pre if pre else scores
    agreement = spearman([ranks[c] for c in judged], [truth[c].value for c in judged]) if grad is not None else None
    better = [c for c in full if scores[c].value < bound.value]
    best = min(better, key=lambda c: (scores[c].value, ranks[c])) if better else None
    if best is not None:
        new_prompt = list(prompt)
        new_prompt[pos] = best
        new_score = scores[best]
    else:
        new_prompt, new_score = list(before), bound
    # The best single swap at this position, for the two-token step after a fruitless sweep.
    if not grown and full:
        alt = min(full, key=lambda c: (scores[c].value, ranks[c]))
        state["sweep_best"] = state["sweep_best"] + [[pos, alt, scores[alt].value]]
    _adapt_width(parts, state, agreement, len(order))
    scored = [(scores[c].value, swap(prompt, pos, c)) for c in full]
    if current_score is not None:
        scored.append((current_score.value, list(prompt)))
    if shorter is not None:
        scored.append((shorter.value, list(before)))
    chosen_tok = new_prompt[pos] if pos < len(new_prompt) else None
    return {
        "position": pos,
        "kind": "grow" if grown else "single",
        "accepted": new_prompt != before,
        "prompt_ids": new_prompt,
        "grown": grown and len(new_prompt) > len(before),
        "stuck": False,
        "chosen_token": parts.decode([chosen_tok]) if chosen_tok is not None else "",
        "candidates": candidates,
        "proposed": len(proposed),
        "search": {
            "kind": "grow" if grown else "single",
            "pool": len(pool),
            "dropped_roundtrip": len(proposed) - len(pool),
            "width": width,
            "probe": len(probe),
            "scored": len(top) + len(probe),
            "fully_scored": len(full),
            "better": len(better),
            "preranked": len(pre),
            "agreement": agreement,
            "rank": cfg.rank,
            "bound": bound.value,
        },
        "_score": new_score,
        "_scored": scored,
    }


def swap(prompt, pos, tok):
    p = list(prompt)
    p[pos] = tok
    return p


def _pair_step(parts: Parts, state, before, rng, timings):
    """Two-token changes from the best single swaps of the fruitless sweep (each alone did not help)."""
    cfg = parts.config
    t0 = time.perf_counter()
    current = parts.scorer.score_prompts([before])[0]
    timings["reasoning_and_current"] = time.perf_counter() - t0
    singles = sorted({(p, t): v for p, t, v in state["sweep_best"] if p < len(before)}.items(), key=lambda kv: kv[1])
    by_pos: dict[int, int] = {}
    for (p, t), _ in singles:
        by_pos.setdefault(p, t)
    best_positions = list(by_pos.items())[: cfg.pair_swaps]
    trials = []
    for i in range(len(best_positions)):
        for j in range(i + 1, len(best_positions)):
            (p1, t1), (p2, t2) = best_positions[i], best_positions[j]
            p = list(before)
            p[p1], p[p2] = t1, t2
            if parts.text.roundtrips(p):
                trials.append(((p1, t1), (p2, t2), p))
    t0 = time.perf_counter()
    scores = parts.scorer.race_prompts([t[2] for t in trials], current.value) if trials else []
    timings["scoring"] = time.perf_counter() - t0
    full = [(t, s) for t, s in zip(trials, scores) if not s.raced]
    better = [(t, s) for t, s in full if s.value < current.value]
    if better:
        (a, b, new_prompt), new_score = min(better, key=lambda ts: ts[1].value)
        chosen = f"{parts.decode([a[1]])!r}@{a[0]} + {parts.decode([b[1]])!r}@{b[0]}"
    else:
        new_prompt, new_score, chosen = list(before), current, ""
    candidates = [
        {
            "token": [a[1], b[1]],
            "positions": [a[0], b[0]],
            "text": f"{parts.decode([a[1]])}|{parts.decode([b[1]])}",
            "grad": None,
            "rank": None,
            "probe": False,
            "score": s.value,
            "accuracy": s.accuracy,
            "loss": s.loss,
            "nll": s.fluency_nll,
            **({"raced_after": s.seen} if s.raced else {}),
        }
        for (a, b, _), s in zip(trials, scores)
    ]
    state["visited"] = state["visited"] + [f"pair:{','.join(map(str, before))}"]
    return {
        "position": -1,
        "kind": "pair",
        "accepted": new_prompt != before,
        "prompt_ids": new_prompt,
        "grown": False,
        "stuck": False,
        "chosen_token": chosen,
        "candidates": candidates,
        "proposed": len(trials),
        "search": {
            "kind": "pair",
            "pool": len(trials),
            "dropped_roundtrip": 0,
            "width": len(trials),
            "probe": 0,
            "scored": len(trials),
            "fully_scored": len(full),
            "better": len(better),
            "agreement": None,
            "rank": None,
            "bound": current.value,
        },
        "_score": new_score,
        "_scored": [(s.value, t[2]) for t, s in full] + [(current.value, list(before))],
    }


def _remember(parts: Parts, state, scored) -> None:
    top = {tuple(t[1]): t[0] for t in state["top"]}
    for value, ids in scored:
        k = tuple(ids)
        if k not in top or value < top[k]:
            top[k] = value
    state["top"] = [[v, list(k)] for k, v in sorted(top.items(), key=lambda kv: (kv[1], len(kv[0])))][
        : parts.config.top_keep
    ]


def _adapt_width(parts: Parts, state, agreement, available: int) -> None:
    """Low agreement between the gradient's ranking and the true scores: score wider next step; high:
    narrower (never below the configured width)."""
    if agreement is None:
        return
    base, width = (
        auto_width(
            parts,
        ),
        state["width"],
    )
    if agreement < 0.2:
        width = min(parts.config.width_max, max(width + 1, math.ceil(width * 1.5)))
    elif agreement > 0.5:
        width = max(base, int(width * 0.75))
    state["width"] = width


def _width_for_budget(parts: Parts, record, timings, n_tokens: int, reserve: float = 0.0) -> int:
    """Automatic width: about two sweeps of the prompt inside the time budget (less the final choice's
    ``reserve``), from the first step's cost."""
    scored = max(1, record["search"]["scored"])
    per_cand = timings.get("scoring", 0.0) / scored
    fixed = sum(v for k, v in timings.items() if k != "scoring")
    budget = parts.config.time_budget_s or 0.0  # (called only with a budget)
    per_step = max(0.0, budget - reserve) / max(1, 2 * n_tokens)
    if per_cand <= 0:
        return auto_width(
            parts,
        )
    width = int((per_step - fixed) / per_cand) - parts.config.probe
    return max(4, min(parts.config.width_max, width))


def _next_position(parts: Parts, state, record, new_prompt, pos) -> None:
    """The next unsearched state: the following positions, growth at the end of the prompt, then the
    positions before (a sweep of a changed prompt wraps around), then two-token changes; else stop."""
    cfg = parts.config
    visited = set(state["visited"])
    ids = ",".join(map(str, new_prompt))
    n = len(new_prompt)
    start = 0 if pos == "pair" else min(n, pos + 1)
    for p in range(start, n):
        if f"{p}:{ids}" not in visited:
            state["pos"] = p
            return
    if _may_grow(parts, new_prompt, visited, ids):
        state["pos"] = n
        return
    for p in range(0, start):
        if f"{p}:{ids}" not in visited:
            state["pos"] = p
            return
    if cfg.pair_swaps >= 2 and f"pair:{ids}" not in visited and len({p for p, _, _ in state["sweep_best"]}) >= 2:
        state["pos"] = "pair"
        return
    state["pos"] = 0
    state["done"] = (
        f"converged: no single-token change at any of the {n} positions"
        + (", no two-token change of the best single swaps" if cfg.pair_swaps >= 2 else "")
        + " and no added token improves the training score"
    )
    record["search"]["stop_reason"] = state["done"]


def _may_grow(parts: Parts, prompt, visited, ids) -> bool:
    n = len(prompt)
    if n >= parts.config.max_prompt_tokens or f"{n}:{ids}" in visited:
        return False
    return parts.config.grow_past_stop or "." not in parts.decode([prompt[-1]])
