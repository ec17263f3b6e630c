import json
import re

import pytest

from toolkit.demo import ensure_demo_task
from toolkit.evaluate import EvalSettings
from toolkit.evaluation import evaluate_prompt
from toolkit.stats import wilson_interval


def test_wilson_interval():
    lo, hi = wilson_interval(83, 100)
    assert round(lo, 3) == 0.745 and round(hi, 3) == 0.891
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_llamacpp_eval_is_stored_and_cached(project, llama):
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Decide if the review is positive or negative.", origin="manual")
    prompt = project.store.prompt(pid)
    first = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=6)
    assert first.n == 6 and first.model_calls == 6 and first.cached == 0
    assert first.accuracy == first.correct / 6 and first.ci[0] <= first.accuracy <= first.ci[1]
    assert sum(sum(r.values()) for r in first.confusion.values()) == 6
    calls = llama.stats["calls"]
    second = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=6)
    assert second.model_calls == 0 and second.cached == 6 and llama.stats["calls"] == calls
    assert second.correct == first.correct
    rows = project.store.results(first.evaluation_id)
    assert len(rows) == 6 and all(r["predicted"] in ("negative", "positive") for r in rows)
    ev = project.store.evaluations(prompt_id=pid)[0]
    assert ev["model_sha256"] == llama.sha256 and ev["backend"] == "llamacpp" and ev["status"] == "done"


def test_reasoning_mode_eval(project, llama):
    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Think briefly.", origin="manual")
    rep = evaluate_prompt(
        project.store,
        model=llama,
        task_row=task,
        prompt_row=project.store.prompt(pid),
        limit=2,
        settings=EvalSettings(mode="reasoning", max_new_tokens=8),
    )
    outputs = [r["output"] for r in project.store.results(rep.evaluation_id)]
    assert len(outputs) == 2 and all(len(o.split()) > 1 for o in outputs)


def _store_task(project, tmp_path, name, rows):
    from toolkit.tasks import ImportOptions, read_task_file

    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in rows))
    task = read_task_file(path, name=name, options=ImportOptions(split=(0, 0, 1)))
    project.store.add_task(project.id, task)
    return project.store.find_task(project.id, name)


def test_grammar_constrained_number_and_text_answers(project, llama, tmp_path):
    num_task = _store_task(project, tmp_path, "sums", [(f"What is {a} plus {a}?", str(2 * a)) for a in range(1, 5)])
    pid = project.add_prompt(num_task, "Answer with a number.", origin="manual")
    rep = evaluate_prompt(project.store, model=llama, task_row=num_task, prompt_row=project.store.prompt(pid))
    preds = [r["predicted"] for r in project.store.results(rep.evaluation_id)]
    assert len(preds) == 4
    assert all(p is not None and re.fullmatch(r"-?[0-9][0-9,]*(\.[0-9]+)?", p) for p in preds), preds

    text_task = _store_task(
        project,
        tmp_path,
        "opp",
        [
            (w, o)
            for w, o in [
                ("hot", "cold"),
                ("up", "down"),
                ("big", "small"),
                ("old", "young"),
                ("fast", "slow"),
                ("wet", "dry"),
            ]
        ],
    )
    assert text_task["answer_kind"] == "text"
    pid = project.add_prompt(text_task, "Give the opposite word.", origin="manual")
    rep = evaluate_prompt(project.store, model=llama, task_row=text_task, prompt_row=project.store.prompt(pid))
    preds = [r["predicted"] for r in project.store.results(rep.evaluation_id)]
    assert all(p and "\n" not in p for p in preds), preds


