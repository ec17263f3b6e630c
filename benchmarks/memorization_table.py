"""The memorization check's table from benchmarks/memorization.sh's JSONL files (one per model), task by task.

python benchmarks/memorization_table.py /tmp/memo/smollm2-135m.jsonl /tmp/memo/gemma3-270m.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    runs = {Path(p).stem: {r["task"]: r for r in map(json.loads, Path(p).read_text().splitlines())} for p in paths}
    models = list(runs)
    print("| task | " + " | ".join(f"{m}: checked, recalled, median gap, matched" for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for task in sorted({t for r in runs.values() for t in r}):
        cells = []
        for m in models:
            r = runs[m].get(task)
            if r is None or r.get("error"):
                cells.append("-")
            elif not r["checked"]:
                cells.append(f"0 of {r['examples']} (too short)")
            else:
                flag = " **looks memorized**" if r["flagged"] else ""
                cells.append(f"{r['checked']}, {r['recalled']}, {r['median_gap']:+.2f}, {r['mean_matched']:.1f}{flag}")
        print(f"| {task} | " + " | ".join(cells) + " |")
    for m in models:
        rows = [r for r in runs[m].values() if not r.get("error")]
        print(
            f"\n{m}: {sum(r['checked'] for r in rows)} examples checked over {len(rows)} task splits, "
            f"{sum(r['recalled'] for r in rows)} recalled, {sum(bool(r['flagged']) for r in rows)} splits flagged."
        )


if __name__ == "__main__":
    main(sys.argv[1:])
