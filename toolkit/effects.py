"""Reading stored evaluations: one evaluation's details, the effect of a prompt change on the examples both
prompts were scored on, and majority votes of several evaluations. Nothing here calls a model."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .evaluate import add_to_confusion
from .stats import paired_counts_by_key, wilson_interval
from .tasks import is_correct, normalize_answer


def evaluation_details(store, evaluation_id: int, *, errors_only: bool = False, limit: int | None = None) -> dict:
    """One stored evaluation for display: its row, the prompt, the task, per-label confusion and the
    per-example results (input, gold answer, output, prediction), optionally only the wrong ones.

    ``scored``/``correct`` count the stored results, so a stopped evaluation shows its partial score.
    """
    ev = store.evaluation(evaluation_id)
    results = store.example_results(evaluation_id)
    confusion: dict[str, dict[str, int]] = {}
    for r in results:
        add_to_confusion(confusion, r["answer"], r["predicted"])
    shown = [{**r, "correct": bool(r["correct"])} for r in results if not (errors_only and r["correct"])]
    task_row = store.task_by_id(ev["task_id"])
    return {
        "evaluation": ev,
        "prompt": store.prompt(ev["prompt_id"]),
        "task": task_row,
        "kind": task_row["answer_kind"],
        "scored": len(results),
        "correct": sum(r["correct"] for r in results),
        "confusion": confusion,
        "examples": shown[: limit if limit else None],
    }


def diff_effect(store, prompt_a: int, prompt_b: int) -> list[dict]:
    """What changing prompt A into prompt B did, per runtime where both were evaluated the same way
    (same task, split, model file, backend, quantization and settings; the latest such pair): accuracy
    of each on the examples both scored, and how many examples the change fixed and broke."""

    def key(e: dict) -> tuple:
        settings = {k: v for k, v in (e["settings"] or {}).items() if k != "limit"}
        return (
            e["task_id"],
            e["split"],
            e["model_sha256"],
            e["backend"],
            e["quantization"],
            e["mode"],
            json.dumps(settings, sort_keys=True),
        )

    latest_a = {key(e): e for e in store.evaluations(prompt_id=prompt_a) if e["status"] == "done"}
    latest_b = {key(e): e for e in store.evaluations(prompt_id=prompt_b) if e["status"] == "done"}
    out = []
    for k in [k for k in latest_b if k in latest_a]:
        ea, eb = latest_a[k], latest_b[k]
        ra = {r["example_id"]: r["correct"] for r in store.results(ea["id"])}
        rb = {r["example_id"]: r["correct"] for r in store.results(eb["id"])}
        both = sorted(set(ra) & set(rb))
        if not both:
            continue
        out.append(
            {
                "eval_a": ea["id"],
                "eval_b": eb["id"],
                "model_id": eb["model_id"],
                "backend": eb["backend"],
                "quantization": eb["quantization"],
                "split": eb["split"],
                "mode": eb["mode"],
                "n": len(both),
                "accuracy_a": sum(ra[i] for i in both) / len(both),
                "accuracy_b": sum(rb[i] for i in both) / len(both),
                "fixed": paired_counts_by_key(rb, ra)[0],
                "broken": paired_counts_by_key(rb, ra)[1],
            }
        )
    return out


def describe_effect(row: dict) -> str:
    """One line for a :func:`diff_effect` row."""
    runtime = "llama.cpp" if row["backend"] == "llamacpp" else row["backend"]
    delta = 100 * (row["accuracy_b"] - row["accuracy_a"])
    return (
        f"{row['model_id']} {runtime} {row['quantization'] or ''} ({row['split']}, {row['mode']}, {row['n']} examples): "
        f"{100 * row['accuracy_a']:.1f}% -> {100 * row['accuracy_b']:.1f}% ({delta:+.1f}), "
        f"{row['fixed']} fixed, {row['broken']} broken - gradprompt evals flipped {row['eval_a']} {row['eval_b']}"
    )


def vote(store, evaluation_ids: Sequence[int]) -> dict:
    """Majority vote of several evaluations' answers (e.g. prompt versions, or runtimes) on the examples all of
    them scored, measured against each one alone. A tie goes to the earliest evaluation given among the tied;
    an unreadable answer does not vote. ``any_correct`` is the share where at least one was right (the most
    any combiner of these answers could reach)."""
    from .errors import ConfigError

    if len(evaluation_ids) < 2:
        raise ConfigError("Give at least two evaluations to vote (an odd number avoids ties).")
    if len(set(evaluation_ids)) != len(evaluation_ids):
        twice = sorted({i for i in evaluation_ids if list(evaluation_ids).count(i) > 1})
        raise ConfigError(f"Evaluation {', '.join(map(str, twice))} is given more than once; each voter counts once.")
    evals = [store.evaluation(i) for i in evaluation_ids]
    seen: dict[tuple, int] = {}
    for e in evals:  # the same prompt scored the same way twice is one voter, not two
        key = (
            e["prompt_id"],
            e["model_sha256"],
            e["backend"],
            e["quantization"],
            e["mode"],
            json.dumps(e["settings"], sort_keys=True),
        )
        if key in seen:
            raise ConfigError(
                f"Evaluations {seen[key]} and {e['id']} are the same prompt ({e['prompt_id']}) on the same "
                "model, runtime and settings: they give the same answers, so they are one voter. Vote "
                "different prompts, or one prompt on different runtimes or quantizations."
            )
        seen[key] = e["id"]
    if len({e["task_id"] for e in evals}) != 1:
        raise ConfigError("The evaluations are of different tasks; votes only make sense on one task.")
    kind = store.task_by_id(evals[0]["task_id"])["answer_kind"]
    results = [{r["example_id"]: r for r in store.example_results(e["id"])} for e in evals]
    shared = sorted(set.intersection(*(set(r) for r in results)))
    if not shared:
        raise ConfigError("The evaluations share no scored example.")
    correct = [0] * len(evals)
    voted = any_ok = 0
    for ex_id in shared:
        rows = [r[ex_id] for r in results]
        gold = rows[0]["answer"]
        counts: dict[str, int] = {}
        first: dict[str, int] = {}
        for k, row in enumerate(rows):
            correct[k] += int(row["correct"])
            if row["predicted"] is None:
                continue
            answer = normalize_answer(row["predicted"], kind)
            counts[answer] = counts.get(answer, 0) + 1
            first.setdefault(answer, k)
        if counts:
            best = max(counts, key=lambda a: (counts[a], -first[a]))
            voted += int(is_correct(rows[first[best]]["predicted"], gold, kind))
        any_ok += int(any(row["correct"] for row in rows))
    n = len(shared)
    return {
        "n": n,
        "evaluations": [
            {
                "id": e["id"],
                "prompt_id": e["prompt_id"],
                "backend": e["backend"],
                "quantization": e["quantization"],
                "accuracy": c / n,
            }
            for e, c in zip(evals, correct)
        ],
        "vote_accuracy": voted / n,
        "vote_ci": wilson_interval(voted, n),
        "any_correct": any_ok / n,
    }