def test_compare_matrix_on_two_quantizations(project, llama, real_tm):
    from toolkit.compare import compare_prompts

    task = ensure_demo_task(project)
    a = project.add_prompt(task, "Decide if the review is positive or negative.", origin="manual")
    b = project.add_prompt(task, "Is this movie review positive or negative?", origin="manual")
    runtimes = ["llamacpp:smollm2-135m", "torch:smollm2-135m:fp32"]
    res = compare_prompts(project, [a, b], runtimes, limit=6, loaded={runtimes[0]: llama, runtimes[1]: real_tm})
    assert set(res.cells) == {(p, r) for p in (a, b) for r in runtimes}
    for rep in res.cells.values():
        assert rep.n == 6 and 0 <= rep.accuracy <= 1
    evs = project.store.evaluations(task_id=task["id"])
    assert sorted({(e["backend"], e["quantization"]) for e in evs}) == [("llamacpp", "Q4_1"), ("torch", "fp32")]
    # Same weights, same layout, same label rule: Q4_1 in llama.cpp and its dequantized fp32 copy in torch agree
    # on most examples.
    agree = 0
    for p in (a, b):
        ll = {r["example_id"]: r["predicted"] for r in project.store.results(res.cells[(p, runtimes[0])].evaluation_id)}
        tt = {r["example_id"]: r["predicted"] for r in project.store.results(res.cells[(p, runtimes[1])].evaluation_id)}
        agree += sum(ll[k] == tt[k] for k in ll)
    assert agree >= 10
    again = compare_prompts(project, [a], runtimes[1:], limit=6, loaded={runtimes[1]: real_tm})
    assert again.cells[(a, runtimes[1])].model_calls == 0


def test_interrupted_evaluation_continues_where_it_stopped(project, llama):
    import threading

    task = ensure_demo_task(project)
    prompt = project.store.prompt(project.add_prompt(task, "Positive or negative?", origin="manual"))
    stop = threading.Event()
    first = evaluate_prompt(
        project.store,
        model=llama,
        task_row=task,
        prompt_row=prompt,
        limit=8,
        progress=lambda done, total: stop.set() if done == 3 else None,
        stop=stop,
    )
    assert project.store.evaluations(prompt_id=prompt["id"])[0]["status"] == "stopped"
    assert first.model_calls == 3
    second = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=8)
    assert second.cached == 3 and second.model_calls == 5 and second.n == 8


