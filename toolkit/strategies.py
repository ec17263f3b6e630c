"""Inference-time strategies around a prompt, measured like any evaluation (issue 16).

**Second attempt** (the prompting form of SCoRe, "Training Language Models to Self-Correct via Reinforcement
Learning"): the model answers (the first attempt is the plain evaluation of the prompt, cached and stored as
its own evaluation); then it sees the question, its own first answer and a correction instruction, and answers
again. The report gives first- and second-attempt accuracy with 95% intervals, the two flip counts SCoRe
reports (wrong -> right, right -> wrong), an exact two-sided McNemar test of the two attempts on the same
examples, and every model call counted and timed.

The correction instruction is an ordinary prompt of the library (kept there, tagged ``correction``), so it can
be compared, edited and versioned like any other.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from .evaluate import EvalReport, EvalSettings, answer_after, predict
from .evaluation import evaluate_prompt
from .layout import INPUT_SEPARATOR, REASONING_SEPARATOR, ChatLayout
from .stats import mcnemar_two_sided, paired_counts

# SCoRe's own self-correction instruction (its Appendix), worded for an answer rather than a written solution.
DEFAULT_CORRECTION = (
    "There might be an error in the answer above because of lack of understanding of the question. Please "
    "check it, correct the error if there is one, and give the final answer again."
)


def _library_prompt(project, task_row: dict, text: str, *, tag: str, note: str) -> int:
    """The id of the library prompt with this text (added, tagged, the first time): a strategy's instruction is a
    prompt like any other, a row and a library file (both or neither)."""
    row = project.store.find_prompt(project.id, task_row["id"], text)
    if row is not None:
        return row["id"]
    return project.add_prompt(task_row, text, origin="manual", tags=[tag], note=note)


def eval_fields(report: EvalReport, *extra: str) -> dict:
    """An evaluation's numbers for a strategy's JSON report (the per-example details stay in the history)."""
    keys = ("evaluation_id", "n", "correct", "accuracy", "ci", "seconds", "cached", *extra)
    return {k: getattr(report, k) for k in keys}


def flip_counts(first: Sequence[bool], second: Sequence[bool]) -> dict:
    """Paired counts of two attempts on the same examples: right -> right, wrong -> right (fixed), right -> wrong
    (broken), wrong -> wrong, and the exact two-sided McNemar p-value of fixed vs broken."""
    if len(first) != len(second):
        raise ValueError("Both attempts must be scored on the same examples.")
    fixed, broken = paired_counts(second, first)
    return {
        "n": len(first),
        "right_right": sum(1 for a, b in zip(first, second) if a and b),
        "wrong_to_right": fixed,
        "right_to_wrong": broken,
        "wrong_wrong": sum(1 for a, b in zip(first, second) if not a and not b),
        "p_value": mcnemar_two_sided(fixed, broken),
    }


def first_turn_text(spec, chain: str, answer: str | None, settings: EvalSettings) -> str:
    """The assistant's first turn as the model produced it: (chain,) extractor and answer."""
    said = f"{spec.extractor} {answer if answer is not None else ''}".rstrip()
    return f"{chain}{REASONING_SEPARATOR}{said}" if settings.mode == "reasoning" and chain else said


@dataclass
class SecondAttemptReport:
    first: EvalReport
    second: EvalReport
    flips: dict
    correction: str
    correction_prompt_id: int
    calls_first: int  # model calls made now for the first attempt (one per example not already cached)
    calls_second: int  # and for the second
    seconds_first: float
    seconds_second: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["first"], out["second"] = (eval_fields(r, "model_calls") for r in (self.first, self.second))
        return out


