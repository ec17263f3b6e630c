"""Which training objective predicts dev accuracy? A probe behind the search's score (issue 10).

For one task and a starting prompt, every deployable single-token swap the model proposes at each position of
the prompt is scored exactly (direct mode, the engine's suffix-KV scorer) on the first ``--train-size``
training examples and on the dev split. Then, over all those candidate prompts, each training criterion is
compared with dev accuracy:

* Spearman correlation between the criterion (on 16 / 32 / all training examples) and dev accuracy;
* the dev accuracy gain over the start of the candidate each criterion would pick (what a greedy step takes).

Criteria: accuracy (the search's primary term), balanced accuracy (mean recall per label: a prompt cannot
gain it by answering the majority label), the answer loss (CE at the engine's temperature) and the
label-balanced loss (mean per label). Prints a table and one JSON object as the last line.

    python benchmarks/objective_probe.py --task-file ../shared/data/bbh/web_of_lies.csv
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time


def spearman(xs, ys):
    from toolkit.stats import spearman as sp

    v = sp(xs, ys)
    return float("nan") if v is None else v


def criteria(rows, answers):
    """rows: [(loss, nll, correct)] per example -> criterion values (higher is better)."""
    n = len(rows)
    labels = sorted(set(answers))
    acc = sum(int(r[2]) for r in rows) / n
    loss = sum(float(r[0]) for r in rows) / n
    rec, bl = [], []
    for lab in labels:
        idx = [i for i, a in enumerate(answers) if a == lab]
        rec.append(sum(int(rows[i][2]) for i in idx) / len(idx))
        bl.append(sum(float(rows[i][0]) for i in idx) / len(idx))
    return {
        "accuracy": acc,
        "balanced_accuracy": sum(rec) / len(rec),
        "neg_loss": -loss,
        "neg_balanced_loss": -sum(bl) / len(bl),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task-file", required=True)
    p.add_argument("--test-file", default=None)
    p.add_argument("--split", default="0.4,0.2,0.4")
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--initial-prompt", default="Answer the question.")
    p.add_argument("--positions", default="", help="comma-separated positions (default: all)")
    p.add_argument("--pool", type=int, default=32)
    args = p.parse_args()

    import torch

    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.engine.search import deployable, swap
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.models import get_model
    from toolkit.tasks import ImportOptions, parse_split, read_task_file

    torch.set_num_threads(os.cpu_count() or 1)
    task = read_task_file(
        args.task_file, test_file=args.test_file, options=ImportOptions(split=parse_split(args.split))
    )
    train = [Item(e.input, e.answer) for e in task.split("train")][: args.train_size]
    dev = [Item(e.input, e.answer) for e in task.split("dev")]
    tm = load_torch_model(get_model(), precision="fp32", device="cpu")
    eng = GreaterEngine(tm, task.spec, train, dev, GreaterConfig(n_train=len(train), pool=args.pool, n_dev=len(dev)))
    prompt = eng.encode_prompt(args.initial_prompt)
    positions = [int(x) for x in args.positions.split(",")] if args.positions else list(range(len(prompt)))
    tr_ans = [i.answer for i in train]
    t0 = time.perf_counter()
    cands = []  # (pos, token, train rows, dev rows)
    start_rows = None
    for pos in positions:
        pool = deployable(eng.parts, prompt, pos, eng.proposer.propose(prompt, pos, random.Random(f"0-{pos}")))
        toks = sorted(set(pool) | {prompt[pos]})
        tr = eng.scorer.suffix_terms(prompt, pos, toks, items=train)
        dv = eng.scorer.suffix_terms(prompt, pos, toks, items=dev)
        for t, a, b in zip(toks, tr, dv):
            if t == prompt[pos]:
                start_rows = start_rows or (a, b)
            else:
                cands.append((pos, t, a, b))
        print(f"position {pos}: {len(toks) - 1} candidates ({time.perf_counter() - t0:.0f} s)", flush=True)
    dev_start = sum(int(r[2]) for r in start_rows[1]) / len(dev)
    dev_acc = [sum(int(r[2]) for r in c[3]) / len(dev) for c in cands]
    sizes = sorted({min(16, len(train)), min(32, len(train)), len(train)})
    table = {}
    for n in sizes:
        crit = [criteria(c[2][:n], tr_ans[:n]) for c in cands]
        start = criteria(start_rows[0][:n], tr_ans[:n])
        for name in crit[0]:
            vals = [c[name] for c in crit]
            best = max(range(len(cands)), key=lambda i: (vals[i], -i))
            better = [i for i in range(len(cands)) if vals[i] > start[name]]
            table[f"{name}@{n}"] = {
                "spearman_with_dev": spearman(vals, dev_acc),
                "pick_dev_gain": dev_acc[best] - dev_start,
                "pick": eng.decode(swap(prompt, cands[best][0], cands[best][1])),
                "better_than_start": len(better),
                "mean_dev_gain_of_better": (sum(dev_acc[i] for i in better) / len(better) - dev_start)
                if better
                else None,
            }
    print(
        f"{len(cands)} candidates; start dev {dev_start:.3f}; best dev among candidates {max(dev_acc):.3f}; "
        f"mean {sum(dev_acc) / len(dev_acc):.3f}"
    )
    print(f"{'criterion':<26}{'rho(dev)':>9}{'pick gain':>10}{'#better':>8}{'gain|better':>12}  pick")
    for k, v in table.items():
        g = v["mean_dev_gain_of_better"]
        print(
            f"{k:<26}{v['spearman_with_dev']:>9.2f}{v['pick_dev_gain']:>10.3f}{v['better_than_start']:>8}"
            f"{'-' if g is None else f'{g:.3f}':>12}  {v['pick']!r}"
        )
    print(
        json.dumps(
            {
                "task": task.name,
                "n_candidates": len(cands),
                "dev_start": dev_start,
                "dev_best": max(dev_acc),
                "dev_mean": sum(dev_acc) / len(dev_acc),
                "criteria": table,
                "seconds": time.perf_counter() - t0,
            }
        )
    )


if __name__ == "__main__":
    main()
