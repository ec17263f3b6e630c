"""GReaTer engine on a tiny random-weight model (fast) sharing the real tokenizer."""

import math
import random
import threading

import pytest

from toolkit.engine.final import _calibrating, final_reserve
from toolkit.engine.forward import Forward
from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
from toolkit.engine.search import _next_position, _suffix_scores, deployable, swap
from toolkit.tasks import AnswerSpec

SPEC = AnswerSpec(kind="label", labels=("negative", "positive"))
TRAIN = [
    Item(f"review number {i}: {'great' if i % 2 else 'awful'} film", "positive" if i % 2 else "negative")
    for i in range(6)
]
PROMPT = "Decide the sentiment carefully."


def engine(tm, **kw):
    cfg = GreaterConfig(
        **{"steps": 4, "n_train": 6, "n_dev": 4, "topk": 8, "topq": 3, "intersect": 2, "batch_size": 4, **kw}
    )
    return GreaterEngine(tm, SPEC, TRAIN, TRAIN[:4], cfg)


def test_onehot_gradient_matches_finite_differences(tiny_tm):
    import torch

    tm = tiny_tm
    tm.model.double()
    try:
        eng = engine(tm)
        prompt = eng.encode_prompt(PROMPT)
        pos = 2
        cands = sorted({prompt[pos], *eng.proposer.propose(prompt, pos, random.Random(0))})[:6]
        grad = eng.proposer.gradient(prompt, pos, cands, normalize=False)
        base = torch.zeros(len(cands), dtype=torch.float64)
        base[cands.index(prompt[pos])] = 1.0
        eps = 1e-3  # LlamaRMSNorm computes in float32, so smaller steps drown in rounding
        fds = []
        for i in range(len(cands)):
            e = torch.zeros_like(base)
            e[i] = eps
            with torch.no_grad():
                fd = (
                    eng.proposer.onehot_loss(prompt, pos, cands, base + e)
                    - eng.proposer.onehot_loss(prompt, pos, cands, base - e)
                ) / (2 * eps)
            fds.append(float(fd))
        fds = torch.tensor(fds, dtype=torch.float64)
        assert grad.abs().max() > 1e-3
        assert torch.allclose(fds, grad, atol=1e-4, rtol=1e-2), (fds, grad)
        assert float(torch.nn.functional.cosine_similarity(fds, grad, dim=0)) > 0.999
    finally:
        tm.model.float()


def test_proposal_respects_filter_and_previous_token_ban(tiny_tm):
    import re

    eng = engine(tiny_tm)
    prompt = eng.encode_prompt(PROMPT)
    for pos in (1, 3):
        cands = eng.proposer.propose(prompt, pos, random.Random(pos))
        assert prompt[pos] in cands  # the current token always competes
        others = [c for c in cands if c != prompt[pos]]
        assert len(others) >= 1
        assert prompt[pos - 1] not in others
        pattern = re.compile(eng.config.token_filter)
        assert all(pattern.match(eng.decode([c])) for c in others)


def test_custom_token_filter_allows_digits(tiny_tm):
    eng = engine(tiny_tm, token_filter=r"^ ?[0-9]+$")
    prompt = eng.encode_prompt(PROMPT)
    cands = [c for c in eng.proposer.propose(prompt, 2, random.Random(0)) if c != prompt[2]]
    assert cands and all(eng.decode([c]).strip().isdigit() for c in cands)


@pytest.mark.slow  # a multi-step search
def test_improved_schedule_never_accepts_a_worse_score(tiny_tm):
    eng = engine(tiny_tm, steps=6)
    state = eng.initial_state(PROMPT)
    previous = eng.scorer.score_prompts([state["prompt_ids"]])[0].value
    records = list(eng.run(state))
    assert len(records) == 6
    for r in records:
        assert r["train_score"] <= previous + 1e-9
        previous = r["train_score"]
    assert all(len(r["candidates"]) >= 1 for r in records)


@pytest.mark.slow  # three searches
def test_same_seed_same_prompt_and_resume_matches_uninterrupted(tiny_tm):
    full = list(engine(tiny_tm, steps=5).run(engine(tiny_tm).initial_state(PROMPT)))
    again = list(engine(tiny_tm, steps=5).run(engine(tiny_tm).initial_state(PROMPT)))
    assert [r["prompt_ids"] for r in full] == [r["prompt_ids"] for r in again]
    # Stop after 2 steps, then continue from the stored state with a fresh engine (empty caches).
    stop = threading.Event()
    first = []
    for rec in engine(tiny_tm, steps=5).run(engine(tiny_tm).initial_state(PROMPT), stop=stop):
        first.append(rec)
        if len(first) == 2:
            stop.set()
    assert len(first) == 2
    rest = list(engine(tiny_tm, steps=5).run(first[-1]["state"]))
    assert [r["step"] for r in rest] == [2, 3, 4]
    assert rest[-1]["prompt_ids"] == full[-1]["prompt_ids"]
    assert [r["candidates"] for r in first + rest] == [r["candidates"] for r in full]


def test_reasoning_mode_generates_chains_and_steps(tiny_tm):
    eng = engine(tiny_tm, mode="reasoning", steps=1, max_new_tokens=4, n_train=3)
    prompt = eng.encode_prompt(PROMPT)
    chains = eng.decoder.chains(prompt)
    assert len(chains) == 3 and all(len(c) <= 4 for c in chains)
    assert eng.decoder.chains(prompt) is chains  # cached by prompt
    records = list(eng.run(eng.initial_state(PROMPT)))
    assert len(records) == 1 and records[0]["timings"]["gradient"] > 0


