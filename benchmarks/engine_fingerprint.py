"""The engine's behaviour as one JSON file, to check that a refactor changed nothing.

Runs the GReaTer engine on the default model (SmolLM2-135M, fp32, CPU) on the shipped sentiment task with a fixed
configuration and no time budget, 3 steps in direct mode and 3 in reasoning mode, and writes every step's prompt
ids, train score, candidates and search record, the final choice (prompt, dev accuracy, table, selection,
demonstrations, calibration) and the work counters. Run it on two checkouts and compare; only the timings of the
demonstration search (``seconds``) may differ:

    PYTHONPATH=/path/to/old python benchmarks/engine_fingerprint.py /tmp/old.json
    PYTHONPATH=/path/to/new python benchmarks/engine_fingerprint.py /tmp/new.json
    diff /tmp/old.json /tmp/new.json      # expected: only "seconds" lines

About 2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys


def main(out_path: str) -> None:
    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.models import get_model
    from toolkit.tasks import demo_task_files, read_task_file

    train_file, test_file = demo_task_files()
    task = read_task_file(train_file, name="t", test_file=test_file)
    items = [Item(e.input, e.answer) for e in task.split("train")]
    tm = load_torch_model(get_model(), precision="fp32", device="cpu")
    out = {}
    for mode, extra in (("direct", {}), ("reasoning", {"max_new_tokens": 12})):
        cfg = GreaterConfig(mode=mode, steps=3, n_train=8, n_dev=12, seed=0, time_budget_s=None, **extra)
        eng = GreaterEngine(tm, task.spec, items[:20], items[20:32], cfg)
        state = eng.initial_state("Decide the topic of the headline.")
        records = []
        for r in eng.run(state):
            records.append({k: r[k] for k in ("step", "prompt_ids", "train_score", "candidates", "search")})
            state = r["state"]
        res = eng.finish(state)
        out[mode] = {
            "records": records,
            "prompt": res.prompt,
            "dev": res.dev_accuracy,
            "top": res.top,
            "selection": res.selection,
            "demos": res.demos,
            "calibration": res.calibration,
            "stats": eng.stats,
        }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(json.dumps({"out": out_path, "steps": {m: len(v["records"]) for m, v in out.items()}}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "engine-fingerprint.json")