@pytest.mark.slow  # the real default model through the CLI
def test_eval_cli_both_backends(project):
    from click.testing import CliRunner

    from toolkit.cli import cli

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Positive or negative?", origin="manual")
    for args in (["--backend", "llamacpp", "--show-confusion"], ["--backend", "torch", "--precision", "fp32"]):
        res = CliRunner().invoke(cli, ["--project", str(project.path), "eval", str(pid), "--limit", "4", *args])
        assert res.exit_code == 0, res.output
        assert "accuracy" in res.output and "95% CI" in res.output
    backends = {e["backend"] for e in project.store.evaluations(prompt_id=pid)}
    assert backends == {"llamacpp", "torch"}
    res = CliRunner().invoke(cli, ["--project", str(project.path), "eval", str(pid), "--limit", "4", "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    assert line["prompt_id"] == pid and line["n"] == 4 and line["cached"] == 4 and line["model_calls"] == 0
    assert line["accuracy"] == line["correct"] / 4 and line["ci95"][0] <= line["accuracy"] <= line["ci95"][1]


def test_gpu_offload_is_automatic_when_llama_cpp_has_it(llama, monkeypatch):
    import llama_cpp

    from toolkit.llamacpp import resolve_gpu_layers

    assert resolve_gpu_layers(12) == 12
    assert llama.n_gpu_layers == resolve_gpu_layers(None)  # what the shared model was opened with
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert resolve_gpu_layers(None) == -1
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    assert resolve_gpu_layers(None) == 0


@pytest.mark.slow  # torch evaluations on the tiny model, three times
def test_torch_eval_stores_each_batch_and_resumes(project, tiny_tm):
    import threading

    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.evaluation import TorchRuntime

    task = ensure_demo_task(project)
    prompt = project.store.prompt(project.add_prompt(task, "Positive or negative?", origin="manual"))
    settings = EvalSettings(mode="reasoning", max_new_tokens=4)
    stop = threading.Event()
    seen = []
    first = evaluate_prompt(
        project.store,
        model=TorchRuntime(tiny_tm, batch_size=2),
        task_row=task,
        prompt_row=prompt,
        limit=6,
        settings=settings,
        stop=stop,
        progress=lambda done, total: (seen.append((done, total)), done == 2 and stop.set()),
    )
    assert seen == [(1, 6), (2, 6)]
    ev = project.store.evaluation(first.evaluation_id)
    assert ev["status"] == "stopped" and first.model_calls == 2 and len(project.store.results(ev["id"])) == 2
    second = evaluate_prompt(
        project.store,
        model=TorchRuntime(tiny_tm, batch_size=2),
        task_row=task,
        prompt_row=prompt,
        limit=6,
        settings=settings,
    )
    assert second.cached == 2 and second.model_calls == 4 and second.n == 6
    rows = project.store.example_results(second.evaluation_id)
    assert [r["idx"] for r in rows] == sorted(r["idx"] for r in rows) and len(rows) == 6
    # Batch by batch gives what one pass over all six gives, and the stored output holds the chain.
    examples = project.store.examples(task["id"], "test", limit=6)
    engine = GreaterEngine(
        tiny_tm,
        project.store.task_spec(task),
        [Item("x", "positive")],
        [],
        GreaterConfig(mode="reasoning", max_new_tokens=4, steps=1),
    )
    ids = engine.encode_prompt(prompt["text"])
    items = [Item(e["input"], e["answer"]) for e in examples]
    expected = engine.predictor.predict_items(ids, items)
    chains = engine.decoder.chains(ids, items)
    by_input = {r["input"]: r for r in rows}
    for ex, (ok, pred), chain in zip(examples, expected, chains):
        r = by_input[ex["input"]]
        assert (bool(r["correct"]), r["predicted"]) == (ok, pred)
        assert r["output"].startswith(engine.decode(chain).strip()) and r["output"].endswith(pred)
    assert project.store.evaluation(second.evaluation_id)["settings"]["device"] == "cpu"


def test_evals_cli_shows_per_example_outputs(project, llama, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli

    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no cell is cut

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Positive or negative?", origin="manual")
    rep = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=project.store.prompt(pid), limit=5)
    base = ["--project", str(project.path), "evals"]
    run = lambda *a: CliRunner().invoke(cli, [*base, *a])  # noqa: E731
    res = run("list")
    assert res.exit_code == 0 and f"{100 * rep.accuracy:.1f}%" in res.output, res.output
    res = run("show", str(rep.evaluation_id), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    examples = project.store.examples(task["id"], "test", limit=5)
    assert [e["input"] for e in data["examples"]] == [e["input"] for e in examples]
    assert [e["answer"] for e in data["examples"]] == [e["answer"] for e in examples]
    assert sum(e["correct"] for e in data["examples"]) == rep.correct
    assert data["model_sha256"] == llama.sha256 and data["settings"]["mode"] == "direct"
    assert sum(sum(row.values()) for row in data["confusion"].values()) == 5
    errors = json.loads(run("show", str(rep.evaluation_id), "--json", "--errors").output)["examples"]
    assert len(errors) == 5 - rep.correct and not any(e["correct"] for e in errors)
    res = run("show", str(rep.evaluation_id))
    assert res.exit_code == 0 and "Per-label confusion" in res.output and "5 shown of 5 scored" in res.output
    assert examples[0]["input"].split()[0] in res.output
    res = run("show", "9999")
    assert res.exit_code == 1 and "No evaluation with id 9999" in res.output
    # flipped: a second evaluation that differs on the first two examples
    rows = project.store.example_results(rep.evaluation_id)
    ev2 = project.store.create_evaluation(
        prompt_id=pid,
        task_id=task["id"],
        split="test",
        model_id="m",
        model_sha256="x",
        backend="llamacpp",
        quantization="Q4_1",
        mode="direct",
        settings={},
        n=5,
    )
    for i, r in enumerate(rows):
        ok = (not r["correct"]) if i < 2 else bool(r["correct"])
        project.store.add_result(ev2, r["example_id"], f"k{i}", "out", r["answer"] if ok else "zzz", ok, 0.0)
    res = run("flipped", str(rep.evaluation_id), str(ev2))
    fixed = sum(1 for r in rows[:2] if not r["correct"])
    assert res.exit_code == 0 and "2 example(s) differ" in res.output, res.output
    assert f"{fixed} fixed, {2 - fixed} broken" in res.output
    assert res.output.count("zzz") == 2 - fixed


def test_answer_shape_checks_follow_the_grammar():
    from toolkit.tasks import answer_complete, answer_prefix_ok

    for text in ("", " ", " -", " 1", " 1,2", " 12.", " 12.5", " 12.5."):
        assert answer_prefix_ok(text, "number"), text
    for text in ("1", " a", " 1a", " 1..", " 1.2.3", " --1", "  1", " 1\n"):
        assert not answer_prefix_ok(text, "number"), text
    assert answer_complete(" 12.5", "number") and answer_complete(" 12.", "number")  # a final full stop is fine
    assert answer_complete(" 12.5.", "number") and not answer_complete(" 1..", "number")
    assert not answer_complete(" -", "number") and not answer_complete(" ", "number")
    assert answer_prefix_ok(" Paris is", "text") and not answer_prefix_ok("Paris", "text")
    assert not answer_prefix_ok(" a\nb", "text") and not answer_complete(" ", "text") and answer_complete(" a", "text")


def test_torch_numbers_and_text_follow_the_answer_grammar(project, tiny_tm, tmp_path):
    """A random-weight model answers anything; held to the grammar's shapes it can only answer a number."""
    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.tasks import AnswerSpec

    items = [Item(f"What is {a} plus {a}?", str(2 * a)) for a in range(1, 7)]
    num = GreaterEngine(
        tiny_tm,
        AnswerSpec(kind="number", labels=(), extractor="The answer is"),
        items,
        [],
        GreaterConfig(mode="direct", steps=1),
    )
    preds = num.predictor.predict_items(num.encode_prompt("Add."), items, answer_tokens=6)
    assert all(p is not None and re.fullmatch(r"-?[0-9][0-9,]*(\.[0-9]*)?", p) for _, p in preds), preds
    text = GreaterEngine(
        tiny_tm,
        AnswerSpec(kind="text", labels=(), extractor="The answer is"),
        items,
        [],
        GreaterConfig(mode="direct", steps=1),
    )
    preds = text.predictor.predict_items(text.encode_prompt("Add."), items, answer_tokens=6)
    assert all(p and "\n" not in p for _, p in preds), preds


def test_torch_and_llamacpp_agree_on_numbers_and_multi_token_labels(project, llama, real_tm, tmp_path):
    """Same weights (Q4_1 and its dequantized copy), same rules: the two runtimes mostly agree."""

    sums = _store_task(
        project, tmp_path, "sums2", [(f"What is {a} plus {a + 3}?", str(2 * a + 3)) for a in range(1, 7)]
    )
    mc = _store_task(
        project,
        tmp_path,
        "mc",
        [  # labels that share their first token: whole-label scoring
            (f"Which number is bigger: option one is {a}, option two is {b}?", "option one" if a > b else "option two")
            for a, b in [(3, 9), (8, 2), (5, 6), (7, 1), (2, 4), (9, 3)]
        ],
    )
    assert mc["answer_kind"] == "label"
    assert len({tuple(llama.encode(" option one"))[0], tuple(llama.encode(" option two"))[0]}) == 1
    for task, text in ((sums, "Answer with a number."), (mc, "Answer with the option letter.")):
        prompt = project.store.prompt(project.add_prompt(task, text, origin="manual"))
        ll = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt)
        tt = evaluate_prompt(project.store, model=real_tm, task_row=task, prompt_row=prompt)
        a = {r["example_id"]: r["predicted"] for r in project.store.results(ll.evaluation_id)}
        b = {r["example_id"]: r["predicted"] for r in project.store.results(tt.evaluation_id)}
        assert len(a) == len(b) == 6
        # Numbers: a 135M model often sits on near-ties between digits (logits 38.16 vs 38.16 seen), where the
        # Q4_1 noise decides; checked token by token that both sides follow the same rules.
        assert sum(a[k] == b[k] for k in a) >= (4 if task is sums else 5), (a, b)
        if task is mc:
            assert set(b.values()) <= {"option one", "option two"}


def test_torch_labels_sharing_a_first_token_are_scored_whole(real_tm):
    """Labels that start alike are chosen by their whole log-probability, checked against plain forwards."""
    import torch

    from toolkit.engine.greater import GreaterConfig, GreaterEngine, Item
    from toolkit.tasks import AnswerSpec

    labels = ("very good", "very bad", "very boring")
    spec = AnswerSpec(kind="label", labels=labels, extractor="So the movie was")
    reviews = [
        "A wonderful, moving film.",
        "Dull and far too long.",
        "I loved every minute.",
        "A total mess.",
        "Nothing happens for two hours.",
        "Brilliant acting and a great story.",
    ]
    items = [Item(r, labels[i % 3]) for i, r in enumerate(reviews)]
    eng = GreaterEngine(real_tm, spec, items, [], GreaterConfig(mode="direct", steps=1, batch_size=4))
    assert eng.text.label_first is None
    prompt = eng.encode_prompt("Rate it.")
    preds = eng.predictor.predict_items(prompt, items)
    expected = []
    for item in items:
        head = eng.text.split(item.input) + prompt + eng.text.after_ids + eng.text.extractor_ids
        scores = []
        for lab in labels:
            ids = real_tm.encode(" " + lab)
            with torch.no_grad():
                logp = torch.log_softmax(real_tm.model(torch.tensor([head + ids])).logits[0].double(), -1)
            scores.append(sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(ids)))
        expected.append(labels[max(range(3), key=scores.__getitem__)])
    assert [p for _, p in preds] == expected
    assert len(set(expected)) >= 2  # the check can tell labels apart
    assert [ok for ok, _ in preds] == [e == item.answer for e, item in zip(expected, items)]


@pytest.mark.slow  # torch evaluations on the tiny model, twice
def test_compare_cli_prints_the_matrix_with_evaluation_ids(project, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli

    monkeypatch.setenv("COLUMNS", "200")
    task = ensure_demo_task(project)
    a = project.add_prompt(task, "Positive or negative?", origin="manual")
    b = project.add_prompt(task, "Is the review positive or negative?", origin="manual")
    res = CliRunner().invoke(
        cli,
        [
            "--project",
            str(project.path),
            "compare",
            str(a),
            str(b),
            "--limit",
            "3",
            "--runtime",
            "torch:smollm2-135m:fp32",
            "--runtime",
            "llamacpp:smollm2-135m",
        ],
    )
    assert res.exit_code == 0, res.output
    evs = project.store.evaluations(project_id=project.id)
    assert len(evs) == 4 and {e["backend"] for e in evs} == {"torch", "llamacpp"}
    for e in evs:
        assert f"eval {e['id']}" in res.output
        assert f"{100 * e['accuracy']:.1f}%" in res.output
    assert "torch fp32" in res.output and "llama.cpp Q4_1" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "--project",
            str(project.path),
            "compare",
            str(a),
            "--limit",
            "2",
            "--mode",
            "reasoning",
            "--max-new-tokens",
            "6",
            "--runtime",
            "llamacpp:smollm2-135m",
        ],
    )
    assert res.exit_code == 0, res.output
    last = project.store.evaluations(project_id=project.id)[-1]
    assert last["mode"] == "reasoning" and last["settings"]["max_new_tokens"] == 6


