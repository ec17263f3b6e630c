"""The same bench and the same evaluation with and without Ray on this machine (docs/benchmarks.md, "On a cluster").

    python benchmarks/cluster.py [OUT_DIR] [--test-size N] [--eval-rows N]

Two projects with the two shipped tasks; in each, `gradprompt bench` (methods initial, cot, kshot; 3 s each; N test
rows) and `gradprompt eval` of the start on the topic task's test rows, once plainly and once with `--ray local`
(a one-machine Ray cluster started by the command). Prints the wall-clock seconds of each command, whether the
stored results are the same (per cell: final prompt, accuracy and every example's correctness; per evaluation:
every example's answer), and the last line as JSON. Two cores cannot show a speed-up: this measures correctness
and overhead (starting Ray, shipping the history, loading the model in each worker).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.bench import collect  # noqa: E402
from toolkit.demo import ensure_demo_task  # noqa: E402
from toolkit.project import init_project, open_project  # noqa: E402

G = str(Path(sys.executable).parent / "gradprompt")


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([G, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def stored(path: Path) -> tuple[dict, list]:
    project = open_project(path)
    store = project.store
    [bench] = store.list_benches(project.id)
    cells = {}
    for c in collect(project, bench["id"]):
        answers = sorted((r["example_id"], r["correct"]) for r in store.results(c.evaluation_id))
        cells[f"{c.task}/{c.method}"] = (c.prompt, c.accuracy, answers)
    ev = store.evaluations()[-1]  # the eval command's
    answers = sorted((r["example_id"], r["predicted"], r["correct"]) for r in store.results(ev["id"]))
    project.close()
    return cells, answers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="/tmp/cluster-bench")
    ap.add_argument("--test-size", type=int, default=50)
    ap.add_argument("--eval-rows", type=int, default=100)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    seconds: dict[str, float] = {}
    results = {}
    for name, extra in (("plain", []), ("ray", ["--ray", "local"])):
        path = out / name
        project = init_project(path, name=name)
        tasks = [ensure_demo_task(project, which)["name"] for which in ("sentiment", "topic")]
        project.close()
        bench = ["--project", str(path), "bench", "--budget", "3", "--test-size", str(args.test_size)]
        for m in ("initial", "cot", "kshot"):
            bench += ["--method", m]
        for t in tasks:
            bench += ["--task", t]
        seconds[f"bench_{name}_s"] = timed(bench + extra)
        # a prompt version of its own (its answers are not in the cache from the bench's test evaluations)
        project = open_project(path)
        topic = project.store.task(project.id, tasks[1])
        pid = project.add_prompt(topic, "Which topic is this headline about?", origin="user")
        project.close()
        ev = ["--project", str(path), "eval", str(pid), "--split", "test", "--limit", str(args.eval_rows)]
        seconds[f"eval_{name}_s"] = timed(ev + extra)
        results[name] = stored(path)
    same_bench = results["plain"][0] == results["ray"][0]
    same_eval = results["plain"][1] == results["ray"][1]
    summary = {
        **{k: round(v, 1) for k, v in seconds.items()},
        "bench_cells": len(results["plain"][0]),
        "eval_rows": len(results["plain"][1]),
        "bench_same_results": same_bench,
        "eval_same_answers": same_eval,
        "bench_overhead_ratio": round(seconds["bench_ray_s"] / seconds["bench_plain_s"], 2),
        "eval_overhead_ratio": round(seconds["eval_ray_s"] / seconds["eval_plain_s"], 2),
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
