"""The final choice's operating characteristics by simulation (synthetic paired outcomes, no model).

For each dev size, rule and place of the better candidate: the share of runs that adopt a candidate when none
is better (false adoption; must stay at or under the 5% level) and when one is 15 points better (power).
Rules: the fallback procedure in training-score order (the default, half the level to the best on training),
the fixed-sequence test (all of it to the best on training) and the flat Bonferroni correction used before
2026-12-06. Prints a Markdown table and, last, one JSON line.

    python benchmarks/selection_sim.py [--seeds 2000] [--candidates 4] [--discord 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.selection import LEAD, simulate_choice  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--discord", type=float, default=0.3, help="share of dev rows where a candidate disagrees")
    ap.add_argument("--gain", type=float, default=0.15)
    ap.add_argument("--sizes", default="32,50,100,200")
    args = ap.parse_args(argv)
    rules = [
        ("fallback", LEAD, f"fallback (lead {LEAD})"),
        ("fallback", 1.0, "fixed sequence"),
        ("bonferroni", 0, "Bonferroni"),
    ]
    rows = []
    print(
        f"{args.candidates} candidates, each disagreeing with the start on {args.discord:.0%} of the dev rows; "
        f"{args.seeds} seeds per cell\n"
    )
    print("| dev rows | rule | false adoption | power, better one first | power, better one at random |")
    print("|---|---|---|---|---|")
    for n in [int(x) for x in args.sizes.split(",")]:
        for rule, lead, name in rules:
            common = dict(n=n, k=args.candidates, discord=args.discord, rule=rule, lead=lead, seeds=args.seeds)
            null = simulate_choice(gain=0.0, **common)
            first = simulate_choice(gain=args.gain, position="first", **common)
            rand = simulate_choice(gain=args.gain, position="random", **common)
            rows.append({"n": n, "rule": name, "false_adoption": null, "power_first": first, "power_random": rand})
            print(f"| {n} | {name} | {null:.3f} | {first:.3f} | {rand:.3f} |", flush=True)
    out = {"seeds": args.seeds, "candidates": args.candidates, "discord": args.discord, "gain": args.gain, "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