def test_direct_mode_results_do_not_depend_on_the_chain_cap(project, llama):
    task = ensure_demo_task(project)
    prompt = project.store.prompt(project.add_prompt(task, "Positive or negative?", origin="manual"))
    first = evaluate_prompt(
        project.store,
        model=llama,
        task_row=task,
        prompt_row=prompt,
        limit=3,
        settings=EvalSettings(mode="direct", max_new_tokens=48),
    )
    again = evaluate_prompt(
        project.store,
        model=llama,
        task_row=task,
        prompt_row=prompt,
        limit=3,
        settings=EvalSettings(mode="direct", max_new_tokens=256),
    )
    assert first.model_calls == 3 and again.cached == 3
    assert EvalSettings(mode="reasoning", max_new_tokens=48).key() != EvalSettings(mode="reasoning").key()


def test_tasks_check_shows_what_the_model_sees_and_its_answers(project, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.evaluate import format_warnings
    from toolkit.tasks import AnswerSpec

    monkeypatch.setenv("COLUMNS", "200")
    task = ensure_demo_task(project)
    res = CliRunner().invoke(
        cli,
        [
            "--project",
            str(project.path),
            "tasks",
            "check",
            task["name"],
            "--n",
            "4",
            "--prompt",
            "Is the review positive or negative?",
        ],
    )
    assert res.exit_code == 0, res.output
    first = project.store.examples(task["id"], "train", limit=4)
    assert "<|im_start|>assistant\nTherefore, the final answer (one of: negative, positive) is" in res.output
    assert first[0]["input"] + "\n\nIs the review positive or negative?<|im_end|>" in res.output
    assert all(ex["input"][:40] in res.output for ex in first)
    assert "right with this prompt" in res.output
    assert not project.store.evaluations()  # a check stores nothing

    spec = AnswerSpec(kind="label", labels=("no", "yes"), extractor="The answer is")
    same = [{"answer": a, "predicted": "yes", "correct": a == "yes"} for a in ("no", "yes", "no", "no")]
    assert any("answered 'yes' for all 4" in w for w in format_warnings(spec, same))
    wrong = [{"answer": a, "predicted": None, "correct": False} for a in ("1", "2", "3", "4")]
    w = format_warnings(AnswerSpec(kind="number", labels=(), extractor="The answer is"), wrong)
    assert any("4/4 answers could not be read as a number" in x for x in w) and any(
        "None of the 4 is right" in x for x in w
    )
    fine = [{"answer": a, "predicted": a, "correct": True} for a in ("no", "yes", "no", "yes")]
    assert format_warnings(spec, fine) == []


def test_ctrl_c_or_an_error_marks_the_evaluation_and_keeps_its_examples(project, llama, tiny_tm):
    import pytest

    from toolkit.evaluation import TorchRuntime

    task = ensure_demo_task(project)
    prompt = project.store.prompt(project.add_prompt(task, "Positive or negative?", origin="manual"))

    def interrupt_at(n, exc):
        def progress(done, total):
            if done == n:
                raise exc

        return progress

    with pytest.raises(KeyboardInterrupt):
        evaluate_prompt(
            project.store,
            model=llama,
            task_row=task,
            prompt_row=prompt,
            limit=5,
            progress=interrupt_at(2, KeyboardInterrupt()),
        )
    ev = project.store.evaluations(prompt_id=prompt["id"])[-1]
    assert ev["status"] == "stopped" and len(project.store.results(ev["id"])) == 2
    again = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=5)
    assert again.cached == 2 and again.model_calls == 3
    with pytest.raises(RuntimeError):
        evaluate_prompt(
            project.store,
            model=TorchRuntime(tiny_tm, batch_size=2),
            task_row=task,
            prompt_row=prompt,
            limit=4,
            progress=interrupt_at(3, RuntimeError("disk full")),
        )
    assert project.store.evaluations(prompt_id=prompt["id"])[-1]["status"] == "failed"