@pytest.mark.parametrize("precision", ["8bit", "4bit"])
@pytest.mark.slow  # bitsandbytes models built in the test
def test_bitsandbytes_models_produce_correct_gradients(tiny_tm, tmp_path, precision):
    """The gradient through a bitsandbytes model equals the fp32 gradient with the same (dequantized) weights.

    Regression: on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights on the first no-grad forward (the
    engine's proposal) and then multiplies with a kernel that has no backward, so gradients were silently
    wrong (cosine 0.93 here).
    """
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from toolkit.engine.torch_backend import TorchModel

    tiny_tm.model.save_pretrained(tmp_path / "tiny")
    qc = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        if precision == "4bit"
        else BitsAndBytesConfig(load_in_8bit=True)
    )
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "tiny", quantization_config=qc, device_map={"": "cpu"}, dtype=torch.float32
    ).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # The same network in fp32 with the quantized weights dequantized.
    ref = type(tiny_tm.model)(tiny_tm.model.config).eval()
    ref.load_state_dict(tiny_tm.model.state_dict())
    layers = dict(ref.named_modules())
    n_quantized = 0
    for name, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            layers[name].weight.data = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
        elif isinstance(m, bnb.nn.Linear8bitLt):
            layers[name].weight.data = m.weight.data.float() * m.weight.SCB.float().unsqueeze(1) / 127
        else:
            continue
        n_quantized += 1
    assert n_quantized == 14  # 7 linear layers x 2 blocks
    for p in ref.parameters():
        p.requires_grad_(False)

    grads, cands = [], None
    for m in (model, ref):
        tm = TorchModel(
            model=m, tokenizer=tiny_tm.tokenizer, info=tiny_tm.info, sha256="tiny", precision=precision, device="cpu"
        )
        eng = engine(tm)
        prompt = eng.encode_prompt(PROMPT)
        if cands is None:  # the same candidates for both (near-ties in a random model's logits may differ)
            cands = sorted(set(eng.proposer.propose(prompt, 1, random.Random(0))))
        grads.append(eng.proposer.gradient(prompt, 1, cands, normalize=False))
    qg, rg = grads
    assert torch.isfinite(qg).all() and qg.abs().max() > 0
    cos = float(torch.nn.functional.cosine_similarity(qg, rg, dim=0))
    assert cos > 0.9999, cos


@pytest.mark.parametrize("mode", ["direct", "reasoning"])
@pytest.mark.slow  # the naive execution is slow by design
def test_naive_and_fast_execution_choose_the_same_tokens(tiny_tm, mode):
    kw = {"steps": 3, "mode": mode, "max_new_tokens": 4, "n_train": 4}
    fast = list(engine(tiny_tm, **kw).run(engine(tiny_tm, **kw).initial_state(PROMPT)))
    naive_engine = engine(tiny_tm, execution="naive", **kw)
    naive = list(naive_engine.run(naive_engine.initial_state(PROMPT)))
    assert [r["prompt_ids"] for r in fast] == [r["prompt_ids"] for r in naive]
    assert [[c["token"] for c in r["candidates"]] for r in fast] == [
        [c["token"] for c in r["candidates"]] for r in naive
    ]
    for a, b in zip(fast, naive):
        assert a["train_score"] == pytest.approx(b["train_score"], abs=1e-4)


def test_reference_schedule_runs_and_keeps_published_rule(tiny_tm):
    eng = engine(tiny_tm, schedule="reference", steps=3)
    records = list(eng.run(eng.initial_state(PROMPT)))
    # The reference takes the best of the gradient's top candidates, even when it is worse than the current token.
    for r in records:
        assert len(r["candidates"]) == 3
        best = min(r["candidates"], key=lambda c: c["score"])
        assert r["chosen_token"] == best["text"] and r["train_score"] == best["score"]


def test_out_of_memory_halves_the_batch_and_says_so(tiny_tm, monkeypatch):
    eng = engine(tiny_tm, steps=1, batch_size=8)
    real = Forward.selected

    def limited(self, seqs, *args, **kwargs):
        if len(seqs) > 2:
            raise RuntimeError("CPU out of memory: tried to allocate 1 GB")
        return real(self, seqs, *args, **kwargs)

    monkeypatch.setattr(Forward, "selected", limited)
    records = list(eng.run(eng.initial_state(PROMPT)))
    assert eng.forward.batch_size <= 2
    assert any(f"batch size lowered to {eng.forward.batch_size}" in e for e in records[0]["events"])
    reference = list(engine(tiny_tm, steps=1, batch_size=8).run(engine(tiny_tm).initial_state(PROMPT)))
    monkeypatch.undo()
    assert records[0]["prompt_ids"] == reference[0]["prompt_ids"]


def test_shared_prefix_cache_is_exact(tiny_tm):
    import torch

    with_cache, without = engine(tiny_tm), engine(tiny_tm, prefix_cache=False)
    prompt = with_cache.encode_prompt(PROMPT)
    a = with_cache.scorer.score_prompts([prompt])[0]
    b = without.scorer.score_prompts([prompt])[0]
    assert with_cache.stats["prefix_tokens_reused"] > 0 and without.stats["prefix_tokens_reused"] == 0
    assert a.accuracy == b.accuracy
    assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.fluency_nll == pytest.approx(b.fluency_nll, rel=1e-4)
    cands = with_cache.proposer.propose(prompt, 2, random.Random(0))
    assert cands == without.proposer.propose(prompt, 2, random.Random(0))
    ga = with_cache.proposer.gradient(prompt, 2, cands, normalize=False)
    gb = without.proposer.gradient(prompt, 2, cands, normalize=False)
    assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("mode", ["direct", "reasoning"])
