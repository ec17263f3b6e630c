from toolkit.diff import diff_stats, side_by_side, side_by_side_text, tokens, word_diff


def test_tokens_round_trip_and_split_punctuation():
    text = "Think step-by-step,  then answer:\n(A) or (B)."
    assert "".join(tokens(text)) == text
    assert tokens("a-b, c") == ["a", "-", "b", ",", " ", "c"]


def test_side_by_side_marks_only_the_changed_token():
    a = "Answer the question carefully. Think step by step."
    b = "Answer the question briefly. Think step by step!"
    left, right = side_by_side(a, b)
    assert "".join(t for _, t in left) == a and "".join(t for _, t in right) == b
    assert [t for op, t in left if op != "equal"] == ["carefully", "."]
    assert [t for op, t in right if op != "equal"] == ["briefly", "!"]
    assert {op for op, _ in left if op != "equal"} == {"replace"}
    assert diff_stats(a, b) == {"removed": 2, "added": 2, "unchanged": 8}


def test_insertions_and_deletions_sit_on_one_side_only():
    left, right = side_by_side("think step by step", "think slowly step by step")
    assert all(op == "equal" for op, _ in left)
    assert [t.strip() for op, t in right if op == "insert"] == ["slowly"]
    assert diff_stats("a b c", "a c") == {"removed": 1, "added": 0, "unchanged": 2}


def test_rendered_panes_keep_markup_like_text_literal_and_style_only_changes():
    lt, rt = side_by_side_text("use [bold]A[/bold] here", "use [bold]B[/bold] here")
    assert lt.plain == "use [bold]A[/bold] here" and rt.plain == "use [bold]B[/bold] here"
    assert [rt.plain[s.start : s.end] for s in rt.spans if s.style] == ["B"]
    same_l, same_r = side_by_side_text("same text", "same text")
    assert same_l.plain == same_r.plain == "same text" and not [s for s in same_r.spans if s.style]
    assert word_diff("a b", "a c") == [("equal", "a"), ("delete", "b"), ("insert", "c")]


def _evaluation(store, prompt_id, task, examples, pattern, mode="direct", limit=None):
    ev = store.create_evaluation(
        prompt_id=prompt_id,
        task_id=task["id"],
        split="test",
        model_id="m",
        model_sha256="abc",
        backend="llamacpp",
        quantization="Q4_1",
        mode=mode,
        settings={"mode": mode, "limit": limit},
        n=len(pattern),
    )
    for ex, ok in zip(examples, pattern):
        store.add_result(ev, ex["id"], f"{ev}-{ex['id']}", "out", ex["answer"] if ok else "?", bool(ok), 0.0)
    store.finish_evaluation(
        ev, n=len(pattern), correct=sum(pattern), accuracy=sum(pattern) / len(pattern), ci_low=0.0, ci_high=1.0
    )
    return ev


def test_diff_shows_the_effect_where_both_prompts_were_evaluated_alike(project, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.demo import ensure_demo_task
    from toolkit.effects import describe_effect, diff_effect

    monkeypatch.setenv("COLUMNS", "250")
    store = project.store
    task = ensure_demo_task(project)
    examples = store.examples(task["id"], "test", limit=5)
    a = project.add_prompt(task, "Positive or negative?", origin="manual")
    b = project.add_prompt(task, "Positive or negative? Think.", origin="edit", parent_id=a)
    ea = _evaluation(store, a, task, examples, [1, 0, 0, 1, 1], limit=5)
    eb = _evaluation(store, b, task, examples[:4], [1, 1, 1, 0], limit=4)  # fewer examples: compared on 4
    _evaluation(store, a, task, examples, [0, 0, 0, 0, 0], mode="reasoning")  # other settings: not paired
    rows = diff_effect(store, a, b)
    assert len(rows) == 1
    row = rows[0]
    assert (row["eval_a"], row["eval_b"], row["n"], row["fixed"], row["broken"]) == (ea, eb, 4, 2, 1)
    assert row["accuracy_a"] == 0.5 and row["accuracy_b"] == 0.75
    line = describe_effect(row)
    assert "50.0% -> 75.0% (+25.0), 2 fixed, 1 broken" in line and f"evals flipped {ea} {eb}" in line
    res = CliRunner().invoke(cli, ["--project", str(project.path), "prompts", "diff", str(a), str(b)])
    assert res.exit_code == 0 and line in res.output, res.output
    assert diff_effect(store, b, a)[0]["fixed"] == 1  # the other way round


def test_vote_of_evaluations_against_each_alone(project, monkeypatch):
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.demo import ensure_demo_task
    from toolkit.effects import vote
    from toolkit.errors import ConfigError

    monkeypatch.setenv("COLUMNS", "200")
    store = project.store
    task = ensure_demo_task(project)
    examples = store.examples(task["id"], "test", limit=5)
    pids = [project.add_prompt(task, f"prompt {i}", origin="manual") for i in range(3)]
    e1 = _evaluation(store, pids[0], task, examples, [1, 1, 0, 0, 1])
    e2 = _evaluation(store, pids[1], task, examples, [1, 0, 1, 0, 0])
    e3 = _evaluation(store, pids[2], task, examples, [0, 1, 1, 0, 0])
    res = vote(store, [e1, e2, e3])
    # majority right on examples 0, 1, 2; all wrong ("?") on 3; on 4 two say "?" against one right
    assert res["n"] == 5 and res["vote_accuracy"] == 0.6 and res["any_correct"] == 0.8
    assert [e["accuracy"] for e in res["evaluations"]] == [0.6, 0.4, 0.4]
    tie = vote(store, [e2, e1])  # 1-1 ties go to the first given
    assert tie["vote_accuracy"] == 0.4
    res_cli = CliRunner().invoke(cli, ["--project", str(project.path), "evals", "vote", str(e1), str(e2), str(e3)])
    assert res_cli.exit_code == 0 and "60.0%" in res_cli.output and "does not beat" in res_cli.output, res_cli.output
    for bad in ([e1],):
        try:
            vote(store, bad)
        except ConfigError:
            pass
        else:
            raise AssertionError("one evaluation cannot vote")
