"""The published GReaTer schedule (docs/engine.md, "reference"): the gradient's top ``n_grad_candidates``, one
position per step, left to right; the best candidate replaces the token even when it is worse; the final prompt
is the best on dev among the top prompts. Kept to reproduce the paper; the default is the improved schedule
(:mod:`.search`)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import cast

from .config import RunResult, StepRecord
from .parts import Parts


def run_reference(parts: Parts, state: dict, stop: threading.Event | None = None) -> Iterator[StepRecord]:
    """The published schedule (see docs/engine.md): the gradient's top ``n_grad_candidates``, one position
    per step, left to right."""
    cfg = parts.config
    parts.forward.torch.manual_seed(cfg.seed)
    scorer, decode = parts.scorer, parts.decode
    state = {
        **state,
        "prompt_ids": list(state["prompt_ids"]),
        "visited": list(state["visited"]),
        "top": [list(t) for t in state["top"]],
    }
    placeholder = parts.encode(" _")[-1]
    t_start = time.perf_counter()
    while state["step"] < cfg.steps:
        if parts.out_of_time(stop, t_start):
            return
        step = state["step"]
        rng = random.Random(f"{cfg.seed}-{step}")
        prompt = state["prompt_ids"]
        pos = state["pos"]
        grown = False
        if pos >= len(prompt):
            prompt = prompt + [placeholder]
            grown = True
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        current_score = scorer.score_prompts([prompt])[0] if not grown else None
        timings["reasoning_and_current"] = time.perf_counter() - t0
        if stop is not None and stop.is_set():
            return
        t0 = time.perf_counter()
        cands = parts.proposer.propose(prompt, pos, rng)
        timings["proposal"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        grad = parts.proposer.gradient(prompt, pos, cands)
        timings["gradient"] = time.perf_counter() - t0
        if stop is not None and stop.is_set():
            return
        ranked = sorted(range(len(cands)), key=lambda i: (float(grad[i]), cands[i]))
        chosen_idx = ranked[: cfg.n_grad_candidates]  # the current token is compared only if ranked here
        trial_prompts = []
        for i in chosen_idx:
            p = list(prompt)
            p[pos] = cands[i]
            trial_prompts.append(p)
        t0 = time.perf_counter()
        scores = scorer.score_prompts(trial_prompts) if trial_prompts else []
        timings["scoring"] = time.perf_counter() - t0

        candidates = [
            {
                "token": cands[i],
                "text": decode([cands[i]]),
                "grad": float(grad[i]),
                "score": s.value,
                "accuracy": s.accuracy,
                "loss": s.loss,
                "nll": s.fluency_nll,
                **({"raced_after": s.seen} if s.raced else {}),
            }
            for i, s in zip(chosen_idx, scores)
        ]
        # Choose.
        options = list(zip(trial_prompts, scores, [c["token"] for c in candidates]))
        new_prompt, new_score = prompt, current_score
        if options:  # the best candidate replaces the token even when it is worse (the reference's rule)
            early = None
            if pos >= state["initial_len"] // 2:
                early = next((o for o in options if "." in decode([o[2]])), None)
            best = early or min(options, key=lambda o: o[1].value)
            new_prompt, new_score = best[0], best[1]
        chosen_tok = new_prompt[pos] if pos < len(new_prompt) else None
        accepted = new_prompt != prompt
        # Position schedule.
        next_pos = pos + 1
        chosen_text = decode([chosen_tok]) if chosen_tok is not None else ""
        if next_pos >= len(new_prompt):
            if "." in chosen_text or len(new_prompt) >= cfg.max_prompt_tokens:
                next_pos = 0
            # else: next step appends a placeholder and optimizes it
        key = f"{next_pos}:{','.join(map(str, new_prompt))}"
        state["visited"] = (state["visited"] + [key])[-200:]
        # a grown prompt has no current score, and a step always has candidates to choose from
        assert new_score is not None, "a step with neither a current score nor a candidate"
        # Top-k bookkeeping (distinct prompts).
        top = [t for t in state["top"] if t[1] != new_prompt] + [[new_score.value, list(new_prompt)]]
        if current_score is not None and all(t[1] != prompt for t in top):
            top.append([current_score.value, list(prompt)])
        top.sort(key=lambda t: t[0])
        state["top"] = top[: cfg.top_keep]
        dev_accuracy = None
        if cfg.dev_every > 0 and parts.dev and (step + 1) % cfg.dev_every == 0:
            t0 = time.perf_counter()  # progress only: dev scores never steer the search
            dev_accuracy = scorer.score_prompts([new_prompt], items=parts.dev)[0].accuracy
            timings["dev"] = time.perf_counter() - t0
        before_text = decode(state["prompt_ids"])
        state.update(prompt_ids=list(new_prompt), pos=next_pos, step=step + 1)
        record = {
            "step": step,
            "position": pos,
            "prompt_before": before_text,
            "prompt_after": decode(new_prompt),
            "prompt_ids": list(new_prompt),
            "chosen_token": chosen_text,
            "accepted": accepted,
            "grown": grown and len(new_prompt) == len(prompt),
            "stuck": False,
            "candidates": candidates,
            "proposed": len(cands),
            "train_score": new_score.value,
            "train_accuracy": new_score.accuracy,
            "dev_accuracy": dev_accuracy,
            "timings": timings,
            "events": list(parts.events),
            "state": dict(state),
        }
        parts.events.clear()
        yield cast(StepRecord, record)


def finish_reference(parts: Parts, state: dict) -> RunResult:
    """The reference schedule's final prompt: the best dev accuracy among the top prompts (the training score
    breaks ties)."""
    scorer, decode = parts.scorer, parts.decode
    top = state["top"] or [[scorer.score_prompts([state["prompt_ids"]])[0].value, state["prompt_ids"]]]
    best_ids, best_dev, table = top[0][1], None, []
    if parts.config.select_on_dev and parts.dev:
        dev_scores = scorer.score_prompts([t[1] for t in top], items=parts.dev)
        for (train_value, ids), ds in zip(top, dev_scores):
            table.append({"prompt": decode(ids), "train_score": train_value, "dev_accuracy": ds.accuracy})
        best_i = min(range(len(top)), key=lambda i: (-dev_scores[i].accuracy, top[i][0]))
        best_ids, best_dev = top[best_i][1], dev_scores[best_i].accuracy
    else:
        table = [{"prompt": decode(ids), "train_score": v, "dev_accuracy": None} for v, ids in top]
    return RunResult(
        prompt=decode(best_ids),
        prompt_ids=list(best_ids),
        train=scorer.score_prompts([best_ids])[0],
        dev_accuracy=best_dev,
        top=table,
        steps_done=state["step"],
    )
