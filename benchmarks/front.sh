#!/bin/bash
# The size/accuracy front (issue 30; docs/benchmarks.md "The front"): SmolLM2-135M and Gemma-3-270M at five or six
# quantizations each, on the two shipped tasks, with llama.cpp. Usage: bash benchmarks/front.sh [OUT_DIR]
set -eu
cd "$(dirname "$0")/.."
G=$PWD/.venv/bin/gradprompt
OUT=${1:-/tmp/front}
P=$OUT/p
D=$PWD/toolkit/data
rm -rf "$OUT" && mkdir -p "$OUT"
$G init "$P" >/dev/null
$G --project "$P" tasks import $D/demo_topic_train.csv --name topic --split 0.4,0.6,0 --test-file $D/demo_topic_test.csv >/dev/null
$G --project "$P" tasks import $D/demo_sentiment_train.csv --name sentiment --split 0.4,0.6,0 \
  --test-file $D/demo_sentiment_test.csv >/dev/null
TOPIC=$($G --project "$P" prompts add topic "Which topic is this headline about: world, sports, business or science?" | grep -o "[0-9]\+" | head -1)
SENT=$($G --project "$P" prompts add sentiment "Answer the question." | grep -o "[0-9]\+" | head -1)
for model in smollm2-135m gemma3-270m; do
  for prompt in $TOPIC $SENT; do
    /usr/bin/time -f "%e s, peak RSS %M KB" $G --project "$P" compare "$prompt" --front --model $model \
      --quantize F16,Q8_0,Q5_K_M,Q4_K_M,Q4_0 --limit 100 > "$OUT/$model-$prompt.log" 2>&1
  done
done
