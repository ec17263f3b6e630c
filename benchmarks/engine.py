"""Benchmark the GReaTer engine: fast vs naive execution of the same schedule, fp32 vs 4-bit.

Runs a fixed small configuration on the default model (SmolLM2-135M) on the CPU. Each configuration runs in
its own subprocess so its peak RSS is its own. Prints a table, then one JSON object as the last line.

    python benchmarks/engine.py            # default: reasoning mode, 2 steps, 8 training examples, 16-token chains
    python benchmarks/engine.py --mode direct --train-size 8
    python benchmarks/engine.py --race-compare --train-size 32 --race-chunk 8 --skip-4bit   # racing on vs off
    python benchmarks/engine.py --mode direct --train-size 16 --width 16 --skip-4bit   # the wide direct search

candidates_per_s: candidates scored in full on every training example per second of the whole run (all
phases); scoring_candidates_per_s: the same per second of the scoring phase only. demo_sets_per_s /
naive_demo_sets_per_s: demonstration sets (the final choice's demonstration search, up to 4 training rows shown
as earlier chat turns) scored on every training example per second, fast (their KV shared by the examples) and
naive.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def worker(args) -> dict:
    import torch

    from toolkit.engine.final import _demo_variants
    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.models import get_model
    from toolkit.tasks import demo_task_files, read_task_file

    torch.set_num_threads(os.cpu_count() or 1)
    train_file, test_file = demo_task_files()
    task = read_task_file(train_file, name="bench", test_file=test_file)
    items = [Item(e.input, e.answer) for e in task.split("train")]
    t0 = time.perf_counter()
    tm = load_torch_model(get_model(), precision=args.precision, device="cpu")
    load_s = time.perf_counter() - t0
    cfg = GreaterConfig(
        steps=args.steps,
        n_train=args.train_size,
        n_dev=0,
        mode=args.mode,
        seed=0,
        batch_size=args.batch_size,
        execution=args.execution,
        max_new_tokens=args.max_new_tokens,
        select_on_dev=False,
        race=not args.no_race,
        race_chunk=args.race_chunk,
        width=args.width,
        probe=args.probe,
    )
    eng = GreaterEngine(tm, task.spec, items, [], cfg)
    state = eng.initial_state(
        "proper logical reasoning and think step by step. Finally give the actual correct answer."
    )
    records = []
    t0 = time.perf_counter()
    for rec in eng.run(state):
        records.append(rec)
    total = time.perf_counter() - t0
    # Demonstration sets scored on the training rows (the final choice's demonstration search), drawn from the
    # rows beyond the training examples: the same sets in both executions.
    demo_eng = GreaterEngine(tm, task.spec, items, [], cfg)
    t1 = time.perf_counter()
    demo_variants = _demo_variants(demo_eng.parts, demo_eng.encode_prompt("Decide the sentiment of the review."))
    demo_s = time.perf_counter() - t1
    demo_sets = demo_eng.demo_stats.get("sets", 0)
    phases: dict[str, float] = {}
    for rec in records:
        for k, v in rec["timings"].items():
            phases[k] = phases.get(k, 0.0) + v / len(records)
    # Gradient FLOPs: forward (2 * params * tokens) + backward to the inputs only (the weights are frozen:
    # another 2 * params * tokens), body parameters only; lm_head work at the few picked positions is ignored.
    scored = sum(len(r["candidates"]) for r in records)
    scoring_s = sum(r["timings"].get("scoring", 0.0) for r in records)
    body_params = sum(p.numel() for n, p in tm.model.named_parameters() if "embed" not in n and "lm_head" not in n)
    grad_tokens = eng.stats["grad_tokens"] / max(1, len(records))
    grad_flops = 4 * body_params * grad_tokens
    return {
        "execution": args.execution,
        "precision": tm.precision,
        "steps": len(records),
        "load_s": load_s,
        "s_per_step": total / max(1, len(records)),
        "phases_s_per_step": phases,
        "grad_gflops": grad_flops / max(phases.get("gradient", 1e-9), 1e-9) / 1e9,
        "grad_tokens_per_step": grad_tokens,
        "choices": [r["prompt_ids"] for r in records],
        "candidates": [[c["token"] for c in r["candidates"]] for r in records],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "raced_out": eng.stats["raced_out"],
        "race_examples_skipped": eng.stats["race_examples_skipped"],
        "candidates_scored": scored,
        "candidates_per_s": scored / max(total, 1e-9),
        "scoring_candidates_per_s": scored / max(scoring_s, 1e-9),
        "demo_sets": demo_sets,
        "demo_sets_per_s": demo_sets / max(demo_s, 1e-9),
        "demo_choices": [[list(d) for d in v.demos] for v in demo_variants],
    }


def run_worker(args, **overrides) -> dict:
    cmd = [sys.executable, __file__, "--worker"]
    opts = {**vars(args), **overrides}
    for key in (
        "steps",
        "train_size",
        "batch_size",
        "mode",
        "execution",
        "precision",
        "max_new_tokens",
        "race_chunk",
        "width",
        "probe",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(opts[key])]
    if opts["no_race"]:
        cmd.append("--no-race")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"worker failed: {' '.join(cmd)}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="steps per configuration (default 2)")
    parser.add_argument("--train-size", type=int, default=8, help="training examples (default 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="fast engine batch size (default 16)")
    parser.add_argument(
        "--mode",
        choices=["direct", "reasoning"],
        default="reasoning",
        help="reasoning (the paper's method, default) or direct",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reasoning chain cap (default 16)")
    parser.add_argument("--execution", choices=["fast", "naive"], default="fast", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-4bit", action="store_true", help="skip the 4-bit measurement")
    parser.add_argument(
        "--race-chunk",
        type=int,
        default=8,
        help="candidate racing: examples scored between checks (default 8, the engine's default)",
    )
    parser.add_argument("--no-race", action="store_true", help="turn candidate racing off in the fast engine")
    parser.add_argument("--width", type=int, default=4, help="candidates scored per step by gradient rank (default 4)")
    parser.add_argument("--probe", type=int, default=2, help="random probe candidates per step (default 2)")
    parser.add_argument(
        "--race-compare", action="store_true", help="also run the fast engine with racing off and report the saving"
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    peak = matmul_peak_gflops()
    fast = run_worker(args, execution="fast", precision="fp32")
    naive = run_worker(args, execution="naive", precision="fp32")
    q4 = None if args.skip_4bit else run_worker(args, execution="fast", precision="4bit", steps=1)
    norace = run_worker(args, execution="fast", precision="fp32", no_race=True) if args.race_compare else None
    rows = (
        [("fast fp32", fast), ("naive fp32", naive)]
        + ([("fast 4bit", q4)] if q4 else [])
        + ([("fast norace", norace)] if norace else [])
    )
    phases = sorted({k for _, r in rows for k in r["phases_s_per_step"]})
    print(
        f"GReaTer engine benchmark: SmolLM2-135M, CPU ({os.cpu_count()} cores), {args.mode} mode, "
        f"{args.train_size} training examples, {args.steps} steps"
    )
    print(
        f"{'config':<12}{'s/step':>9}"
        + "".join(f"{p[:12]:>14}" for p in phases)
        + f"{'grad GFLOP/s':>14}{'peak RSS MB':>13}"
    )
    for name, r in rows:
        print(
            f"{name:<12}{r['s_per_step']:>9.2f}"
            + "".join(f"{r['phases_s_per_step'].get(p, 0):>14.2f}" for p in phases)
            + f"{r['grad_gflops']:>14.1f}{r['peak_rss_mb']:>13.0f}"
        )
    same = fast["choices"] == naive["choices"] and fast["candidates"] == naive["candidates"]
    ratio = naive["s_per_step"] / fast["s_per_step"]
    print(
        f"naive/fast = {ratio:.2f}x, same choices: {same}; matmul peak {peak:.1f} GFLOP/s; "
        f"gradient phase at {100 * fast['grad_gflops'] / peak:.0f}% of peak"
    )
    print(
        f"candidates scored per second (whole run / scoring phase): fast {fast['candidates_per_s']:.2f} / "
        f"{fast['scoring_candidates_per_s']:.2f}, naive {naive['candidates_per_s']:.3f} / "
        f"{naive['scoring_candidates_per_s']:.3f} ({args.width} by rank + {args.probe} probe per step)"
    )
    same_demos = fast["demo_choices"] == naive["demo_choices"]
    print(
        f"demonstration sets scored per second ({fast['demo_sets']} sets on {args.train_size} training examples): "
        f"fast {fast['demo_sets_per_s']:.2f}, naive {naive['demo_sets_per_s']:.3f} "
        f"({fast['demo_sets_per_s'] / max(naive['demo_sets_per_s'], 1e-9):.2f}x), same sets kept: {same_demos}"
    )
    if norace:
        same_race = norace["choices"] == fast["choices"]
        print(
            f"racing: {fast['raced_out']} candidates dropped early, {fast['race_examples_skipped']} example "
            f"scorings skipped; fast without racing {norace['s_per_step']:.2f} s/step "
            f"({norace['s_per_step'] / fast['s_per_step']:.2f}x), same choices: {same_race}"
        )
    print(
        json.dumps(
            {
                "naive_s_per_step": naive["s_per_step"],
                "fast_s_per_step": fast["s_per_step"],
                "ratio": ratio,
                "same_choices": same,
                "grad_gflops": fast["grad_gflops"],
                "matmul_peak_gflops": peak,
                "peak_rss_mb_fp32": fast["peak_rss_mb"],
                "peak_rss_mb_4bit": q4["peak_rss_mb"] if q4 else None,
                "s_per_step_4bit": q4["s_per_step"] if q4 else None,
                "phases_fast": fast["phases_s_per_step"],
                "phases_naive": naive["phases_s_per_step"],
                "train_size": args.train_size,
                "steps": args.steps,
                "mode": args.mode,
                "raced_out": fast["raced_out"],
                "race_examples_skipped": fast["race_examples_skipped"],
                "fast_norace_s_per_step": norace["s_per_step"] if norace else None,
                "race_same_choices": (norace["choices"] == fast["choices"]) if norace else None,
                "candidates_per_s": fast["candidates_per_s"],
                "naive_candidates_per_s": naive["candidates_per_s"],
                "scoring_candidates_per_s": fast["scoring_candidates_per_s"],
                "naive_scoring_candidates_per_s": naive["scoring_candidates_per_s"],
                "width": args.width,
                "probe": args.probe,
                "demo_sets_per_s": fast["demo_sets_per_s"],
                "naive_demo_sets_per_s": naive["demo_sets_per_s"],
                "demo_same_choices": same_demos,
            }
        )
    )


if __name__ == "__main__":
    main()
