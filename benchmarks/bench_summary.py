"""One table over several benches (task x model rows, method columns) and issue 26's goal checked on it.

    python benchmarks/bench_summary.py PROJECT [PROJECT ...] [--json OUT]

Reads every finished bench of the projects (each bench: one model; its tasks and methods). Per (task, model): each
method's test accuracy with its 95% interval and the paired test against the start on the same test rows
(+fixed/-broken, exact McNemar p; bold where significantly better). Then the goal: on the rows where any method or
the reference beats the start significantly, does the default (greater) too; where nothing does, does it keep
the start; and each method's average over the rows (at the budget each row was run with).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.bench import ALL_METHODS, collect, columns  # noqa: E402
from toolkit.project import open_project  # noqa: E402

ORDER = list(columns(ALL_METHODS, "reference"))  # the reports' own column order
SHORT = {"smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma-3-270M"}


def rows_of(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        project = open_project(path)
        try:
            for bench in project.store.list_benches(project.id):
                if bench["status"] != "done":
                    continue
                cfg = project.store.bench(bench["id"])["config"]
                by_task: dict[str, dict] = {}
                for c in collect(project, bench["id"]):
                    by_task.setdefault(c.task, {})[c.method] = c
                for task, cells in by_task.items():
                    out.append(
                        {
                            "task": task,
                            "model": cfg["model_id"],
                            "budget": cfg["budget_s"],
                            "bench": bench["id"],
                            "project": path,
                            "cells": {
                                m: {
                                    "accuracy": c.accuracy,
                                    "ci": list(c.ci),
                                    "wins": c.wins,
                                    "losses": c.losses,
                                    "p": c.p_value,
                                    "kept": c.kept_initial,
                                    "seconds": c.seconds,
                                    "steps": c.steps,
                                    "parts": c.parts,
                                }
                                for m, c in cells.items()
                            },
                        }
                    )
        finally:
            project.close()
    return out


def better(cell: dict | None) -> bool:
    return bool(cell and cell["p"] is not None and cell["p"] < 0.05 and (cell["wins"] or 0) > (cell["losses"] or 0))


def cell_text(m: str, cell: dict | None) -> str:
    if cell is None:
        return "-"
    acc = f"{100 * cell['accuracy']:.0f}"
    if m == "initial":
        return f"{acc} [{100 * cell['ci'][0]:.0f}-{100 * cell['ci'][1]:.0f}]"
    if cell["kept"] and m not in ("reference", "kshot"):
        return f"{acc} kept"
    if cell["p"] is None:
        return acc
    text = f"{acc} +{cell['wins']}/-{cell['losses']}"
    return f"**{text}**" if better(cell) else text + (" (worse)" if cell["p"] < 0.05 else "")


def table(rows: list[dict]) -> str:
    methods = [m for m in ORDER if any(m in r["cells"] for r in rows)]
    lines = ["| task | model | budget | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 3)]
    for r in sorted(rows, key=lambda r: (r["task"], r["model"])):
        lines.append(
            f"| {r['task']} | {SHORT.get(r['model'], r['model'])} | {r['budget']:.0f} s | "
            + " | ".join(cell_text(m, r["cells"].get(m)) for m in methods)
            + " |"
        )
    return "\n".join(lines)


def goal(rows: list[dict]) -> dict:
    methods = [m for m in ORDER if any(m in r["cells"] for r in rows)]
    with_gain = [r for r in rows if any(better(c) for m, c in r["cells"].items() if m != "initial")]
    greater_gain = [r for r in with_gain if better(r["cells"].get("greater"))]
    no_gain = [r for r in rows if r not in with_gain]
    kept = [r for r in no_gain if (r["cells"].get("greater") or {}).get("kept")]
    complete = [r for r in rows if all(m in r["cells"] for m in methods)]
    averages = (
        {m: 100 * sum(r["cells"][m]["accuracy"] for r in complete) / len(complete) for m in methods} if complete else {}
    )
    return {
        "rows": len(rows),
        "rows_with_a_significant_gain": [f"{r['task']}/{r['model']}" for r in with_gain],
        "greater_significant_there": [f"{r['task']}/{r['model']}" for r in greater_gain],
        "rows_without_gain": len(no_gain),
        "greater_kept_the_start_there": len(kept),
        "averages_over_complete_rows": averages,
        "complete_rows": len(complete),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("projects", nargs="+")
    ap.add_argument("--json", help="Write the rows and the goal as JSON here.")
    args = ap.parse_args()
    rows = rows_of(args.projects)
    print(table(rows))
    g = goal(rows)
    print()
    print(
        f"Rows with a significant gain by any method or the reference: {len(g['rows_with_a_significant_gain'])} "
        f"({', '.join(g['rows_with_a_significant_gain'])}); greater significant on "
        f"{len(g['greater_significant_there'])} of them ({', '.join(g['greater_significant_there'])})."
    )
    print(
        f"Rows with no gain: {g['rows_without_gain']}; greater kept the start on {g['greater_kept_the_start_there']}."
    )
    avg = sorted(g["averages_over_complete_rows"].items(), key=lambda kv: -kv[1])
    print(f"Averages over the {g['complete_rows']} rows every method ran: " + ", ".join(f"{m} {v:.1f}" for m, v in avg))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "goal": g}, indent=1))


if __name__ == "__main__":
    main()
