"""The product's defaults for a run, defined once: the command line, the TUI's forms, the bench and the demo read
them from here (``tests/test_defaults.py`` checks that each face does).

Why these values: 16 training rows score candidates (the GReaTer paper's size; the rest of the training split is the
demonstrations' pool); every dev row up to 100 decides the final choice (docs/benchmarks.md, "The final choice":
power 0.75 for a 15-point gain at 100 rows, 0.23 at 32); 100 test rows give a 95% interval of about +-10 points; a
baseline with no budget of its own gets 120 s, the demo's budget (docs/benchmarks.md, Bench 9, at 120 s). The
bench's default is the same 120 s: at 60 s (Bench 10) the default search took no instruction step on any of the
task-model pairs of that bench (the final choice's share alone was measured at 20-56 s), so a 60 s bench compares
the baselines with the final choice alone, not with the search."""

from __future__ import annotations

from .selection import DEFAULT_DEV_SIZE

STEPS = 20  # `gradprompt optimize`: instruction steps when no --budget is given
TRAIN_SIZE = 16  # training rows that score candidates
DEV_SIZE = DEFAULT_DEV_SIZE  # dev rows of the final choice (all of them up to this)
TEST_SIZE = 100  # test rows the bench and the demo score
BUDGET_S = 120.0  # seconds: the demo's search and a baseline's when no --budget is given
BENCH_BUDGET_S = 120.0  # seconds per method and task in `gradprompt bench` (the demo's and optimize's budget)
SEED = 0

# The starting prompt when none is given: the GReaTer paper's own (not cut off).
DEFAULT_INITIAL_PROMPT = "proper logical reasoning and think step by step. Finally give the actual correct answer."
