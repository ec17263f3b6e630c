"""The improved schedule's search: wide candidate scoring, a schedule that never repeats a state, honest
selection. Mixed into :class:`toolkit.engine.greater.GreaterEngine` (which holds the model-side pieces:
proposal, gradient, scoring); see docs/engine.md, "Wide search".

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
from .config import StepRecord


class WideSearch:
    """The improved schedule (a mixin: needs the GreaterEngine's model-side methods)."""

    # ------------------------------------------------------------------ candidates

    def roundtrips(self, prompt: Sequence[int]) -> bool:
        """The prompt's text tokenizes back to the same ids in place: alone, and inside the rendered layout of a
        training example (between the text before it and the end of the turn), which is what a server receiving
        the text sees and what the llama.cpp evaluation scores."""
        prompt = list(prompt)
        text = self.decode(prompt)
        if self.encode_prompt(text) != prompt:
            return False
        if not self.train:
            return True
        item = self.train[0]
        before, after = self.layout.split(item.input)
        return self.tm.encode(before + text + after) == self._split(item.input) + prompt + self.after_ids

    def deployable(self, prompt: Sequence[int], pos: int, cands: Sequence[int]) -> list[int]:
        """The candidate tokens for slot ``pos`` whose prompt round-trips through its text (nanoGCG's
        ``filter_ids``); the current token is kept."""
        if not self.config.roundtrip:
            return list(cands)
        current = prompt[pos] if pos < len(prompt) else None
        keep = []
        for c in cands:
            p = list(prompt)
            p[pos] = c
            if c == current or self.roundtrips(p):
                keep.append(c)
        return keep

    def _auto_width(self) -> int:
        if self.config.width:
            return self.config.width
        if self.config.mode == "direct":
            return 16
        return 12 if self.config.fresh else 4  # with the teacher-forced pre-rank, a wider set is cheap

    def _suffix_scores(self, prompt, pos, tokens, chains=None) -> dict[int, object]:
        """Scores of the single swaps ``tokens`` at ``pos``: on the cached prefix (fast execution with
        ``suffix_kv``) or on each full sequence (naive execution, or ``suffix_kv`` off); the same numbers."""

        n = len(self.train)
        if self.naive or not self.config.suffix_kv:
            chains = chains if chains is not None else [[] for _ in self.train]
            terms = self._item_terms(
                [(self._swap(prompt, pos, t), item, ch) for t in tokens for item, ch in zip(self.train, chains)]
            )
            per_token = [terms[i * n : (i + 1) * n] for i in range(len(tokens))]
        else:
            per_token = self.suffix_terms(prompt, pos, tokens, chains=chains)
        return {tok: self._score_of(rows, self.train) for tok, rows in zip(tokens, per_token)}

    def _score_singles(
        self, prompt: list[int], pos: int, tokens: list[int], current_tok: int | None, bound_score
    ) -> tuple[dict[int, object], dict[int, object]]:
        """(full scores, teacher-forced pre-rank scores) of the prompts with ``tokens`` at ``pos`` (and the
        current token, when given).

        Direct mode with ``suffix_kv``: every one in one pass over each example's cached prefix (exact).
        Reasoning mode with ``fresh``: all of them teacher-forced on the current chains (cheap, approximate),
        then the ``fresh`` best of those get fresh chains and a full score, raced against ``bound_score``.
        Otherwise every one is fully scored by the racing scorer."""
        todo = list(dict.fromkeys(tokens + ([current_tok] if current_tok is not None else [])))
        cfg = self.config
        if cfg.mode == "direct" and cfg.suffix_kv and not self.naive:
            return self._suffix_scores(prompt, pos, todo), {}
        pre = {}
        if cfg.mode == "reasoning" and cfg.fresh and len(tokens) > cfg.fresh:
            chains = self.chains(prompt if current_tok is not None else prompt[:-1])  # grown: the shorter one's
            pre = self._suffix_scores(prompt, pos, todo, chains=chains)
            ranked = sorted((t for t in tokens if t != current_tok), key=lambda t: (pre[t].value, t))
            todo = ranked[: cfg.fresh] + ([current_tok] if current_tok is not None else [])
        prompts = []
        for tok in todo:
            p = list(prompt)
            p[pos] = tok
            prompts.append(p)
        if bound_score is None:
            scores = self.score_prompts(prompts)
        else:
            scores = self.race_prompts(prompts, bound_score.value)
        return dict(zip(todo, scores)), pre

    # ------------------------------------------------------------------ the loop

    def _run_improved(self, state: dict, stop: threading.Event | None = None) -> Iterator[StepRecord]:
        cfg = self.config
        torch = self.torch
        torch.manual_seed(cfg.seed)
        if cfg.search in ("calibration", "demonstrations"):  # no instruction steps: the final choice decides
            return
        # one budget: the final choice's share is set aside first (its dev pass of the start lands in ``state``,
        # the caller's too, so that a run with no step still reuses it)
        t_start = time.perf_counter()
        reserve = self._final_reserve(state)
        if state["step"] == 0 and self._out_of_time(None, t_start, reserve):
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
        state.setdefault("width", self._auto_width())
        state.setdefault("sweep_best", [])
        placeholder = self.tm.encode(" _")[-1]
        state["final_reserve_s"] = reserve
        while state["step"] < cfg.steps:
            if state.get("done") or self._out_of_time(stop, t_start, reserve):
                return
            step = state["step"]
            rng = random.Random(f"{cfg.seed}-{step}")
            before = list(state["prompt_ids"])
            pos = state["pos"]
            timings: dict[str, float] = {}
            if pos == "pair":
                record = self._pair_step(state, before, rng, timings)
            else:
                record = self._single_step(state, before, pos, placeholder, rng, timings, stop)
                if record is None:  # stopped between phases
                    return
            new_prompt = record["prompt_ids"]
            new_score = record.pop("_score")
            # Keep the best distinct prompts by training score among everything scored (for the dev pick).
            self._remember(state, record.pop("_scored"))
            # Where next.
            if new_prompt != before:
                state["visited"], state["sweep_best"] = [], []
            self._next_position(state, record, new_prompt, pos)
            dev_accuracy = None
            if cfg.dev_every > 0 and self.dev and (step + 1) % cfg.dev_every == 0:
                t0 = time.perf_counter()  # progress only: dev scores never steer the search
                dev_accuracy = self.score_prompts([new_prompt], items=self.dev)[0].accuracy
                timings["dev"] = time.perf_counter() - t0
            if cfg.width == 0 and step == 0 and cfg.time_budget_s and record["search"].get("scored"):
                state["width"] = self._width_for_budget(record, timings, len(new_prompt), reserve)
            state.update(prompt_ids=list(new_prompt), step=step + 1)
            if self.balanced:  # what the score counts, beside the plain accuracy users read
                record["search"]["objective"] = "balanced"
                record["search"]["train_balanced_accuracy"] = new_score.objective_accuracy
            record.update(
                step=step,
                prompt_before=self.decode(before),
                prompt_after=self.decode(new_prompt),
                prompt_ids=list(new_prompt),
                train_score=new_score.value,
                train_accuracy=new_score.accuracy,
                train_nll=new_score.fluency_nll,
                dev_accuracy=dev_accuracy,
                timings=timings,
                events=list(self.events),
                state=dict(state),
            )
            self.events.clear()
            yield record

    def _single_step(self, state, before, pos, placeholder, rng, timings, stop):
        cfg = self.config
        prompt = list(before)
        grown = pos >= len(prompt)
        if grown:
            prompt = prompt + [placeholder]
        key = f"{pos}:{','.join(map(str, before))}"
        state["visited"] = state["visited"] + [key]
        t0 = time.perf_counter()
        current_score = None if grown else self.score_prompts([prompt])[0]
        timings["reasoning_and_current"] = time.perf_counter() - t0
        if stop is not None and stop.is_set():
            return None
        t0 = time.perf_counter()
        proposed = self.propose(prompt, pos, rng)
        pool = self.deployable(prompt, pos, proposed)
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
            g = self.gradient(prompt, pos, cand_list)
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
            shorter = self.score_prompts([before])[0]
        bound = shorter if grown else current_score
        scores, pre = self._score_singles(prompt, pos, top + probe, None if grown else current_tok, bound)
        timings["scoring"] = time.perf_counter() - t0
        if not grown and current_tok in scores and not scores[current_tok].raced:
            current_score = scores[current_tok]  # the same pass as the candidates: compared like with like
        bound = shorter if grown else current_score
        ranks = {c: i for i, c in enumerate(order)}
        candidates = []
        for c in top + probe:
            s = scores.get(c)
            row = {
                "token": c,
                "text": self.decode([c]),
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
        self._adapt_width(state, agreement, len(order))
        scored = [(scores[c].value, self._swap(prompt, pos, c)) for c in full]
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
            "chosen_token": self.decode([chosen_tok]) if chosen_tok is not None else "",
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

    @staticmethod
    def _swap(prompt, pos, tok):
        p = list(prompt)
        p[pos] = tok
        return p

    def _pair_step(self, state, before, rng, timings):
        """Two-token changes from the best single swaps of the fruitless sweep (each alone did not help)."""
        cfg = self.config
        t0 = time.perf_counter()
        current = self.score_prompts([before])[0]
        timings["reasoning_and_current"] = time.perf_counter() - t0
        singles = sorted(
            {(p, t): v for p, t, v in state["sweep_best"] if p < len(before)}.items(), key=lambda kv: kv[1]
        )
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
                if self.roundtrips(p):
                    trials.append(((p1, t1), (p2, t2), p))
        t0 = time.perf_counter()
        scores = self.race_prompts([t[2] for t in trials], current.value) if trials else []
        timings["scoring"] = time.perf_counter() - t0
        full = [(t, s) for t, s in zip(trials, scores) if not s.raced]
        better = [(t, s) for t, s in full if s.value < current.value]
        if better:
            (a, b, new_prompt), new_score = min(better, key=lambda ts: ts[1].value)
            chosen = f"{self.decode([a[1]])!r}@{a[0]} + {self.decode([b[1]])!r}@{b[0]}"
        else:
            new_prompt, new_score, chosen = list(before), current, ""
        candidates = [
            {
                "token": [a[1], b[1]],
                "positions": [a[0], b[0]],
                "text": f"{self.decode([a[1]])}|{self.decode([b[1]])}",
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

    def _remember(self, state, scored) -> None:
        top = {tuple(t[1]): t[0] for t in state["top"]}
        for value, ids in scored:
            k = tuple(ids)
            if k not in top or value < top[k]:
                top[k] = value
        state["top"] = [[v, list(k)] for k, v in sorted(top.items(), key=lambda kv: (kv[1], len(kv[0])))][
            : self.config.top_keep
        ]

    def _adapt_width(self, state, agreement, available: int) -> None:
        """Low agreement between the gradient's ranking and the true scores: score wider next step; high:
        narrower (never below the configured width)."""
        if agreement is None:
            return
        base, width = self._auto_width(), state["width"]
        if agreement < 0.2:
            width = min(self.config.width_max, max(width + 1, math.ceil(width * 1.5)))
        elif agreement > 0.5:
            width = max(base, int(width * 0.75))
        state["width"] = width

    def _width_for_budget(self, record, timings, n_tokens: int, reserve: float = 0.0) -> int:
        """Automatic width: about two sweeps of the prompt inside the time budget (less the final choice's
        ``reserve``), from the first step's cost."""
        scored = max(1, record["search"]["scored"])
        per_cand = timings.get("scoring", 0.0) / scored
        fixed = sum(v for k, v in timings.items() if k != "scoring")
        per_step = max(0.0, self.config.time_budget_s - reserve) / max(1, 2 * n_tokens)
        if per_cand <= 0:
            return self._auto_width()
        width = int((per_step - fixed) / per_cand) - self.config.probe
        return max(4, min(self.config.width_max, width))

    def _next_position(self, state, record, new_prompt, pos) -> None:
        """The next unsearched state: the following positions, growth at the end of the prompt, then the
        positions before (a sweep of a changed prompt wraps around), then two-token changes; else stop."""
        cfg = self.config
        visited = set(state["visited"])
        ids = ",".join(map(str, new_prompt))
        n = len(new_prompt)
        start = 0 if pos == "pair" else min(n, pos + 1)
        for p in range(start, n):
            if f"{p}:{ids}" not in visited:
                state["pos"] = p
                return
        if self._may_grow(new_prompt, visited, ids):
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

    def _may_grow(self, prompt, visited, ids) -> bool:
        n = len(prompt)
        if n >= self.config.max_prompt_tokens or f"{n}:{ids}" in visited:
            return False
        return self.config.grow_past_stop or "." not in self.decode([prompt[-1]])