@pytest.mark.slow  # searches with and without racing
def test_candidate_racing_is_exact_and_skips_work(tiny_tm, mode):
    """Racing drops hopeless candidates early; the chosen prompts and scores are those of a full scoring."""
    # Direct mode scores single swaps on the cached prefix instead (all at once, nothing to race): test the
    # racing scorer there with that saving off.
    kw = {"steps": 4, "mode": mode, "max_new_tokens": 3, "n_train": 6, "batch_size": 2, "suffix_kv": False, "fresh": 0}
    raced = engine(tiny_tm, race=True, race_chunk=1, **kw)
    full = engine(tiny_tm, race=False, **kw)
    a = list(raced.run(raced.initial_state(PROMPT)))
    b = list(full.run(full.initial_state(PROMPT)))
    assert [r["prompt_ids"] for r in a] == [r["prompt_ids"] for r in b]
    assert [r["train_score"] for r in a] == pytest.approx([r["train_score"] for r in b], abs=1e-6)
    assert raced.stats["raced_out"] > 0 and raced.stats["race_examples_skipped"] > 0  # it really raced
    for ra, rb in zip(a, b):
        full_by_token = {c["token"]: c for c in rb["candidates"]}
        for c in ra["candidates"]:
            if "score" not in c:  # reasoning mode: pre-ranked only (no fresh chains), in both runs
                assert "score" not in full_by_token[c["token"]]
                continue
            if "raced_after" in c:  # a lower bound that already loses to the chosen score, never chosen
                assert 1 <= c["raced_after"] < 6
                assert c["score"] <= full_by_token[c["token"]]["score"] + 1e-6
                assert c["score"] >= ra["train_score"] - 1e-6
            else:
                assert c["score"] == pytest.approx(full_by_token[c["token"]]["score"], abs=1e-6)


def test_chains_cache_is_keyed_by_the_examples_not_the_list_object(tiny_tm, monkeypatch):
    """Regression: the chain cache was keyed by id(items); a new list reusing a freed list's id got the old
    list's chains (the one-by-one torch evaluation measured cached chains for every example)."""
    eng = engine(tiny_tm, mode="reasoning", max_new_tokens=4)
    calls = []

    def fake_generate(prompt, items):  # a chain that names its example, so a wrong cache hit shows
        calls.append([it.input for it in items])
        return [eng.tm.encode(it.input)[:3] for it in items]

    monkeypatch.setattr(eng.decoder, "generate_chains", fake_generate)
    prompt = eng.encode_prompt(PROMPT)
    items = [Item(f"example number {i}", "positive") for i in range(6)]
    got = [eng.decoder.chains(prompt, [item])[0] for item in items]  # temporary lists: CPython reuses their ids
    assert got == [eng.tm.encode(it.input)[:3] for it in items]
    assert len(calls) == 6
    assert eng.decoder.chains(prompt, [items[2]])[0] == got[2] and len(calls) == 6  # same examples: a real cache hit


@pytest.mark.slow  # three 4-step searches
def test_dev_scores_every_n_steps_are_reported_and_never_steer(tiny_tm):
    plain = engine(tiny_tm, steps=4)
    with_dev = engine(tiny_tm, steps=4, dev_every=2)
    a = list(plain.run(plain.initial_state(PROMPT)))
    b = list(with_dev.run(with_dev.initial_state(PROMPT)))
    assert [r["prompt_ids"] for r in a] == [r["prompt_ids"] for r in b]
    assert [r["dev_accuracy"] is None for r in a] == [True] * 4
    assert [r["dev_accuracy"] is not None for r in b] == [False, True, False, True]
    fresh = engine(tiny_tm)
    for r in b[1::2]:
        assert r["dev_accuracy"] == fresh.scorer.score_prompts([r["prompt_ids"]], items=fresh.dev)[0].accuracy
        assert "dev" in r["timings"]


def test_extractor_from_the_decoding_cache_equals_a_full_forward(real_tm):
    """Reasoning mode scores the extractor and answer on top of the decoding KV cache; chains of different
    lengths (early stops leave masked gaps) must give the chains and terms of generate + a full forward."""
    eng = GreaterEngine(
        real_tm, SPEC, TRAIN, [], GreaterConfig(mode="reasoning", max_new_tokens=10, n_train=6, batch_size=8)
    )
    eng.text.stop_ids |= {real_tm.encode(".")[-1], real_tm.encode(",")[-1]}  # so rows stop at different steps
    prompts = [eng.encode_prompt(PROMPT), eng.encode_prompt("Think step by step, then answer.")]
    pairs = [(p, item) for p in prompts for item in TRAIN[:4]]
    chains = eng.decoder.generate_pairs(pairs)
    terms = eng.scorer.item_terms([(p, item, ch) for (p, item), ch in zip(pairs, chains)])
    chains_kv, terms_kv = eng.decoder.chains_and_terms(pairs)
    assert len({len(c) for c in chains}) > 1  # the masked-gap path is exercised
    assert chains_kv == chains
    for (loss, nll, correct), (loss_kv, nll_kv, correct_kv) in zip(terms, terms_kv):
        assert float(loss_kv) == pytest.approx(float(loss), abs=1e-3)
        assert float(nll_kv) == pytest.approx(float(nll), abs=1e-3)
        assert correct_kv == correct


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.slow  # runs in three precisions
def test_half_precision_gradients_follow_fp32_and_runs_complete(tiny_tm, dtype):
    """bf16/fp16 (what `--precision bf16/fp16` loads): the gradient points where the fp32 one does and a
    short run completes with finite scores."""
    import copy

    import torch

    from toolkit.engine.torch_backend import TorchModel

    half = copy.deepcopy(tiny_tm.model).to(getattr(torch, dtype))
    htm = TorchModel(
        model=half,
        tokenizer=tiny_tm.tokenizer,
        info=tiny_tm.info,
        sha256="tiny",
        precision={"bfloat16": "bf16", "float16": "fp16"}[dtype],
        device="cpu",
    )
    full, low = engine(tiny_tm, steps=2), engine(htm, steps=2)
    prompt = full.encode_prompt(PROMPT)
    cands = sorted(set(full.proposer.propose(prompt, 1, random.Random(0))))
    g32 = full.proposer.gradient(prompt, 1, cands, normalize=False)
    g16 = low.proposer.gradient(prompt, 1, cands, normalize=False)
    assert g16.dtype == torch.float32 and torch.isfinite(g16).all()
    assert float(torch.nn.functional.cosine_similarity(g16.double(), g32.double(), dim=0)) > 0.95
    records = list(low.run(low.initial_state(PROMPT)))
    assert len(records) == 2 and all(math.isfinite(r["train_score"]) for r in records)


