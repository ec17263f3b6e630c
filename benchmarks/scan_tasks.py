"""Which shared tasks is the default model above chance on? (Used to choose the benchmark's tasks.)

Scores two prompts (the GReaTer initial prompt and zero-shot CoT's) on the first N rows of each task in
../shared/data with llama.cpp in direct mode and compares with the majority-label rate. Prints a table and
one JSON object as the last line.

    python benchmarks/scan_tasks.py [--rows 60]

With ``--sensitivity`` it scores five different prompts instead and reports how often they disagree (the share
of rows where not all five give the same answer) and the spread of their accuracies: a task where every prompt
gives the same answers cannot be moved by any prompt method, so a prompt-optimization benchmark should use
tasks that react.

    python benchmarks/scan_tasks.py --sensitivity --rows 40 [--only navigate snarks ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PROMPTS = {
    "initial": "proper logical reasoning and think step by step. Finally give the actual correct answer.",
    "cot": "Let's think step by step.",
}
# Five prompts of different kinds for --sensitivity: weak, instruction, persona, format, reasoning-flavoured.
SENSITIVITY = {
    "weak": "Answer the question.",
    "instruct": "Read the input carefully and choose the correct answer.",
    "expert": "You are an expert. Give the right answer.",
    "short": "Answer with one word.",
    "paper": PROMPTS["initial"],
}


def task_files() -> dict[str, Path]:
    files = {}
    for folder in sorted((SHARED / "instruction_induction").iterdir()):
        files[f"ii_{folder.name}"] = folder / "train.csv"
    files.update({p.stem: p for p in sorted((SHARED / "bbh").glob("*.csv"))})
    data = ROOT / "toolkit" / "data"  # the shipped demo tasks: train file (its test file beside it)
    files.update({p.stem.replace("_train", ""): p for p in sorted(data.glob("demo_*_train.csv"))})
    return files


def read_named_task(name: str, files: dict | None = None):
    """A benchmark task by name: a shipped demo task as the demo imports it (40 train / 60 dev rows from the
    train file, its test file as test), any other with gradprompt's seeded 40/20/40 split."""
    from toolkit.tasks import ImportOptions, read_task_file

    path = (files or task_files())[name]
    if name.startswith("demo_"):
        test = path.with_name(path.name.replace("_train", "_test"))
        return read_task_file(path, name=name, options=ImportOptions(split=(0.4, 0.6, 0.0)), test_file=test)
    return read_task_file(path, name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--only", nargs="*", help="task names")
    parser.add_argument("--model", default=None, help="model id (default: the default model)")
    parser.add_argument("--sensitivity", action="store_true", help="five prompts; report how often they disagree")
    args = parser.parse_args()

    from toolkit.errors import DatasetError
    from toolkit.evaluate import EvalSettings, predict
    from toolkit.layout import ChatLayout
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model
    from toolkit.tasks import read_task_file

    model = LlamaCppModel(get_model(args.model))
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    out = {}
    for name, path in task_files().items():
        if args.only and name not in args.only:
            continue
        try:
            task = read_task_file(path, name=name)
        except DatasetError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        rows = list(task.examples[: args.rows])
        counts = {}
        for ex in rows:
            counts[ex.answer] = counts.get(ex.answer, 0) + 1
        majority = max(counts.values()) / len(rows)
        t0 = time.perf_counter()
        accs = {}
        prompts = SENSITIVITY if args.sensitivity else PROMPTS
        answers = {}
        for pname, prompt in prompts.items():
            answers[pname] = [predict(model, layout, task.spec, prompt, ex.input, EvalSettings())[1] for ex in rows]
            accs[pname] = sum(a == ex.answer for a, ex in zip(answers[pname], rows)) / len(rows)
        chance = 1 / len(task.spec.labels) if task.spec.labels else 0.0
        if args.sensitivity:
            disagree = sum(len({answers[p][i] for p in prompts}) > 1 for i in range(len(rows))) / len(rows)
            spread = max(accs.values()) - min(accs.values())
            out[name] = {
                "kind": task.spec.kind,
                "labels": len(task.spec.labels),
                "majority": majority,
                "disagree": disagree,
                "spread": spread,
                **accs,
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"{name:<42} {task.spec.kind:<6} labels {len(task.spec.labels):>2}  majority {majority:.2f}  "
                f"disagree {disagree:.2f}  accuracy {min(accs.values()):.2f}-{max(accs.values()):.2f}",
                flush=True,
            )
            continue
        out[name] = {
            "kind": task.spec.kind,
            "labels": len(task.spec.labels),
            "chance": chance,
            "majority": majority,
            **accs,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"{name:<42} {task.spec.kind:<6} labels {len(task.spec.labels):>2}  chance {chance:.2f}  majority "
            f"{majority:.2f}  initial {accs['initial']:.2f}  cot {accs['cot']:.2f}",
            flush=True,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
