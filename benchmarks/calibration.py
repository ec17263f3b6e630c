"""How much does the label decision alone move a small model? The start, a hand-written reference prompt and the
start with a label calibration, on the same held-out test rows (llama.cpp, the deployed GGUF).

For each task (imported with gradprompt's seeded 40/20/40 split): the start ("Answer the question."), the
reference prompt a user would write (naming the labels), and the start with batch and contextual calibration
fitted on the first 32 *training* rows (toolkit.calibration). Each is scored on the first 100 test rows with a
95% Wilson interval, and compared with the start on the same rows (fixed / broken, exact two-sided McNemar).
"top share" is the share of test answers that are the model's most frequent label (label bias: 1.0 = one label
for everything). Prints a Markdown table and, last, one JSON line.

    python benchmarks/calibration.py [--model gemma3-270m] [--tasks ii_sentiment navigate ...] [--test 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

START = "Answer the question."
DEFAULT_TASKS = [
    "ii_sentiment",
    "navigate",
    "date_understanding",
    "geometric_shapes",
    "movie_recommendation",
    "ruin_names",
    "disambiguation_qa",
    "logical_deduction_three_objects",
    "penguins_in_a_table",
    "hyperbaton",
    "web_of_lies",
    "causal_judgement",
]


def reference_prompt(labels) -> str:
    return "Answer with one of: " + ", ".join(labels) + "."


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--tasks", nargs="*", default=DEFAULT_TASKS)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--rows", type=int, default=32, help="training rows the batch calibration is fitted on")
    args = ap.parse_args(argv)

    from scan_tasks import read_named_task, task_files

    from toolkit.calibrate import calibrated_version
    from toolkit.evaluation import evaluate_prompt
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model
    from toolkit.project import init_project
    from toolkit.stats import mcnemar_two_sided

    info = get_model(args.model)
    model = LlamaCppModel(info)
    project = init_project(Path(tempfile.mkdtemp(prefix="gp-calib-")) / "p", name="calibration")
    files = task_files()
    out = {"model": info.id, "rows": args.rows, "test": args.test, "tasks": {}}
    print(f"model {info.id}; calibration fitted on {args.rows} training rows; {args.test} test rows per task\n")
    print("| task | labels | start | top share | reference | batch cal. | contextual cal. |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tasks:
        task_id = project.store.add_task(project.id, read_named_task(name, files))
        task = project.store.task_by_id(task_id)
        spec = project.store.task_spec(task)
        if spec.kind != "label":
            continue
        t0 = time.perf_counter()
        start = project.store.prompt(project.add_prompt(task, START, origin="initial"))
        ref = project.store.prompt(project.add_prompt(task, reference_prompt(spec.labels), origin="manual"))
        rows = {
            "start": start,
            "reference": ref,
            "batch": calibrated_version(project, model, task, start, "batch", rows=args.rows),
            "contextual": calibrated_version(project, model, task, start, "contextual"),
        }
        results = {}
        for key, prow in rows.items():
            rep = evaluate_prompt(
                project.store, model=model, task_row=task, prompt_row=prow, split="test", limit=args.test
            )
            res = {r["example_id"]: r for r in project.store.results(rep.evaluation_id)}
            results[key] = {"report": rep, "res": res}
        base = results["start"]["res"]
        cell = {}
        for key, r in results.items():
            rep, res = r["report"], r["res"]
            wins = sum(1 for k in res if res[k]["correct"] and not base[k]["correct"])
            losses = sum(1 for k in res if base[k]["correct"] and not res[k]["correct"])
            top = Counter(v["predicted"] for v in res.values()).most_common(1)[0][1] / max(1, len(res))
            cell[key] = {
                "accuracy": rep.accuracy,
                "ci": list(rep.ci),
                "wins": wins,
                "losses": losses,
                "p": mcnemar_two_sided(wins, losses),
                "top_share": top,
            }
        cell["labels"] = len(spec.labels)
        cell["seconds"] = time.perf_counter() - t0
        out["tasks"][name] = cell

        def fmt(key, cell=cell):
            c = cell[key]
            mark = "**" if c["p"] < 0.05 and c["wins"] > c["losses"] else ""
            if key == "start":
                return f"{100 * c['accuracy']:.0f}% [{100 * c['ci'][0]:.0f}-{100 * c['ci'][1]:.0f}]"
            return (
                f"{mark}{100 * c['accuracy']:.0f}%{mark} [{100 * c['ci'][0]:.0f}-{100 * c['ci'][1]:.0f}] "
                f"+{c['wins']}/-{c['losses']} p={c['p']:.3f}"
            )

        print(
            f"| {name} | {len(spec.labels)} | {fmt('start')} | {cell['start']['top_share']:.2f} | {fmt('reference')} "
            f"| {fmt('batch')} | {fmt('contextual')} |",
            flush=True,
        )
    model.close()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
