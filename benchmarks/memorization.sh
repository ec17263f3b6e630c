#!/bin/bash
# The memorization check on every shared task (issue 30; docs/benchmarks.md "Does the model know the test set"):
# each BIG-Bench Hard task (seeded split) and each instruction-induction task (its test file), the test split's
# first LIMIT rows, on MODEL with llama.cpp. Usage: bash benchmarks/memorization.sh [OUT_DIR] [MODEL] [LIMIT]
set -u
cd "$(dirname "$0")/.."
G=$PWD/.venv/bin/gradprompt
OUT=${1:-/tmp/memo}
MODEL=${2:-smollm2-135m}
LIMIT=${3:-40}
S=$(cd ../shared/data && pwd)
P=$OUT/p
mkdir -p "$OUT"
[ -d "$P" ] || $G init "$P" >/dev/null
for f in "$S"/bbh/*.csv; do
  t=$(basename "$f" .csv)
  $G --project "$P" tasks show "$t" >/dev/null 2>&1 || $G --project "$P" tasks import "$f" >/dev/null 2>&1
done
for d in "$S"/instruction_induction/*/; do
  t=ii_$(basename "$d")
  $G --project "$P" tasks show "$t" >/dev/null 2>&1 || \
    $G --project "$P" tasks import "$d/train.csv" --name "$t" --test-file "$d/test.csv" --split 0.5,0.5,0 >/dev/null 2>&1
done
for t in $($G --project "$P" tasks list --json | python3 -c "import json,sys; print(' '.join(r['name'] for r in json.load(sys.stdin)))"); do
  $G --project "$P" tasks memorization "$t" --model "$MODEL" --limit "$LIMIT" --json 2>/dev/null || echo "{\"task\": \"$t\", \"error\": true}"
done > "$OUT/$MODEL.jsonl"
