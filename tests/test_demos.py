"""Demonstrations as part of a prompt version: one layout for torch, llama.cpp and the exported request; the
demonstration search scores sets exactly (shared-prefix KV = plain scoring) and never on their own rows."""

import json

import pytest

from toolkit.engine.final import _demo_variants, demo_sets
from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
from toolkit.layout import PLACEHOLDER, ChatLayout, demo_lines, demos_from_json, demos_to_json
from toolkit.tasks import AnswerSpec

SPEC = AnswerSpec(kind="label", labels=("negative", "positive"))
DEMOS = (("The plot was a mess.", "negative"), ("A warm, funny film.", "positive"))
PROMPT = "Decide the sentiment."


def _rows(n, start=0):
    return [
        Item(f"review {i}: {'great fun' if i % 2 else 'dull'}", "positive" if i % 2 else "negative")
        for i in range(start, start + n)
    ]


def test_demonstrations_come_first_as_earlier_turns_and_the_prompt_keeps_its_one_slot():
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    plain = ChatLayout(template)
    layout = plain.with_demos(DEMOS, "The answer is")
    before, after = layout.split("Input text.")
    assert before == (
        "<|user|>The plot was a mess.<|end|><|assistant|>The answer is negative<|end|>"
        "<|user|>A warm, funny film.<|end|><|assistant|>The answer is positive<|end|>"
        "<|user|>Input text.\n\n"
    )
    assert after == plain.split("Input text.")[1]
    assert PLACEHOLDER not in layout.render("x", PROMPT) and layout.render("x", PROMPT).count(PROMPT) == 1
    assert demos_from_json(demos_to_json(DEMOS)) == DEMOS and demos_to_json(()) is None
    assert demo_lines(demos_to_json(DEMOS)) == [
        "1. The plot was a mess. -> negative",
        "2. A warm, funny film. -> positive",
    ]


def test_demonstration_sets_come_from_the_pool_never_from_the_scoring_rows(tiny_tm):
    import random

    train = _rows(8) + _rows(12, start=100)  # the first 8 score, the other 12 are the pool
    eng = GreaterEngine(tiny_tm, SPEC, train, _rows(4, start=500), GreaterConfig(n_train=8, demo_max=4, demo_sets=6))
    scoring = {(it.input, it.answer) for it in eng.train}
    sets = demo_sets(eng.parts, random.Random(0))
    assert len(sets) == 6 and len(set(sets)) == 6
    for demos in sets:
        assert not scoring & set(demos)  # fails if a scoring row is shown as its own demonstration
        assert len(demos) in (2, 4) and {a for _, a in demos} == {"negative", "positive"}  # both labels shown
    # no pool (every training row scores): no demonstration sets at all
    assert demo_sets(GreaterEngine(tiny_tm, SPEC, _rows(8), [], GreaterConfig(n_train=8)).parts, random.Random(0)) == []