def test_an_input_longer_than_the_context_is_warned_at_import_and_skipped_at_evaluation(project, llama, tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import cli

    rows = [
        ("great film, loved it", "positive"),
        ("dull and far too long", "negative"),
        ("word " * 3000, "positive"),
        ("a joy from start to end", "positive"),
        ("I walked out", "negative"),
    ]
    f = tmp_path / "long.csv"
    f.write_text("input,target\n" + "".join(f'"{i}",{t}\n' for i, t in rows))
    res = CliRunner().invoke(cli, ["--project", str(project.path), "tasks", "import", str(f), "--split", "0,0,1"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "1 row(s) have an input over 14,000 characters" in said and "context: row 3." in said, said
    task = project.store.task(project.id, "long")
    pid = project.add_prompt(task, "Is the review positive or negative?", origin="manual")
    report = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=project.store.prompt(pid))
    assert report.n == 5 and report.skipped == 1 and report.correct <= 4
    ev = project.store.evaluation(report.evaluation_id)
    assert ev["status"] == "done" and ev["timings"]["skipped"] == 1
    outputs = [r["output"] for r in project.store.example_results(report.evaluation_id)]
    skipped = [o for o in outputs if o.startswith("[skipped] ")]
    assert len(skipped) == 1 and "longer than the context (2048)" in skipped[0]


def test_another_chat_template_on_the_same_gguf_is_not_served_from_the_cache(project, llama):
    """Two models that share a GGUF but render different chat templates give different answers: their cached
    results are kept apart (the model's own template keeps the keys it always had)."""
    import copy
    import dataclasses

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Is the review positive or negative?", origin="manual")
    prompt = project.store.prompt(pid)
    first = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=3)
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    other = copy.copy(llama)
    other.info = dataclasses.replace(llama.info, chat_template=template)
    other.chat_template = template
    again = evaluate_prompt(project.store, model=other, task_row=task, prompt_row=prompt, limit=3)
    assert first.model_calls == 3 and again.cached == 0 and again.model_calls == 3
    same = evaluate_prompt(project.store, model=llama, task_row=task, prompt_row=prompt, limit=3)
    assert same.cached == 3