def second_attempt(
    project,
    *,
    model,
    task_row: dict,
    prompt_row: dict,
    split: str = "test",
    settings: EvalSettings | None = None,
    limit: int | None = None,
    correction: str = DEFAULT_CORRECTION,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> SecondAttemptReport:
    """Evaluate ``prompt_row`` with a second attempt after ``correction`` (see the module docstring).

    The first attempt is the plain evaluation (its cache is shared with ``gradprompt eval``); the second is
    stored as an evaluation of mode ``<mode>+second-attempt`` whose per-example output holds both turns, cached
    by the prompt, the correction and the example (and so by the first answer, which they determine)."""
    store = project.store
    base = settings or EvalSettings()
    plain = EvalSettings(mode=base.mode, max_new_tokens=base.max_new_tokens, answer_tokens=base.answer_tokens)
    spec = store.task_spec(task_row)
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    correction = correction.strip()
    corr_id = _library_prompt(project, task_row, correction, tag="correction", note="second-attempt")
    t0 = time.perf_counter()
    first = evaluate_prompt(
        store, model=model, task_row=task_row, prompt_row=prompt_row, split=split, settings=plain, limit=limit
    )
    calls_first, seconds_first = first.model_calls, time.perf_counter() - t0
    first_rows = {r["example_id"]: r for r in store.example_results(first.evaluation_id)}
    settings2 = EvalSettings(
        mode=plain.mode,
        max_new_tokens=plain.max_new_tokens,
        answer_tokens=plain.answer_tokens,
        strategy="second-attempt",
        strategy_args=json.dumps({"correction": correction}),
    )

    def predictor(ex: dict) -> tuple[str, str | None]:
        row = first_rows.get(ex["id"])
        if row is None:  # not in the plain evaluation (it was stopped): the first attempt is made here
            output, answer = predict(model, layout, spec, prompt_row["text"], ex["input"], plain)
        else:
            output, answer = row["output"], row["predicted"]
        chain = (
            output[: -len(answer)].strip() if plain.mode == "reasoning" and answer and output.endswith(answer) else ""
        )
        turns = [
            {"role": "user", "content": f"{ex['input']}{INPUT_SEPARATOR}{prompt_row['text']}"},
            {"role": "assistant", "content": first_turn_text(spec, chain, answer, plain)},
            {"role": "user", "content": correction},
        ]
        chain2, text2, predicted2 = answer_after(model, spec, layout.conversation(turns), plain)
        second_text = (chain2 + " " + text2).strip()
        return f"first: {output}\nsecond: {second_text}", predicted2

    t1 = time.perf_counter()
    second = evaluate_prompt(
        store,
        model=model,
        task_row=task_row,
        prompt_row=prompt_row,
        split=split,
        settings=settings2,
        limit=limit,
        progress=progress,
        stop=stop,
        predictor=predictor,
    )
    calls_second, seconds_second = second.model_calls, time.perf_counter() - t1
    second_rows = {r["example_id"]: r for r in store.example_results(second.evaluation_id)}
    shared = [i for i in first_rows if i in second_rows]
    flips = flip_counts(
        [bool(first_rows[i]["correct"]) for i in shared], [bool(second_rows[i]["correct"]) for i in shared]
    )
    return SecondAttemptReport(
        first=first,
        second=second,
        flips=flips,
        correction=correction,
        correction_prompt_id=corr_id,
        calls_first=calls_first,
        calls_second=calls_second,
        seconds_first=seconds_first,
        seconds_second=seconds_second,
    )


def second_attempt_markdown(report: SecondAttemptReport, *, prompt: str, task: str, model: str) -> str:
    """The report as Markdown: both attempts with 95% intervals, the flips, the paired test and the cost."""
    f, s, fl = report.first, report.second, report.flips

    def pct(r: EvalReport) -> str:
        return f"{100 * r.accuracy:.1f}% ({r.correct}/{r.n}, 95% CI {100 * r.ci[0]:.1f}-{100 * r.ci[1]:.1f})"

    verdict = (
        "the second attempt is significantly different from the first"
        if fl["p_value"] < 0.05
        else "no significant difference between the attempts"
    )
    return "\n".join(
        [
            f"# Second attempt: {task}, {model}",
            "",
            f"Prompt: `{prompt}`  ",
            f"Correction instruction (library prompt {report.correction_prompt_id}): `{report.correction}`",
            "",
            "| | accuracy | model calls | seconds |",
            "|---|---|---|---|",
            f"| first attempt (plain prompt) | {pct(f)} | {report.calls_first} | {report.seconds_first:.1f} |",
            f"| second attempt | {pct(s)} | {report.calls_second} | {report.seconds_second:.1f} |",
            "",
            f"On the same {fl['n']} examples: wrong -> right {fl['wrong_to_right']}, right -> wrong "
            f"{fl['right_to_wrong']} (right both times {fl['right_right']}, wrong both times {fl['wrong_wrong']}); "
            f"exact two-sided McNemar p = {fl['p_value']:.3f}: {verdict}.",
            "Cost: a deployed second attempt makes 2 model calls per input (the first answer, then the "
            "corrected one); cached examples cost none here.",
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------- combine

# The corrector's instruction (LMCor's prompting form: the small model reads the candidates with the input).
DEFAULT_COMBINE = (
    "Above are candidate answers to the question, written by different prompts. Some may be wrong. Read the "
    "question and the candidates, then give the single correct answer."
)


@dataclass
class CombineReport:
    combined: EvalReport
    n: int
    candidates: list[dict]  # per source evaluation: id, prompt_id, accuracy on the shared examples
    vote_accuracy: float
    any_correct: float  # the ceiling: at least one candidate right
    best_single: dict  # the best candidate alone
    flips_vs_best: dict  # best single -> combined, paired on the same examples
    instruction: str
    instruction_prompt_id: int
    calls_combine: int  # model calls made now (one per example not already cached)
    calls_candidates: int  # model calls the candidates cost when they were evaluated (one per example each)
    seconds: float

    def to_dict(self) -> dict:
        return {**asdict(self), "combined": eval_fields(self.combined)}


def candidate_results(store, evaluation_ids: Sequence[int]) -> tuple[list[dict], list[dict], list[dict], int]:
    """The evaluations to combine, checked (two or more, finished, one task and split, the same first examples):
    (evaluations, their results by example id, the split's examples, how many first examples they share)."""
    from .errors import ConfigError

    if len(evaluation_ids) < 2:
        raise ConfigError("Combining needs at least two evaluations (their answers are the candidates).")
    evals = [store.evaluation(i) for i in evaluation_ids]
    if len({(e["task_id"], e["split"]) for e in evals}) != 1:
        raise ConfigError("The evaluations must be of the same task and split (their examples are combined).")
    if any(e["status"] != "done" for e in evals):
        raise ConfigError("Every evaluation must be finished (run `gradprompt eval` again to complete it).")
    results = [{r["example_id"]: r for r in store.example_results(e["id"])} for e in evals]
    shared = set.intersection(*(set(r) for r in results))
    examples = store.examples(evals[0]["task_id"], evals[0]["split"])
    n = 0
    while n < len(examples) and examples[n]["id"] in shared:
        n += 1
    if n == 0 or n != len(shared):
        raise ConfigError(
            "The evaluations must cover the same first examples of the split: evaluate each prompt with the same "
            "--limit (or none)."
        )
    return evals, results, examples, n


def against_candidates(store, evaluation_id: int | None, evals, results, examples, n: int, voted: dict) -> dict:
    """A combined evaluation against what it combined, on the same first ``n`` examples: each candidate alone,
    their vote, the any-right ceiling, the best candidate and the paired flips from it to the combination."""
    mine = {r["example_id"]: bool(r["correct"]) for r in store.example_results(evaluation_id)}
    order = [ex["id"] for ex in examples[:n]]
    cand = [
        {"id": e["id"], "prompt_id": e["prompt_id"], "accuracy": sum(r[i]["correct"] for i in order) / n}
        for e, r in zip(evals, results)
    ]
    best = max(range(len(cand)), key=lambda k: (cand[k]["accuracy"], -k))
    return {
        "n": n,
        "candidates": cand,
        "vote_accuracy": voted["vote_accuracy"],
        "any_correct": voted["any_correct"],
        "best_single": cand[best],
        "flips_vs_best": flip_counts([bool(results[best][i]["correct"]) for i in order], [mine[i] for i in order]),
    }


def combine(
    project,
    *,
    model,
    evaluation_ids: Sequence[int],
    instruction: str = DEFAULT_COMBINE,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> CombineReport:
    """Combine the answers of several stored evaluations (different prompts, or runtimes, on one task split)
    with the model itself as the corrector: it reads the input and the candidates and answers. Compared with
    each candidate alone, their majority vote and the any-right ceiling on the same examples."""
    store = project.store
    from .effects import vote

    evals, results, examples, n = candidate_results(store, evaluation_ids)
    voted = vote(store, evaluation_ids)  # also refuses the same prompt and settings twice
    task_row = store.task_by_id(evals[0]["task_id"])
    spec = store.task_spec(task_row)
    split = evals[0]["split"]
    instruction = instruction.strip()
    instr_id = _library_prompt(project, task_row, instruction, tag="combiner", note="combine")
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    settings = EvalSettings(mode="direct", strategy="combine")

    def answers(ex: dict) -> list[str | None]:
        return [r[ex["id"]]["predicted"] for r in results]

    def predictor(ex: dict) -> tuple[str, str | None]:
        cands = answers(ex)
        listing = "\n".join(f"({i + 1}) {c if c is not None else '(no answer)'}" for i, c in enumerate(cands))
        user = f"{ex['input']}{INPUT_SEPARATOR}Candidate answers:\n{listing}{INPUT_SEPARATOR}{instruction}"
        _, text, predicted = answer_after(model, spec, layout.user_turn(user), settings)
        return f"candidates: {' | '.join(str(c) for c in cands)}\nanswer: {text}", predicted

    t0 = time.perf_counter()
    combined = evaluate_prompt(
        store,
        model=model,
        task_row=task_row,
        prompt_row=store.prompt(instr_id),
        split=split,
        settings=settings,
        limit=n,
        progress=progress,
        stop=stop,
        predictor=predictor,
        key_extra=lambda ex: json.dumps(answers(ex)),
    )
    seconds = time.perf_counter() - t0
    return CombineReport(
        combined=combined,
        **against_candidates(store, combined.evaluation_id, evals, results, examples, n, voted),
        instruction=instruction,
        instruction_prompt_id=instr_id,
        calls_combine=combined.model_calls,
        calls_candidates=len(evals) * n,
        seconds=seconds,
    )


def combine_markdown(report: CombineReport, *, task: str, model: str) -> str:
    c, fl = report.combined, report.flips_vs_best
    rows = [
        f"| evaluation {x['id']} (prompt {x['prompt_id']}) alone | {100 * x['accuracy']:.1f}% | 1 |"
        for x in report.candidates
    ]
    k = len(report.candidates)
    return "\n".join(
        [
            f"# Combine: {task}, {model}, {report.n} examples",
            "",
            f"Corrector instruction (library prompt {report.instruction_prompt_id}): `{report.instruction}`",
            "",
            "| | accuracy | model calls per input |",
            "|---|---|---|",
            *rows,
            f"| majority vote | {100 * report.vote_accuracy:.1f}% | {k} |",
            f"| any candidate right (ceiling) | {100 * report.any_correct:.1f}% | - |",
            f"| **combined by the model** | **{100 * c.accuracy:.1f}%** (95% CI {100 * c.ci[0]:.1f}-"
            f"{100 * c.ci[1]:.1f}) | {k + 1} |",
            "",
            f"Against the best candidate alone (evaluation {report.best_single['id']}) on the same examples: "
            f"wrong -> right {fl['wrong_to_right']}, right -> wrong {fl['right_to_wrong']}, exact two-sided "
            f"McNemar p = {fl['p_value']:.3f}"
            + (" (significant)." if fl["p_value"] < 0.05 else ": no significant difference."),
            f"Calls now: {report.calls_combine} ({report.seconds:.1f} s); the candidates cost "
            f"{report.calls_candidates} calls when they were evaluated.",
            "",
        ]
    )
