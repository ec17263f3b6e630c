"""Evaluation throughput: gradprompt's llama.cpp evaluation vs transformers generation vs raw llama-cpp-python.

Same examples (the demo task's test split), same prompt, reasoning mode (greedy chain, then the answer), on the
default model (SmolLM2-135M; llama.cpp runs its Q4_1 GGUF, torch its dequantized fp32 copy), on the CPU.
Prints a table, then one JSON object as the last line.

    python benchmarks/eval_speed.py                 # 16 examples, 48-token chains
    python benchmarks/eval_speed.py --examples 32 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=16, help="test examples (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="reasoning chain cap (default 48)")
    args = parser.parse_args()

    import llama_cpp

    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.engine.torch_backend import load_torch_model
    from toolkit.evaluate import EvalSettings, predict
    from toolkit.layout import ChatLayout
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model
    from toolkit.tasks import demo_task_files, read_task_file

    train, test = demo_task_files()
    task = read_task_file(train, name="bench", test_file=test)
    examples = task.split("test")[: args.examples]
    prompt = "proper logical reasoning and think step by step. Finally give the actual correct answer."
    info = get_model()
    settings = EvalSettings(mode="reasoning", max_new_tokens=args.max_new_tokens)

    # gradprompt's llama.cpp evaluation path (chain + extractor + label choice), one loaded model.
    model = LlamaCppModel(info)
    layout = ChatLayout(model.chat_template, model.bos_token, model.eos_token)
    predict(model, layout, task.spec, prompt, examples[0].input, settings)  # warm-up
    model.stats = {"calls": 0, "evaluated_tokens": 0, "generated_tokens": 0}
    ctx = model.llm._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    for ex in examples:
        predict(model, layout, task.spec, prompt, ex.input, settings)
    ll_s = time.perf_counter() - t0
    ll_tokens = model.stats["generated_tokens"]
    perf = llama_cpp.llama_perf_context(ctx)  # llama.cpp's own counters: every token it computed, and the time
    ll_computed = perf.n_p_eval + perf.n_eval
    ll_inside_s = (perf.t_p_eval_ms + perf.t_eval_ms) / 1000

    # llama.cpp's best per-token rate on this machine: one 512-token batch (prompt processing).
    flat = [t for ex in task.split("train")[:64] for t in model.encode(ex.input)][:512]
    model.llm.reset()
    model.llm._ctx.kv_cache_clear()
    t0 = time.perf_counter()
    model.llm.eval(flat)
    best_ms_per_token = 1000 * (time.perf_counter() - t0) / len(flat)
    model.llm.reset()
    model.llm._ctx.kv_cache_clear()

    # Raw llama-cpp-python: the same chains with create_completion, nothing else.
    prompts = []
    for ex in examples:
        before, after = layout.split(ex.input)
        prompts.append(model.encode(before) + model.encode(prompt) + model.encode(after))
    llama_cpp.llama_perf_context_reset(ctx)
    t0 = time.perf_counter()
    raw_tokens = 0
    for toks in prompts:
        out = model.llm.create_completion(prompt=toks, max_tokens=args.max_new_tokens, temperature=0.0, top_k=1)
        raw_tokens += out["usage"]["completion_tokens"]
    raw_s = time.perf_counter() - t0
    raw_perf = llama_cpp.llama_perf_context(ctx)

    # Raw llama-cpp-python doing the whole job by hand: the chain, then the extractor and a one-token answer
    # restricted to the labels' first tokens with logit_bias (the same work as gradprompt's evaluation).
    from toolkit.evaluate import REASONING_SEPARATOR
    from toolkit.layout import answer_text

    firsts = {model.encode(answer_text(label))[0]: 100.0 for label in task.spec.labels}
    extractor = model.encode(REASONING_SEPARATOR + task.spec.extractor)
    t0 = time.perf_counter()
    raw_full_tokens = 0
    for toks in prompts:
        out = model.llm.create_completion(prompt=toks, max_tokens=args.max_new_tokens, temperature=0.0, top_k=1)
        raw_full_tokens += out["usage"]["completion_tokens"]
        chain = model.encode(out["choices"][0]["text"])
        model.llm.create_completion(
            prompt=toks + chain + extractor, max_tokens=1, temperature=0.0, top_k=1, logit_bias=firsts
        )
    raw_full_s = time.perf_counter() - t0

    # gradprompt's torch backend (transformers, batched, greedy): chain, extractor and label in one pass over the
    # decoding cache, as `gradprompt eval --backend torch` runs it.
    tm = load_torch_model(info, precision="fp32", device="cpu")
    eng = GreaterEngine(
        tm,
        task.spec,
        [Item(e.input, e.answer) for e in examples],
        [],
        GreaterConfig(mode="reasoning", max_new_tokens=args.max_new_tokens, batch_size=16, steps=1),
    )
    items = [Item(e.input, e.answer) for e in examples]
    ids = eng.encode_prompt(prompt)
    t0 = time.perf_counter()
    eng.predictor.predict_items(ids, items)
    torch_s = time.perf_counter() - t0
    chains = eng.decoder.chains(ids, items)  # cached by predict_items
    torch_tokens = sum(len(c) for c in chains)

    # transformers one example at a time (model.generate per example, the common way to call it).
    eng1 = GreaterEngine(
        tm,
        task.spec,
        items,
        [],
        GreaterConfig(mode="reasoning", max_new_tokens=args.max_new_tokens, batch_size=1, steps=1),
    )
    t0 = time.perf_counter()
    for item in items:
        eng1.decoder.chains(ids, [item])
        eng1.predictor.predict_items(ids, [item])
    torch1_s = time.perf_counter() - t0

    n = len(examples)
    res = {
        "examples": n,
        "max_new_tokens": args.max_new_tokens,
        "threads": os.cpu_count(),
        "llamacpp_examples_per_s": n / ll_s,
        "torch_examples_per_s": n / torch_s,
        "ratio": (n / ll_s) / (n / torch_s),
        "torch_unbatched_examples_per_s": n / torch1_s,
        "ratio_vs_unbatched": torch1_s / ll_s,
        "raw_same_work_examples_per_s": n / raw_full_s,
        "eval_vs_raw_same_work": raw_full_s / ll_s,
        "eval_tokens_per_s": ll_tokens / ll_s,
        "raw_tokens_per_s": raw_tokens / raw_s,
        "torch_tokens_per_s": torch_tokens / torch_s,
        "eval_vs_raw": (ll_tokens / ll_s) / (raw_tokens / raw_s),
        "generated_tokens": {"llamacpp": ll_tokens, "raw": raw_tokens, "torch": torch_tokens},
        # Where the llama.cpp time goes, and the most any llama.cpp scheduling could give on this machine:
        # every token it must compute (prompt, chain, extractor) at its best batched rate.
        "llamacpp_tokens_computed_per_example": ll_computed / n,
        "llamacpp_time_inside_llama_cpp": ll_inside_s / ll_s,
        "llamacpp_best_ms_per_token": best_ms_per_token,
        "llamacpp_bound_examples_per_s": 1000 / (best_ms_per_token * ll_computed / n),
        "ratio_bound": (1000 / (best_ms_per_token * ll_computed / n)) / (n / torch_s),
        # Token-by-token decoding speed inside llama.cpp (its counters): the evaluation's generation vs raw.
        "eval_decode_tokens_per_s": 1000 * perf.n_eval / max(perf.t_eval_ms, 1e-9),
        "raw_decode_tokens_per_s": 1000 * raw_perf.n_eval / max(raw_perf.t_eval_ms, 1e-9),
    }
    print(
        f"Evaluation speed: {n} examples, reasoning mode, chains up to {args.max_new_tokens} tokens, "
        f"SmolLM2-135M on {os.cpu_count()} CPU cores"
    )
    print(f"{'path':<28}{'examples/s':>12}{'tokens/s':>10}{'tokens':>8}")
    print(f"{'gradprompt llama.cpp eval':<28}{n / ll_s:>12.2f}{ll_tokens / ll_s:>10.1f}{ll_tokens:>8}")
    print(f"{'raw llama-cpp-python':<28}{n / raw_s:>12.2f}{raw_tokens / raw_s:>10.1f}{raw_tokens:>8}")
    print(
        f"{'raw llama-cpp, same work':<28}{n / raw_full_s:>12.2f}{raw_full_tokens / raw_full_s:>10.1f}{raw_full_tokens:>8}"
    )
    print(f"{'transformers (batched)':<28}{n / torch_s:>12.2f}{torch_tokens / torch_s:>10.1f}{torch_tokens:>8}")
    print(f"{'transformers (one by one)':<28}{n / torch1_s:>12.2f}{torch_tokens / torch1_s:>10.1f}{torch_tokens:>8}")
    print(
        f"llama.cpp/transformers = {res['ratio']:.2f}x (batched), {res['ratio_vs_unbatched']:.2f}x (one by one); "
        f"eval at {100 * res['eval_vs_raw']:.0f}% of raw chain-only tokens/s, "
        f"{100 * res['eval_vs_raw_same_work']:.0f}% of raw llama-cpp-python doing the same work (examples/s)"
    )
    print(
        f"llama.cpp computes {res['llamacpp_tokens_computed_per_example']:.0f} tokens per example "
        f"({100 * res['llamacpp_time_inside_llama_cpp']:.0f}% of the evaluation's time is inside llama.cpp); "
        f"at its best batched rate ({best_ms_per_token:.2f} ms/token) that is at most "
        f"{res['llamacpp_bound_examples_per_s']:.2f} examples/s = {res['ratio_bound']:.2f}x the batched torch backend"
    )
    print(
        f"token-by-token decoding inside llama.cpp: evaluation {res['eval_decode_tokens_per_s']:.1f} tokens/s, "
        f"raw {res['raw_decode_tokens_per_s']:.1f} tokens/s"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
