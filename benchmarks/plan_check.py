"""The plan's time per step against measured runs (issue 28: one estimator for every face, checked, with its error).

    python benchmarks/plan_check.py [OUT_DIR] [--steps N] [--bbh TASK ...]

For the two shipped tasks and a few BIG-Bench Hard tasks of different input lengths (../shared/data/bbh), on the
default model: `gradprompt optimize TASK --dry-run` (the plan the CLI and the TUI's new-run form print: the same
estimator, the same inputs), then the same command for N instruction steps; the measured seconds per step are the
step's own timings (proposal, gradient, scoring, reasoning) from the history. Prints per task the plan, the measured
median and range, and their ratio; the last line is JSON (ratios' median and range), from which the plan's
correction and its stated error range are set (toolkit/plan.py, STEP_TIME_RANGE).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.demo import ensure_demo_task  # noqa: E402
from toolkit.project import init_project, open_project  # noqa: E402

G = str(Path(sys.executable).parent / "gradprompt")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="/tmp/plan-check")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--bbh", nargs="*", default=["web_of_lies", "formal_fallacies"])
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    project = init_project(out / "p", name="plan")
    tasks = [ensure_demo_task(project, which)["name"] for which in ("sentiment", "topic")]
    project.close()
    for t in args.bbh:
        subprocess.run([G, "--project", str(out / "p"), "tasks", "import", str(SHARED / f"{t}.csv")], check=True,
                       capture_output=True)  # fmt: skip
        tasks.append(t)
    rows = []
    for task in tasks:
        common = ["--project", str(out / "p"), "optimize", task, "--steps", str(args.steps), "--budget", "3600"]
        common += ["--search", "instruction", "--initial-prompt", "Answer the question.", "--dev-size", "8"]
        dry = subprocess.run([G, *common, "--dry-run"], capture_output=True, text=True, check=True).stdout
        planned = float(re.search(r"~(\d+(?:\.\d+)?) s per step", dry).group(1))
        subprocess.run([G, *common], capture_output=True, text=True, check=True)
        project = open_project(out / "p")
        task_id = project.store.task(project.id, task)["id"]
        run = project.store.run(max(r["id"] for r in project.store.list_runs(project.id) if r["task_id"] == task_id))
        measured = [sum(s["timings"].values()) for s in project.store.steps(run["id"]) if s.get("timings")]
        project.close()
        med = statistics.median(measured)
        rows.append({"task": task, "planned_s": planned, "measured_s": [round(x, 1) for x in measured],
                     "median_s": round(med, 1), "ratio": round(med / planned, 2)})  # fmt: skip
        print(f"{task}: plan ~{planned:.0f} s/step, measured {min(measured):.1f}-{max(measured):.1f} s "
              f"(median {med:.1f}), measured/plan {med / planned:.2f}")  # fmt: skip
    ratios = [r["ratio"] for r in rows]
    summary = {
        "rows": rows,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