def test_scoring_fresh_prompts_on_the_decoding_cache_matches_the_full_forward(real_tm):
    """score_prompts (dev scoring, the first step, after a resume) decodes uncached chains and scores them in
    one pass; the scores equal those of generate + a full forward."""
    kw = dict(mode="reasoning", max_new_tokens=8, n_train=4, batch_size=8)
    kv = GreaterEngine(real_tm, SPEC, TRAIN, TRAIN[2:6], GreaterConfig(**kw))
    full = GreaterEngine(real_tm, SPEC, TRAIN, TRAIN[2:6], GreaterConfig(extractor_kv=False, **kw))
    prompts = [kv.encode_prompt(PROMPT), kv.encode_prompt("Answer with one word.")]
    for items in (None, kv.dev):
        a = kv.scorer.score_prompts(prompts, items=items)
        b = full.scorer.score_prompts(prompts, items=items)
        for x, y in zip(a, b):
            assert x.accuracy == y.accuracy
            assert x.value == pytest.approx(y.value, abs=1e-4)
    assert kv.decoder.chains(prompts[1], kv.dev) == full.decoder.chains(prompts[1], full.dev)  # cached by the one pass


def test_reasoning_label_prediction_on_the_decoding_cache_matches_the_full_forward(real_tm, monkeypatch):
    """Evaluation in reasoning mode: chain, extractor and label in one pass equal generate + a full forward."""
    from toolkit.engine.greater import GreaterConfig, GreaterEngine
    from toolkit.tasks import AnswerSpec

    spec = AnswerSpec(
        kind="label",
        labels=("negative", "positive"),
        extractor="Therefore, the final answer (one of: negative, positive) is",
    )
    items = [
        Item(t, a)
        for t, a in [
            ("A wonderful film.", "positive"),
            ("Dull and long.", "negative"),
            ("I loved it.", "positive"),
            ("What a mess.", "negative"),
            ("Not bad at all.", "positive"),
            ("Boring.", "negative"),
        ]
    ]
    kv = GreaterEngine(
        real_tm, spec, items, [], GreaterConfig(mode="reasoning", max_new_tokens=10, steps=1, batch_size=4)
    )
    full = GreaterEngine(
        real_tm,
        spec,
        items,
        [],
        GreaterConfig(mode="reasoning", max_new_tokens=10, steps=1, batch_size=4, extractor_kv=False),
    )
    prompt = kv.encode_prompt("Think briefly, then answer.")
    expected, expected_chains = full.predictor.predict_items(prompt, items), full.decoder.chains(prompt, items)

    def no_generate(*args, **kwargs):
        raise AssertionError("generate called: the decoding-cache path was not used")

    monkeypatch.setattr(real_tm.model, "generate", no_generate)
    assert kv.predictor.predict_items(prompt, items) == expected
    assert kv.decoder.chains(prompt, items) == expected_chains  # cached by predict_items, and the same chains


# ---------------------------------------------------------------------------------------------- the wide search

NUMBER_SPEC = AnswerSpec(kind="number")
NUMBER_TRAIN = [Item(f"what is {i} plus {i}?", str(2 * i)) for i in range(1, 6)]


@pytest.mark.parametrize("spec,items", [(SPEC, TRAIN), (NUMBER_SPEC, NUMBER_TRAIN)], ids=["label", "number"])
@pytest.mark.parametrize("where", ["first", "middle", "last", "grown"])
def test_suffix_scoring_equals_full_sequence_scoring(tiny_tm, spec, items, where):
    """Scoring candidates on each example's cached prefix gives the terms of scoring each full sequence."""
    eng = GreaterEngine(
        tiny_tm, spec, items, [], GreaterConfig(n_train=len(items), batch_size=2, topk=8, topq=3, intersect=2)
    )
    prompt = eng.encode_prompt(PROMPT)
    if where == "grown":
        prompt = prompt + [eng.tm.encode(" _")[-1]]
    pos = {"first": 0, "middle": 2, "last": len(prompt) - 1, "grown": len(prompt) - 1}[where]
    cands = sorted(set(eng.proposer.propose(prompt, pos, random.Random(0))))[:7]
    assert len(cands) > eng.forward.batch_size  # several suffix groups and example chunks
    fast = eng.scorer.suffix_terms(prompt, pos, cands)
    for c, rows in zip(cands, fast):
        p = list(prompt)
        p[pos] = c
        full = eng.scorer.item_terms([(p, item, []) for item in items])
        for (l1, n1, c1), (l2, n2, c2) in zip(rows, full):
            assert c1 == c2
            assert float(l1) == pytest.approx(float(l2), abs=1e-4)
            assert float(n1) == pytest.approx(float(n2), abs=1e-4)


@pytest.mark.slow  # two searches
def test_suffix_scoring_and_plain_scoring_choose_the_same(tiny_tm):
    kw = {"steps": 5, "width": 6, "probe": 2}
    fast, plain = engine(tiny_tm, **kw), engine(tiny_tm, suffix_kv=False, race=False, **kw)
    a = list(fast.run(fast.initial_state(PROMPT)))
    b = list(plain.run(plain.initial_state(PROMPT)))
    assert [r["prompt_ids"] for r in a] == [r["prompt_ids"] for r in b]
    assert [[c["token"] for c in r["candidates"]] for r in a] == [[c["token"] for c in r["candidates"]] for r in b]
    for ra, rb in zip(a, b):
        assert [c["score"] for c in ra["candidates"]] == pytest.approx([c["score"] for c in rb["candidates"]], abs=1e-6)