def test_the_shared_prefix_demonstration_scorer_equals_plain_scoring(tiny_tm):
    """Fast execution (the demonstrations' KV computed once per batch and expanded) scores every set as the naive
    execution does (no caches, batch size 1), so both pick the same sets."""
    train = _rows(6) + _rows(10, start=100)
    picks = {}
    for execution in ("fast", "naive"):
        cfg = GreaterConfig(n_train=6, demo_max=4, demo_sets=4, demo_keep=4, execution=execution, batch_size=4)
        eng = GreaterEngine(tiny_tm, SPEC, train, [], cfg)
        initial = eng.encode_prompt(PROMPT)
        picks[execution] = [(v.demos, v.value) for v in _demo_variants(eng.parts, initial)]
        if execution == "fast":
            assert eng.stats["prefix_tokens_reused"] > 0  # the shared prefix (demonstrations included) was reused
    assert [d for d, _ in picks["fast"]] == [d for d, _ in picks["naive"]]
    for (_, a), (_, b) in zip(picks["fast"], picks["naive"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_using_demos_restores_the_plain_layout_and_its_scores(tiny_tm):
    eng = GreaterEngine(tiny_tm, SPEC, _rows(6), [], GreaterConfig(n_train=6))
    initial = eng.encode_prompt(PROMPT)
    plain = eng.scorer.score_prompts([initial])[0].value
    with eng.parts.using_demos(DEMOS):
        shown = eng.scorer.score_prompts([initial])[0].value
        assert eng.text.split("x")[:3] == eng.text.split("y")[:3]
        assert len(eng.text.split("x")) > len(
            GreaterEngine(tiny_tm, SPEC, _rows(6), [], GreaterConfig(n_train=6)).text.split("x")
        )
    assert shown != plain
    assert eng.scorer.score_prompts([initial])[0].value == plain and eng.text.layout.demos == ()


def test_the_final_choice_can_adopt_the_start_with_demonstrations(tiny_tm, monkeypatch):
    """Where one demonstration set makes the start right on dev, the dev test adopts it (with its demonstrations);
    search='instruction' never tries demonstrations."""
    train, dev = _rows(6) + _rows(10, start=100), _rows(40, start=300)
    for search, adopted in (("demonstrations", True), ("instruction", False)):
        eng = GreaterEngine(
            tiny_tm, SPEC, train, dev, GreaterConfig(n_train=6, n_dev=40, search=search, calibrate="none")
        )
        state = eng.initial_state(PROMPT)

        def predict(prompt, items, answer_tokens=16, calibration=None, eng=eng):
            good = bool(eng.text.layout.demos) and eng.text.layout.demos[0][1] == "positive"
            return [(good or it.answer == "negative", None) for it in items]

        monkeypatch.setattr(eng.predictor, "predict_items", predict)
        res = eng.finish(state)
        assert res.prompt_ids == state["initial_ids"]
        assert bool(res.demos) == adopted and res.selection["significant"] == adopted
        if adopted:
            assert res.demos[0][1] == "positive" and res.selection["demo_sets"]["sets"] == 6
            assert all(tuple(d) not in {(it.input, it.answer) for it in eng.train} for d in res.demos)


def test_a_prompt_with_demonstrations_gives_the_same_tokens_in_torch_llamacpp_and_the_export(project, llama, tiny_tm):
    from toolkit.evaluate import prompt_layout
    from toolkit.evaluation import evaluate_prompt
    from toolkit.export import deployed_request, prompt_bundle

    path = project.path / "reviews.csv"
    path.write_text(
        "input,target\n"
        + "".join(
            f"review {i} is {'good' if i % 2 else 'bad'},{'positive' if i % 2 else 'negative'}\n" for i in range(30)
        )
    )
    from toolkit.tasks import read_task_file

    task = project.store.task_by_id(project.store.add_task(project.id, read_task_file(path, name="reviews")))
    spec = project.store.task_spec(task)
    pid = project.add_prompt(task, PROMPT, origin="manual", demos=demos_to_json(DEMOS))
    row = project.store.prompt(pid)
    example = project.store.examples(task["id"], "test")[0]["input"]
    # llama.cpp: the rendered text up to the answer, tokenized whole
    llama_tokens = llama.encode(prompt_layout(llama, spec, row).render(example, PROMPT) + spec.extractor)
    # torch: the engine's tokens before the prompt, the prompt, the rest
    from toolkit.engine.parts import build_predictor

    text = build_predictor(tiny_tm, spec, GreaterConfig(), demos=DEMOS).text
    torch_tokens = text.split(example) + text.encode(PROMPT) + text.after_ids + text.extractor_ids
    # the exported request's text
    template = deployed_request(project, prompt_bundle(project, pid))["template"]
    export_tokens = llama.encode(template.replace("{input}", example))
    assert torch_tokens == llama_tokens == export_tokens
    assert "The plot was a mess." in template
    # the evaluation uses the demonstrations and caches apart from the plain prompt
    plain = project.store.prompt(project.add_prompt(task, PROMPT, origin="manual"))
    a = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=row, limit=4)
    b = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=plain, limit=4)
    assert a.cached == 0 and b.cached == 0
    assert json.loads(project.store.prompt(pid)["demos"]) == [list(d) for d in DEMOS]
    assert "demonstrations" in (project.path / "prompts" / "reviews" / f"{pid:04d}.txt").read_text()
