"""Measure the inference-time strategies (issue 16) against the plain prompt on the default model (llama.cpp).

For each task: three prompts evaluated plainly on the first ``--limit`` test examples; the majority vote of
the three; the model combining their answers (LMCor's prompting form); a reranker over their label scores
trained on ``--train-size`` training examples (LMCor's trained form, :mod:`toolkit.combiner`); a second attempt (SCoRe's prompting
form) and Logic-of-Thought (rules, where they apply) for the first prompt. Every row: accuracy with a 95%
Wilson interval, the paired result against the plain first prompt on the same examples (fixed / broken, exact
two-sided McNemar), model calls per input and seconds. Prints a Markdown table, then one JSON object.

    python benchmarks/strategies.py --data ../shared/data --limit 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PROMPTS = ("Answer the question.", "Read carefully and give the correct answer.", "Think about it and answer.")
TASKS = ("sentiment", "boolean_expressions", "web_of_lies", "formal_fallacies")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the folder holding bbh/ and instruction_induction/")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--task", action="append", help=f"repeat; default: {', '.join(TASKS)}")
    p.add_argument("--project", help="project folder (default: a new temporary one)")
    p.add_argument("--train-size", type=int, default=64, help="training examples for the trained reranker")
    args = p.parse_args()

    from toolkit.combiner import trained_combine
    from toolkit.effects import vote
    from toolkit.evaluate import EvalSettings
    from toolkit.evaluation import evaluate_prompt
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.logic import RULES_VERSION
    from toolkit.models import get_model
    from toolkit.project import init_project, open_project
    from toolkit.stats import mcnemar_two_sided, wilson_interval
    from toolkit.strategies import combine, second_attempt
    from toolkit.tasks import ImportOptions, read_task_file

    data = Path(args.data)
    folder = Path(args.project or tempfile.mkdtemp(prefix="gradprompt-strategies-"))
    project = open_project(folder) if (folder / "gradprompt.toml").exists() else init_project(folder, name="strategies")
    model = LlamaCppModel(get_model())
    rows, out = [], []
    for name in args.task or TASKS:
        if project.store.find_task(project.id, name) is None:
            if name == "sentiment":
                d = data / "instruction_induction" / "sentiment"
                task = read_task_file(
                    d / "train.csv", name=name, test_file=d / "test.csv", options=ImportOptions(split=(0.4, 0.6, 0.0))
                )
            else:
                task = read_task_file(data / "bbh" / f"{name}.csv", name=name)
            project.store.add_task(project.id, task)
        task_row = project.store.task(project.id, name)
        pids = []
        for text in PROMPTS:
            row = project.store.find_prompt(project.id, task_row["id"], text)
            pids.append(
                row["id"] if row else project.store.add_prompt(project.id, task_row["id"], text, origin="manual")
            )

        def plain(pid, task_row=task_row):
            t0 = time.perf_counter()
            r = evaluate_prompt(
                project.store, model=model, task_row=task_row, prompt_row=project.store.prompt(pid), limit=args.limit
            )
            return r, time.perf_counter() - t0

        reports = [plain(pid) for pid in pids]
        base_id = reports[0][0].evaluation_id
        base = {r["example_id"]: bool(r["correct"]) for r in project.store.example_results(base_id)}

        def row(method, ev_id, calls, seconds, base=base, name=name):
            got = {r["example_id"]: bool(r["correct"]) for r in project.store.example_results(ev_id)}
            ids = [i for i in base if i in got]
            n, c = len(ids), sum(got[i] for i in ids)
            fixed = sum(1 for i in ids if got[i] and not base[i])
            broken = sum(1 for i in ids if base[i] and not got[i])
            lo, hi = wilson_interval(c, n)
            return {
                "task": name,
                "method": method,
                "n": n,
                "accuracy": c / n,
                "ci": [lo, hi],
                "fixed": fixed,
                "broken": broken,
                "p": mcnemar_two_sided(fixed, broken),
                "calls_per_input": calls,
                "seconds": seconds,
            }

        for k, (r, s) in enumerate(reports):
            rows.append(row(f"plain: {PROMPTS[k]}", r.evaluation_id, 1, s))
        v = vote(project.store, [r.evaluation_id for r, _ in reports])
        n = v["n"]
        rows.append(
            {
                "task": name,
                "method": "majority vote of the 3",
                "n": n,
                "accuracy": v["vote_accuracy"],
                "ci": list(v["vote_ci"]),
                "fixed": None,
                "broken": None,
                "p": None,
                "calls_per_input": 3,
                "seconds": sum(s for _, s in reports),
                "any_correct": v["any_correct"],
            }
        )
        t0 = time.perf_counter()
        comb = combine(project, model=model, evaluation_ids=[r.evaluation_id for r, _ in reports])
        rows.append(row("combine (model reads the 3)", comb.combined.evaluation_id, 4, time.perf_counter() - t0))
        t0 = time.perf_counter()
        tc = trained_combine(
            project,
            model=model,
            folder=folder / "combiners",
            evaluation_ids=[r.evaluation_id for r, _ in reports],
            train_size=args.train_size,
        )
        rows.append(row("trained reranker of the 3", tc.combined.evaluation_id, 3, time.perf_counter() - t0))
        rows[-1]["train"] = {
            "n": tc.train_n,
            "accuracy": tc.train_accuracy,
            "calls": tc.train_calls,
            "seconds": tc.train_seconds,
        }
        t0 = time.perf_counter()
        sa = second_attempt(
            project,
            model=model,
            task_row=task_row,
            prompt_row=project.store.prompt(pids[0]),
            limit=args.limit,
        )
        rows.append(row("second attempt", sa.second.evaluation_id, 2, time.perf_counter() - t0))
        rows[-1]["flips"] = sa.flips
        t0 = time.perf_counter()
        lot = evaluate_prompt(
            project.store,
            model=model,
            task_row=task_row,
            prompt_row=project.store.prompt(pids[0]),
            limit=args.limit,
            settings=EvalSettings(strategy="logic-of-thought", strategy_args=RULES_VERSION),
        )
        rows.append(row("Logic-of-Thought (rules)", lot.evaluation_id, 1, time.perf_counter() - t0))
        out.append(name)
        print(f"{name}: done", flush=True)

    print("| task | method | accuracy (95% CI) | vs plain prompt 1: fixed / broken, p | calls per input | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        vs = "-" if r["fixed"] is None else f"+{r['fixed']}/-{r['broken']}, p={r['p']:.2f}"
        print(
            f"| {r['task']} | {r['method']} | {100 * r['accuracy']:.1f} ({100 * r['ci'][0]:.0f}-{100 * r['ci'][1]:.0f}) "
            f"| {vs} | {r['calls_per_input']} | {r['seconds']:.1f} |"
        )
    print(json.dumps({"limit": args.limit, "project": str(folder), "rows": rows}))


if __name__ == "__main__":
    main()