def test_wide_search_scores_width_plus_probe_and_stores_rank_agreement(tiny_tm):
    eng = engine(tiny_tm, steps=3, width=5, probe=3, pool=16)
    records = list(eng.run(eng.initial_state(PROMPT)))
    for r in records:
        s = r["search"]
        assert (
            s["pool"] + s["dropped_roundtrip"] >= 10 and s["scored"] == len(r["candidates"]) <= s["width"] + s["probe"]
        )
        if s["pool"] > s["width"] + 3:  # a probe needs proposals beyond the gradient's top
            assert sum(c["probe"] for c in r["candidates"]) == s["probe"] == 3
        else:
            assert sum(c["probe"] for c in r["candidates"]) == s["probe"]
        ranks = [c["rank"] for c in r["candidates"] if not c["probe"]]
        assert ranks == list(range(len(ranks)))  # the gradient's top, in order
        assert all(c["rank"] >= len(ranks) for c in r["candidates"] if c["probe"])
        assert s["agreement"] is None or -1 <= s["agreement"] <= 1
        assert s["better"] == sum(1 for c in r["candidates"] if c["score"] < s["bound"])
    assert any(r["search"]["agreement"] is not None for r in records)
    assert any(r["search"]["probe"] == 3 for r in records)


def test_every_scored_candidate_round_trips_through_its_text(tiny_tm):
    eng = engine(tiny_tm, steps=4, width=8, pool=24, token_filter=r"^.+$")  # any token: many do not round-trip
    prompt = eng.encode_prompt(PROMPT)
    proposed = eng.proposer.propose(prompt, 1, random.Random(1))
    kept = deployable(eng.parts, prompt, 1, proposed)
    assert len(kept) < len(proposed)  # the filter does drop some with this token filter
    item = eng.train[0]
    before, after = eng.text.layout.split(item.input)

    def in_place(p):  # the whole rendered text tokenizes to the engine's sequence: what a server would see
        return eng.tm.encode(before + eng.decode(p) + after) == eng.text.split(item.input) + p + eng.text.after_ids

    for c in kept:
        p = list(prompt)
        p[1] = c
        assert eng.encode_prompt(eng.decode(p)) == p and in_place(p)
    # at the first position, a token that starts with a space merges with the blank line before the prompt
    first = deployable(eng.parts, prompt, 0, eng.proposer.propose(prompt, 0, random.Random(1)))
    dropped = [t for t in eng.proposer.propose(prompt, 0, random.Random(1)) if t not in first]
    assert any(eng.decode([t]).startswith(" ") for t in dropped)
    assert not any(eng.decode([t]).startswith((" ", "\n")) for t in first if t != prompt[0])
    for r in eng.run(eng.initial_state(PROMPT)):
        assert eng.encode_prompt(eng.decode(r["prompt_ids"])) == r["prompt_ids"] and in_place(r["prompt_ids"])


def test_schedule_never_repeats_a_state_and_stops_with_a_reason(tiny_tm):
    """Run to convergence on a short prompt: no (position, prompt) is searched twice, a fruitless sweep is
    followed by another position, a pair step or a stop with its reason."""
    eng = engine(tiny_tm, steps=200, width=3, probe=1, pool=8, max_prompt_tokens=5)
    records = list(eng.run(eng.initial_state("Decide now.")))
    assert len(records) < 200  # it stopped early
    keys = [(r["position"], tuple(eng.encode_prompt(r["prompt_before"])), r["search"]["kind"]) for r in records]
    assert len(keys) == len(set(keys))
    last = records[-1]
    assert last["search"]["stop_reason"].startswith("converged") and last["state"]["done"]
    assert list(eng.run(last["state"])) == []  # a finished search does not start again
    for prev, nxt in zip(records, records[1:]):  # after a step that changed nothing, the position moves on
        if not prev["accepted"]:
            assert (nxt["position"], nxt["search"]["kind"]) != (prev["position"], prev["search"]["kind"])
    assert all(not r["accepted"] or r["train_score"] < r["search"]["bound"] for r in records)


@pytest.mark.slow  # a multi-step search
def test_rejected_growth_is_not_stored_as_a_change(tiny_tm):
    eng = engine(tiny_tm, steps=40, width=2, probe=0, pool=6, max_prompt_tokens=12)
    records = list(eng.run(eng.initial_state("Decide now")))  # no full stop: the sweep ends with a growth step
    grows = [r for r in records if r["search"]["kind"] == "grow"]
    assert grows
    for r in grows:
        assert r["accepted"] == (len(r["prompt_ids"]) > len(eng.encode_prompt(r["prompt_before"])))
        if not r["accepted"]:
            assert r["prompt_after"] == r["prompt_before"] and r["chosen_token"] == ""


@pytest.mark.slow  # a multi-step search
def test_a_prompt_ending_in_a_full_stop_can_grow_a_second_sentence(tiny_tm):
    """After the last position of a prompt ending in "." the improved schedule tries one more token (the
    reference wraps to the start instead), so a start like "Answer the question." is not held at its length;
    never beyond max_prompt_tokens. Off with grow_past_stop=False."""
    n = len(engine(tiny_tm).encode_prompt("Decide now."))
    for past in (True, False):
        eng = engine(tiny_tm, max_prompt_tokens=n + 1, grow_past_stop=past)
        prompt = eng.encode_prompt("Decide now.")
        assert "." in eng.decode([prompt[-1]])
        ids = ",".join(map(str, prompt))
        state = {"visited": [f"{p}:{ids}" for p in range(n)], "sweep_best": []}
        _next_position(eng.parts, state, {"search": {}}, prompt, n - 1)
        assert state["pos"] == (n if past else 0)
        longest = prompt + [prompt[0]]  # at the cap: no growth
        ids = ",".join(map(str, longest))
        state = {"visited": [f"{p}:{ids}" for p in range(n + 1)], "sweep_best": []}
        _next_position(eng.parts, state, {"search": {}}, longest, n)
        assert state["pos"] != n + 1
    # In a run, every growth step adds at the end and the cap holds.
    eng = engine(tiny_tm, steps=30, width=2, probe=0, pool=6, max_prompt_tokens=n + 1)
    records = list(eng.run(eng.initial_state("Decide now.")))
    for r in records:
        if r["search"]["kind"] == "grow":
            assert r["position"] == len(eng.encode_prompt(r["prompt_before"]))
        assert len(r["prompt_ids"]) <= n + 1


