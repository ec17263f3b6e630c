"""Inference-time strategies (issue 16): the second attempt on the default model (llama.cpp)."""

import json

import pytest
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.strategies import DEFAULT_CORRECTION, flip_counts, second_attempt


def test_flip_counts_on_a_constructed_case():
    first = [True, True, False, False, True, False, True]
    second = [True, False, True, False, False, True, True]
    counts = flip_counts(first, second)
    assert counts == {
        "n": 7,
        "right_right": 2,
        "wrong_to_right": 2,
        "right_to_wrong": 2,
        "wrong_wrong": 1,
        "p_value": 1.0,
    }
    assert flip_counts([True] * 8, [False] * 8)["p_value"] == pytest.approx(2 / 2**8)
    with pytest.raises(ValueError):
        flip_counts([True], [True, False])


def test_second_attempt_stores_both_turns_counts_flips_and_reuses_the_cache(project, llama):
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    pid = project.store.add_prompt(project.id, task["id"], "Say positive or negative.", origin="manual")
    prompt = project.store.prompt(pid)
    report = second_attempt(project, model=llama, task_row=task, prompt_row=prompt, limit=6)
    assert report.first.n == report.second.n == 6 and report.calls_first == report.calls_second == 6
    first = {r["example_id"]: r for r in project.store.example_results(report.first.evaluation_id)}
    second = {r["example_id"]: r for r in project.store.example_results(report.second.evaluation_id)}
    assert set(first) == set(second) and len(first) == 6
    for ex_id, row in second.items():  # both turns stored; the first is the plain evaluation's answer
        said_first, said_second = row["output"].split("\nsecond: ")
        assert said_first == "first: " + first[ex_id]["output"]
        assert row["predicted"] in ("positive", "negative") and said_second.endswith(row["predicted"])
    flips = report.flips
    assert flips["wrong_to_right"] == sum(1 for i in first if not first[i]["correct"] and second[i]["correct"])
    assert flips["right_to_wrong"] == sum(1 for i in first if first[i]["correct"] and not second[i]["correct"])
    assert flips["right_right"] + flips["wrong_to_right"] == report.second.correct
    assert project.store.evaluation(report.second.evaluation_id)["mode"] == "direct+second-attempt"
    corr = project.store.prompt(report.correction_prompt_id)
    # the correction instruction is a library prompt like any other: a row and its file (both or neither)
    assert corr["text"] in (project.path / "prompts" / task["name"] / f"{corr['id']:04d}.txt").read_text()
    assert corr["text"] == DEFAULT_CORRECTION and "correction" in json.loads(corr["tags"])
    again = second_attempt(project, model=llama, task_row=task, prompt_row=prompt, limit=6)
    assert again.calls_first == again.calls_second == 0 and again.second.cached == 6
    assert again.flips == flips and again.correction_prompt_id == report.correction_prompt_id
    # another correction instruction is another cache entry (and another library prompt)
    other = second_attempt(
        project,
        model=llama,
        task_row=task,
        prompt_row=prompt,
        limit=2,
        correction="Check your answer once more.",
    )
    assert other.calls_first == 0 and other.calls_second == 2 and other.correction_prompt_id != corr["id"]


def test_second_attempt_from_the_command_line(project, llama):
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    project.store.add_prompt(project.id, task["id"], "Answer the question.", origin="manual")
    pid = project.store.list_prompts(project.id)[-1]["id"]
    run = lambda *a: CliRunner().invoke(cli, ["--project", str(project.path), *a])  # noqa: E731
    res = run("eval", str(pid), "--second-attempt", "--limit", "3", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output.strip().splitlines()[-1])
    assert data["first"]["n"] == data["second"]["n"] == 3 and data["flips"]["n"] == 3
    text = run("eval", str(pid), "--second-attempt", "--limit", "3")
    assert text.exit_code == 0 and "wrong -> right" in text.output and "McNemar" in text.output
    bad = run("eval", str(pid), "--correction", "Check it.")
    assert bad.exit_code == 2 and "--second-attempt" in bad.output


def test_combine_reads_the_candidates_compares_and_reuses_the_cache(project, llama):
    from toolkit.demo import ensure_demo_task
    from toolkit.errors import ConfigError
    from toolkit.evaluation import evaluate_prompt
    from toolkit.strategies import combine

    task = ensure_demo_task(project)
    store = project.store
    ids = []
    for text in ("Answer the question.", "Is this review positive or negative?"):
        pid = store.add_prompt(project.id, task["id"], text, origin="manual")
        ids.append(
            evaluate_prompt(store, model=llama, task_row=task, prompt_row=store.prompt(pid), limit=5).evaluation_id
        )
    report = combine(project, model=llama, evaluation_ids=ids)
    assert report.n == report.combined.n == 5 and report.calls_combine == 5 and report.calls_candidates == 10
    rows = store.example_results(report.combined.evaluation_id)
    sources = [{r["example_id"]: r for r in store.example_results(i)} for i in ids]
    for r in rows:  # each stored output names the candidates the model read, in order
        cands = [s[r["example_id"]]["predicted"] for s in sources]
        assert r["output"].startswith("candidates: " + " | ".join(cands) + "\nanswer: ")
    right = [[bool(s[r["example_id"]]["correct"]) for s in sources] for r in rows]
    assert report.any_correct == sum(any(x) for x in right) / 5
    assert [c["accuracy"] for c in report.candidates] == [sum(x[k] for x in right) / 5 for k in range(2)]
    assert store.evaluation(report.combined.evaluation_id)["mode"] == "direct+combine"
    again = combine(project, model=llama, evaluation_ids=ids)
    assert again.calls_combine == 0 and again.combined.cached == 5 and again.flips_vs_best == report.flips_vs_best
    with pytest.raises(ConfigError, match="at least two"):
        combine(project, model=llama, evaluation_ids=ids[:1])
    pid = store.add_prompt(project.id, task["id"], "Sentiment:", origin="manual")
    other = evaluate_prompt(store, model=llama, task_row=task, prompt_row=store.prompt(pid), limit=3).evaluation_id
    shorter = combine(project, model=llama, evaluation_ids=[ids[0], other, ids[1]])
    assert shorter.n == 3 and shorter.calls_candidates == 9  # the first examples all three scored
    dev = evaluate_prompt(store, model=llama, task_row=task, prompt_row=store.prompt(pid), split="dev", limit=3)
    with pytest.raises(ConfigError, match="same task and split"):
        combine(project, model=llama, evaluation_ids=[other, dev.evaluation_id])
