"""Logic-of-Thought rules (toolkit.logic): what is read from an input, what is derived, what is left alone."""

from toolkit.logic import HEADER, Lit, augment, closure, derive


def test_closure_adds_contrapositives_and_chains_but_not_self_loops():
    a, b, c = Lit("a"), Lit("b"), Lit("c")
    got = closure({(a, b), (b, c)})
    assert {(a, c), (~c, ~a), (~b, ~a), (~c, ~b)} <= got
    assert all(x != y for x, y in got)


def test_truth_tellers_derive_from_the_stated_fact_to_the_asked_person():
    text = (
        "Question: Sherrie tells the truth. Vernell says Sherrie tells the truth. Alexis says Vernell lies. "
        "Michaela says Alexis tells the truth. Elanor says Michaela tells the truth. Does Elanor tell the truth?"
    )
    # Elanor <-> Michaela <-> Alexis <-> not Vernell <-> not Sherrie: a truthful Sherrie makes Elanor a liar
    assert set(derive(text)) == {
        "If Sherrie lies, then Elanor tells the truth.",
        "If Sherrie tells the truth, then Elanor lies.",
    }


def test_categorical_premises_only_never_the_conclusion():
    text = (
        '"Here comes a perfectly valid argument: First, being a cousin of Chris is sufficient for not being a son '
        'of Kermit. We may conclude that whoever is not a son of Kermit is a cousin of Chris."'
    )
    assert derive(text) == ["Whoever is a son of Kermit is not a cousin of Chris."]  # the contrapositive
    necessary = "The argument: Being a fan of X is necessary for being a critic of Y. Every fan of X is a friend of Z."
    assert "Whoever is a critic of Y is a friend of Z." in derive(necessary)  # a chain through "fan of X"


def test_compound_terms_and_unknown_inputs_are_left_alone():
    compound = "The argument: Every ingredient of A is not an ingredient of B or not an ingredient of C. Hence, x."
    assert derive(compound) == []
    text = "not ( True ) and ( False ) is"
    assert augment(text) == (text, [])


def test_augment_appends_the_statements_under_a_header():
    text, found = augment("If it rains, then the road is wet. If the road is wet, then cars slow down. Is it so?")
    assert "If it rains, then cars slow down." in found
    assert text.endswith("\n".join(f"- {s}" for s in found)) and HEADER in text


def test_a_strategy_keeps_plain_cache_keys_and_is_listed_apart():
    from toolkit.evaluate import EvalSettings

    plain = EvalSettings()
    assert plain.key() == '{"answer_tokens": 16, "mode": "direct"}'  # the key earlier versions cached under
    lot = EvalSettings(strategy="logic-of-thought")
    assert lot.key() != plain.key() and lot.label == "direct+logic-of-thought" and plain.label == "direct"


LIES = [
    ("Question: Ann lies. Bob says Ann tells the truth. Cy says Bob lies. Does Cy tell the truth?", "Yes"),
    ("Question: Dee tells the truth. Eve says Dee lies. Fay says Eve lies. Does Fay tell the truth?", "Yes"),
    ("Question: Gus lies. Hal says Gus lies. Ida says Hal lies. Does Ida tell the truth?", "No"),
]


def test_logic_of_thought_evaluation_on_the_default_model(project, llama, tmp_path, monkeypatch):
    """The CLI flag: the model reads the derived statements, the evaluation is stored apart from the plain one
    (its own mode, not the prompt's best test score), and a second run comes from the cache."""
    import json

    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.tasks import ImportOptions, read_task_file

    path = tmp_path / "lies.jsonl"
    path.write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in LIES))
    project.store.add_task(project.id, read_task_file(path, name="lies", options=ImportOptions(split=(0, 0, 1))))
    pid = project.add_prompt(project.store.find_task(project.id, "lies"), "Answer Yes or No.", origin="manual")
    seen: list[str] = []
    import toolkit.llamacpp

    monkeypatch.setattr(toolkit.llamacpp, "LlamaCppModel", lambda *a, **k: llama)  # the session's loaded model
    real_encode = llama.encode
    monkeypatch.setattr(llama, "encode", lambda text: seen.append(text) or real_encode(text))
    run = ["--project", str(project.path), "eval", str(pid), "--json"]
    plain = CliRunner().invoke(cli, run)
    assert plain.exit_code == 0, plain.output
    assert not any(HEADER in text for text in seen)
    res = CliRunner().invoke(cli, [*run, "--logic-of-thought"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    assert line["n"] == 3 and line["model_calls"] == 3 and line["mode"] == "direct+logic-of-thought"
    told = [text for text in seen if HEADER in text]
    assert len(told) == 3 and "- If Ann lies, then Cy tells the truth." in told[0]
    evals = project.store.evaluations(prompt_id=pid)
    assert [e["mode"] for e in evals] == ["direct", "direct+logic-of-thought"]
    assert len(project.store.results(evals[1]["id"])) == 3
    assert project.store.best_test_accuracy(pid) == evals[0]["accuracy"]  # the strategy's score is not the prompt's
    again = CliRunner().invoke(cli, [*run, "--logic-of-thought"])
    line = json.loads(again.output.strip().splitlines()[-1])
    assert line["cached"] == 3 and line["model_calls"] == 0