def test_one_more_right_answer_outweighs_any_fluency_or_loss(tiny_tm):
    eng = engine(tiny_tm, n_train=6)
    n = 6
    for k in range(n):
        worse = eng.scorer.score_value(k / n, nll=0.0, loss=0.0, n=n)
        better = eng.scorer.score_value((k + 1) / n, nll=1e6, loss=1e6, n=n)
        assert better < worse
    # Among equal accuracies, fluency and loss decide.
    assert eng.scorer.score_value(0.5, 2.0, 1.0, n) < eng.scorer.score_value(0.5, 4.0, 1.0, n)
    assert eng.scorer.score_value(0.5, 2.0, 1.0, n) < eng.scorer.score_value(0.5, 2.0, 3.0, n)
    ref = engine(tiny_tm, schedule="reference")  # the published score lets fluency outweigh an answer
    assert ref.scorer.score_value(4 / 6, 20.0, 0.0, 6) > ref.scorer.score_value(3 / 6, 0.0, 0.0, 6)


UNEVEN = [  # 4 positive, 2 negative: a prompt answering "positive" to all gets 4/6 plainly but 1/2 balanced
    Item(f"review {i}: {'great' if i < 4 else 'awful'} film", "positive" if i < 4 else "negative") for i in range(6)
]


def uneven_engine(tm, **kw):
    cfg = GreaterConfig(**{"steps": 4, "n_train": 6, "n_dev": 0, "topk": 8, "topq": 3, "intersect": 2, **kw})
    return GreaterEngine(tm, SPEC, UNEVEN, [], cfg)


def test_balanced_objective_weighs_every_label_the_same(tiny_tm):
    eng = uneven_engine(tiny_tm)
    assert (
        eng.scorer.balanced
        and eng.scorer.weights == pytest.approx([1 / 8] * 4 + [1 / 4] * 2)
        and sum(eng.scorer.weights) == 1
    )
    assert eng.scorer.granularity == pytest.approx(1 / 8)  # 1 / (2 labels x lcm(4, 2))
    majority = [(0.1, 1.0, i < 4) for i in range(6)]  # right on every "positive", wrong on both "negative"
    mixed = [(0.1, 1.0, i in (0, 1, 2, 4)) for i in range(6)]  # the same 4/6, one of each label wrong
    a, b = eng.scorer.score_of(majority, eng.train), eng.scorer.score_of(mixed, eng.train)
    assert a.accuracy == b.accuracy == pytest.approx(4 / 6)
    assert a.objective_accuracy == pytest.approx(0.5) and b.objective_accuracy == pytest.approx(0.625)
    assert b.value < a.value  # the prompt that answers both labels wins at equal plain accuracy
    # One more balanced unit outweighs any fluency or loss (the tie-break stays below the granularity).
    for k in range(8):
        worse = eng.scorer.score_value(k / 8, nll=0.0, loss=0.0, n=6, granularity=eng.scorer.granularity)
        better = eng.scorer.score_value((k + 1) / 8, nll=1e6, loss=1e6, n=6, granularity=eng.scorer.granularity)
        assert better < worse
    # Off on request, on balanced data, and for tasks without labels: the plain error rate.
    plain = uneven_engine(tiny_tm, objective="accuracy")
    assert not plain.scorer.balanced and plain.scorer.score_of(
        majority, plain.train
    ).objective_accuracy == pytest.approx(4 / 6)
    assert not engine(tiny_tm).scorer.balanced
    ref = uneven_engine(tiny_tm, schedule="reference")
    assert not ref.scorer.balanced
    with pytest.raises(Exception, match="objective"):
        GreaterConfig(objective="f1")


def test_racing_and_every_scoring_path_agree_under_the_balanced_objective(tiny_tm):
    """Racing drops a candidate only when its weighted partial score already reaches the bound; the full
    scores are the same floats on every path (race, plain, suffix KV, naive)."""
    eng = uneven_engine(tiny_tm, race_chunk=2)
    base = eng.encode_prompt(PROMPT)
    pos = 1
    toks = sorted({base[pos], *eng.proposer.propose(base, pos, random.Random(0))})[:8]
    prompts = [swap(base, pos, t) for t in toks]
    plain = GreaterEngine(tiny_tm, SPEC, UNEVEN, [], GreaterConfig(**{**eng.config.to_dict(), "race": False}))
    full = plain.scorer.score_prompts(prompts)
    # a bound some candidates reach within the first examples (the "positive" ones, weighing 1/8 each)
    bound = 0.3
    raced = eng.scorer.race_prompts(prompts, bound)
    assert any(r.raced for r in raced)
    for r, f in zip(raced, full):
        if r.raced:
            assert bound <= r.value <= f.value + 1e-12
        else:
            assert r.value == f.value and r.objective_accuracy == f.objective_accuracy
    fast = _suffix_scores(uneven_engine(tiny_tm).parts, base, pos, toks)
    naive = _suffix_scores(uneven_engine(tiny_tm, execution="naive").parts, base, pos, toks)
    for t, f in zip(toks, full):
        assert fast[t].objective_accuracy == naive[t].objective_accuracy == f.objective_accuracy
        assert fast[t].value == pytest.approx(f.value, abs=1e-6) and naive[t].value == pytest.approx(f.value, abs=1e-6)
    assert min(toks, key=lambda t: (fast[t].value, t)) == min(toks, key=lambda t: (naive[t].value, t))


def test_random_ranking_ablation_uses_no_gradient(tiny_tm, monkeypatch):
    eng = engine(tiny_tm, steps=2, rank="random", width=4, probe=0)

    def no_gradient(*a, **k):
        raise AssertionError("the ablation must not compute the gradient")

    monkeypatch.setattr(eng.proposer, "gradient", no_gradient)
    records = list(eng.run(eng.initial_state(PROMPT)))
    assert len(records) == 2 and all(r["search"]["agreement"] is None for r in records)
    assert all(c["grad"] is None for r in records for c in r["candidates"])


def test_final_choice_keeps_the_initial_prompt_unless_significantly_better(tiny_tm, monkeypatch):
    dev = [Item(f"dev review {i}", "positive" if i % 2 else "negative") for i in range(20)]
    eng = GreaterEngine(
        tiny_tm,
        SPEC,
        TRAIN,
        dev,
        GreaterConfig(steps=2, n_train=6, n_dev=20, topk=8, topq=3, intersect=2, dev_top=3, calibrate="none"),
    )
    state = eng.initial_state(PROMPT)
    initial = state["initial_ids"]
    others = [eng.encode_prompt(t) for t in ("Decide the sentiment now.", "Say it.", "Label the review.", "Guess.")]
    state["top"] = [[0.1, others[0]], [0.2, others[1]], [0.3, initial], [0.4, others[2]], [0.5, others[3]]]
    answers = {}  # prompt -> number of dev examples right (the first ones)

    def fake_predict(prompt, items):
        k = answers[tuple(prompt)]
        return [(i < k, None) for i in range(len(items))]

    monkeypatch.setattr(eng.predictor, "predict_items", fake_predict)
    answers.update(
        {tuple(initial): 8, tuple(others[0]): 10, tuple(others[1]): 9, tuple(others[2]): 8, tuple(others[3]): 20}
    )
    res = eng.finish(state)  # +2 over the initial prompt: not significant; others[3] is not among the top 3 others
    assert res.prompt_ids == initial and not res.selection["significant"]
    assert res.selection["compared"] == 3 and "kept" in res.selection["reason"]
    answers[tuple(others[1])] = 16  # +8, 0 broken: one-sided p = 1/256 < its level as second (0.05 x 0.25)
    res = eng.finish(state)
    assert res.prompt_ids == others[1] and res.selection["significant"]
    assert res.dev_accuracy == 16 / 20
    assert res.selection["order"] == [0, 1, 2]  # the pre-declared order: training scores


def test_the_final_choice_adopts_a_calibrated_start_where_the_start_has_a_label_bias(tiny_tm, monkeypatch):
    """A start that answers "negative" for everything (a constant bias of 2 nats the evidence never beats):
    the batch calibration fitted on the training rows alone fixes the decision, the dev test adopts the
    calibrated start; with calibrate="none" the start is kept. The calibration sees training rows only."""
    dev = [Item(f"dev review {i}", "positive" if i % 2 else "negative") for i in range(40)]
    train = [Item(f"train review {i}", "positive" if i % 2 else "negative") for i in range(12)]

    def scores(prompt, items):  # the other prompts fit the training rows perfectly and say "negative" on dev
        assert all(item.input.startswith(("train", "dev")) or item.input in ("N/A", "", "[MASK]") for item in items)
        if list(prompt) != start:
            return [
                [0.0, 2.0] if it.input.startswith("train") and it.answer == "positive" else [2.0, 0.0] for it in items
            ]
        return [[2.0 - (1 if it.answer == "positive" else -1), (1 if it.answer == "positive" else -1)] for it in items]

    def plain(prompt, items, answer_tokens=16, calibration=None):
        return [(False if it.answer == "positive" else True, "negative") for it in items]

    seen = []
    start = GreaterEngine(tiny_tm, SPEC, train, dev, GreaterConfig(steps=1, n_train=12)).encode_prompt(PROMPT)
    for calibrate, adopted in (("batch", True), ("none", False)):
        cfg = GreaterConfig(steps=1, n_train=12, n_dev=40, topk=8, topq=3, intersect=2, dev_top=2, calibrate=calibrate)
        eng = GreaterEngine(tiny_tm, SPEC, train, dev, cfg)
        monkeypatch.setattr(
            eng.predictor, "label_scores_items", lambda p, items: seen.append(items) or scores(p, items)
        )
        monkeypatch.setattr(eng.predictor, "predict_items", plain)
        state = eng.initial_state(PROMPT)
        initial = state["initial_ids"]
        state["top"] = [[0.1, eng.encode_prompt("Say it.")], [0.2, eng.encode_prompt("Guess.")]]
        res = eng.finish(state)
        assert res.prompt_ids == initial
        assert (res.calibration is not None) == adopted and res.selection["significant"] == adopted
        if adopted:
            assert res.dev_accuracy == 1.0 and res.calibration["method"] == "batch" and res.calibration["n"] == 12
            assert any(row.get("calibration") for row in res.top)
            # the pre-declared order: the start's label decision first, whatever the instructions' training error
            first = next(row for row in res.top if row.get("order_score") == 0.0)
            assert first["prompt"] == PROMPT and first["calibration"] and first["rank"] == 1
            # the calibrated variants were fitted on the training rows: the dev rows were only scored
            fitted = [items for items in seen if items and items[0].input.startswith("train")]
            assert fitted and all(len(items) == 12 for items in fitted)


def test_search_calibration_runs_no_steps_and_search_instruction_adds_no_calibrated_variants(tiny_tm):
    from toolkit.errors import ConfigError

    cfg = GreaterConfig(steps=3, n_train=6, n_dev=6, topk=8, topq=3, intersect=2, search="calibration")
    eng = GreaterEngine(tiny_tm, SPEC, TRAIN, TRAIN[:6], cfg)
    state = eng.initial_state(PROMPT)
    assert list(eng.run(state)) == []
    res = eng.finish(state)
    assert [bool(r.get("calibration")) for r in res.top if not r.get("initial")] == [True]  # the calibrated start
    cfg = GreaterConfig(steps=1, n_train=6, n_dev=6, topk=8, topq=3, intersect=2, search="instruction")
    assert not _calibrating(GreaterEngine(tiny_tm, SPEC, TRAIN, TRAIN[:6], cfg).parts)
    with pytest.raises(ConfigError, match="needs a calibration"):
        GreaterConfig(search="calibration", calibrate="none")
    with pytest.raises(ConfigError, match="label tasks"):
        GreaterEngine(tiny_tm, AnswerSpec(kind="number"), [Item("1+1", "2")], [], GreaterConfig(search="calibration"))
    assert GreaterConfig.from_dict({"steps": 2}).calibrate == "none"  # runs stored before calibration existed


def test_suffix_scoring_with_fixed_chains_equals_full_sequences(tiny_tm):
    """Reasoning mode's pre-rank: candidates teacher-forced on given chains; exact for those chains."""
    eng = GreaterEngine(
        tiny_tm,
        SPEC,
        TRAIN,
        [],
        GreaterConfig(mode="reasoning", n_train=6, batch_size=4, topk=8, topq=3, intersect=2, max_new_tokens=4),
    )
    prompt = eng.encode_prompt(PROMPT)
    chains = [eng.tm.encode(f" step {i} of {'the ' * i}chain")[: 1 + i] for i in range(6)]  # different lengths
    cands = sorted(set(eng.proposer.propose(prompt, 2, random.Random(0))))[:5]
    fast = eng.scorer.suffix_terms(prompt, 2, cands, chains=chains)
    for c, rows in zip(cands, fast):
        full = eng.scorer.item_terms([(swap(prompt, 2, c), item, ch) for item, ch in zip(TRAIN, chains)])
        for (l1, n1, c1), (l2, n2, c2) in zip(rows, full):
            assert c1 == c2
            assert float(l1) == pytest.approx(float(l2), abs=1e-4) and float(n1) == pytest.approx(float(n2), abs=1e-4)


def test_reasoning_prerank_gives_fresh_chains_to_a_few(tiny_tm):
    eng = engine(tiny_tm, mode="reasoning", steps=2, max_new_tokens=3, width=6, probe=2, fresh=2, n_train=4)
    records = list(eng.run(eng.initial_state(PROMPT)))
    for r in records:
        pre = [c for c in r["candidates"] if "prerank_score" in c]
        full = [c for c in r["candidates"] if "score" in c]
        assert len(pre) == len(r["candidates"]) == 8 and len(full) == 2 == r["search"]["fully_scored"]
        best_pre = sorted(pre, key=lambda c: (c["prerank_score"], c["token"]))[:2]
        assert {c["token"] for c in full} == {c["token"] for c in best_pre}


def test_the_evaluation_predictor_needs_no_training_examples_and_a_search_does(tiny_tm):
    """The torch evaluation builds the predictor alone (no search parts, no rows); a search without training
    rows is refused. Both give the same answers as the search's own predictor."""
    from toolkit.engine.parts import build_predictor
    from toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no training examples"):
        GreaterEngine(tiny_tm, SPEC, [], [], GreaterConfig(mode="direct"))
    predictor = build_predictor(tiny_tm, SPEC, GreaterConfig(mode="direct"))
    ids = predictor.text.encode("Is it positive?")
    items = [Item("a fine film", "positive"), Item("a dull film", "negative")]
    preds = predictor.predict_items(ids, items)
    assert len(preds) == 2 and all(p in SPEC.labels for _, p in preds)
    assert preds == engine(tiny_tm, mode="direct").predictor.predict_items(ids, items)


@pytest.mark.slow  # waits out a time budget
def test_the_final_choice_is_inside_the_one_budget(tiny_tm, monkeypatch):
    """--budget covers the search and the final choice: the start's dev pass is timed before the first step and
    the choice's passes, counted in that unit, are set aside. Where they need more than the budget no
    instruction step starts (and the run says why); the choice still runs and reuses the start's dev answers."""
    import time as _time

    dev = [Item(f"dev review {i}", "positive" if i % 2 else "negative") for i in range(8)]
    cfg = GreaterConfig(
        steps=50, n_train=6, n_dev=8, topk=8, topq=3, intersect=2, time_budget_s=4.0, calibrate="none", demo_max=0
    )
    eng = GreaterEngine(tiny_tm, SPEC, TRAIN, dev, cfg)
    real_predict = eng.predictor.predict_items
    calls = []

    def slow_predict(prompt, items, *a, **kw):  # a dev pass of 1 s: the choice needs ~dev_top + 1 of them
        calls.append(len(items))
        if items is eng.dev:
            _time.sleep(1.0)
        return real_predict(prompt, items, *a, **kw)

    monkeypatch.setattr(eng.predictor, "predict_items", slow_predict)
    state = eng.initial_state(PROMPT)
    records = list(eng.run(state))
    assert records == []  # 4 dev passes (dev_top) + the training score > 4 s - 1 s spent: no step starts
    assert "leaves no time for instruction steps" in state["done"]
    assert state["initial_dev"] and len(state["initial_dev"]) == 8 and state["dev_pass_s"] >= 1.0
    # dev_top (4) versions on dev and the adopted version's training score (6 of 8 rows), in dev passes, less the
    # measured overcount
    from toolkit.engine.final import RESERVE_OVERCOUNT

    expected = state["dev_pass_s"] * (4 + 6 / 8) / RESERVE_OVERCOUNT
    assert final_reserve(eng.parts, state) == pytest.approx(expected) and state["dev_pass_s"] >= 1
    n = len(calls)
    res = eng.finish(state)
    assert res.prompt_ids == state["initial_ids"]
    assert calls[n:].count(8) == 0  # the start's dev answers are reused, no candidate left to compare

    eng = GreaterEngine(tiny_tm, SPEC, TRAIN, dev, GreaterConfig(**{**cfg.to_dict(), "time_budget_s": 60.0}))
    monkeypatch.setattr(eng.predictor, "predict_items", lambda p, items, *a, **kw: real_predict(p, items, *a, **kw))
    state = eng.initial_state(PROMPT)
    first = next(iter(eng.run(state)))  # a budget with room: steps run, the reserve is in the state
    assert first["state"]["final_reserve_s"] > 0 and "initial_dev" in first["state"]
