import io
import json

import pytest
from click.testing import CliRunner
from conftest import stored_evaluation
from rich.console import Console

from toolkit.cli import cli


def run(args, project_dir):
    return CliRunner().invoke(cli, ["--project", str(project_dir), *args])


def _command_paths(group, prefix=()):
    """Every command of the click tree, as the argument lists that reach it (groups included)."""
    import click

    for name, command in group.commands.items():
        path = (*prefix, name)
        yield list(path)
        if isinstance(command, click.Group):
            yield from _command_paths(command, path)


def test_every_command_has_help():
    paths = list(_command_paths(cli))
    # the tree is walked, not listed by hand: a new command is covered the day it is added
    assert ["runs", "resume"] in paths and ["evals", "flipped"] in paths and len(paths) > 30
    for path in paths:
        args = [*path, "--help"]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
        assert "Usage:" in res.output


def test_a_moved_project_folder_keeps_its_whole_history(project, tmp_path):
    """The history lives in the project folder; moving the folder must not hide it (one project row per
    history, its path updated)."""
    import shutil

    from toolkit.project import open_project

    good = tmp_path / "yn.csv"
    good.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(good), "--name", "yn"], project.path).exit_code == 0
    assert run(["prompts", "add", "yn", "Say yes or no."], project.path).exit_code == 0
    before = json.loads(run(["prompts", "list", "--json"], project.path).output)
    project.close()
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(project.path), str(moved))
    res = run(["tasks", "list"], moved)
    assert res.exit_code == 0 and "yn" in res.output
    after = json.loads(run(["prompts", "list", "--json"], moved).output)
    assert after == before and any(p["text"] == "Say yes or no." for p in after)
    reopened = open_project(moved)
    try:
        assert reopened.store.db["projects"].count == 1
        assert reopened.store.db["projects"].get(reopened.id)["path"] == str(moved.resolve())
    finally:
        reopened.close()


def test_import_bad_file_is_a_clear_error(project, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("goal,target\nhello,yes\n,no\n")
    res = run(["tasks", "import", str(bad)], project.path)
    assert res.exit_code == 1
    assert "row 2: column 'goal' is empty" in res.output
    assert project.store.list_tasks(project.id) == []


def test_prompts_diff_export_history(project, tmp_path):
    good = tmp_path / "yn.csv"
    good.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(good)], project.path).exit_code == 0
    assert run(["prompts", "add", "yn", "think step by step"], project.path).exit_code == 0
    assert run(["prompts", "add", "yn", "think slowly step by step", "--parent", "1"], project.path).exit_code == 0
    res = run(["prompts", "diff", "1", "2"], project.path)
    assert "slowly" in res.output and "prompt 1 (manual)" in res.output and "prompt 2 (edit)" in res.output
    assert "0 token(s) removed, 1 added, 4 unchanged" in res.output
    res = run(["prompts", "tag", "2", "--add", "best", "--add", "v2", "--note", "from review"], project.path)
    assert res.exit_code == 0 and "tags best, v2; note: from review" in res.output
    assert project.store.prompt_tags(2) == ["best", "v2"]
    res = run(["prompts", "tag", "2", "--remove", "v2"], project.path)
    assert project.store.prompt_tags(2) == ["best"] and project.store.prompt(2)["note"] == "from review"
    assert [p["id"] for p in project.store.list_prompts(project.id, search="best")] == [2]  # tags are searchable
    res = run(["prompts", "tag", "2", "--add", "two words"], project.path)
    assert res.exit_code == 1 and "no spaces or commas" in res.output
    assert project.store.prompt_tags(2) == ["best"]
    assert project.store.prompt(2)["text"] == "think slowly step by step"  # metadata only
    out = tmp_path / "p.json"
    assert run(["export", "2", "--format", "json", "-o", str(out)], project.path).exit_code == 0
    data = json.loads(out.read_text())
    assert data["prompt"] == "think slowly step by step" and data["answer"]["labels"] == ["no", "yes"]
    assert (project.path / "prompts" / "yn" / "0002.txt").read_text().endswith("think slowly step by step\n")
    assert run(["history", "path"], project.path).output.strip().endswith("history.db")
    assert run(["history", "backup", str(tmp_path / "b.db")], project.path).exit_code == 0
    assert (tmp_path / "b.db").exists()


@pytest.mark.slow
def test_demo_short_end_to_end(project):
    """The main job with a tiny budget: real torch optimization and real llama.cpp evaluation."""
    from toolkit.demo import run_demo

    console = Console(file=io.StringIO(), width=100)
    result = run_demo(project, console, steps=2, train_size=4, dev_size=4, test_size=6, budget_s=None)
    text = console.file.getvalue()
    # The verdict is the paired dev test's, said plainly either way.
    assert ("Kept the starting prompt: " in text) != ("Chosen on dev: " in text), text
    assert result["kept_initial"] == ("Kept the starting prompt" in text)
    if result["kept_initial"]:
        assert (
            "Change: none." in text
            and result["prompt"]
            == project.store.prompt(project.store.run(result["run_id"])["initial_prompt_id"])["text"]
        )
    from toolkit.tasks import DEMO_TASK_NAME

    task = project.store.find_task(project.id, DEMO_TASK_NAME)
    sizes = {s: len(project.store.examples(task["id"], s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 40, "dev": 60, "test": 100}
    assert "initial" in text and text.count("95% CI") == (1 if "Change: none." in text else 2), text
    run_row = project.store.run(result["run_id"])
    from toolkit.models import get_model

    assert run_row["status"] == "done" and run_row["model_sha256"] == get_model().gguf_sha256
    steps = project.store.steps(result["run_id"])
    assert [s["step"] for s in steps] == [0, 1] and all(s["candidates"] for s in steps)
    evs = project.store.evaluations()
    assert all(e["n"] == 6 and e["status"] == "done" for e in evs)
    if result["kept_initial"]:  # one prompt, scored once; nothing to compare
        assert len(evs) == 1 and f"gradprompt evals show {evs[0]['id']}" in text and "evals flipped" not in text
    else:
        assert len(evs) == 2 and f"gradprompt evals flipped {evs[0]['id']} {evs[1]['id']}" in text
        assert "gradprompt compare " in text
    assert open(result["export"]).read().startswith(result["prompt"])


def test_brackets_in_user_text_are_printed_as_written(project, tmp_path):
    """Rich markup is never applied to user text: dyck_languages-style inputs and prompts with [tags] print
    literally (no vanished text, no MarkupError)."""
    f = tmp_path / "brackets.csv"
    f.write_text(
        "input,target\n" + "".join(f'"[ ( < [/] > ) [bold] {i}",{"yes" if i % 2 else "no"}\n' for i in range(10))
    )
    res = run(["tasks", "import", str(f)], project.path)
    assert res.exit_code == 0, res.output
    prompt = "Close the [red]brackets[/red] [/] in order."
    assert run(["prompts", "add", "brackets", prompt], project.path).exit_code == 0
    for args in (["tasks", "show", "brackets"], ["prompts", "show", "1"], ["prompts", "list"]):
        res = CliRunner().invoke(cli, ["--project", str(project.path), *args], terminal_width=200)
        assert res.exit_code == 0, (args, res.output)
        said = res.output
        wanted = ["[/]", "[bold]"] if args[0] == "tasks" else ["[red]brackets[/red]", "[/] in order."]
        assert all(w in said for w in wanted), said
    missing = run(["prompts", "show", "99"], project.path)
    assert missing.exit_code == 1 and "Traceback" not in missing.output


def test_prompt_search_takes_any_text_and_matches_word_starts(project, tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0
    for text in ("Think step-by-step about the calendar.", 'Answer "A:" or "B:" only.', "Be brief."):
        assert run(["prompts", "add", "yn", text], project.path).exit_code == 0
    store = project.store
    found = lambda q: [p["id"] for p in store.list_prompts(project.id, search=q)]  # noqa: E731
    assert found("calen") == [1] and found("step-by-step") == [1] and found("only") == [2] and 2 in found("A:")
    assert found('"') == [2] and found("-") == [1] and found("nothing-like-this") == []
    assert found("BRIEF") == [3]
    for q in ("step-by-step", '"', "A:", "NEAR(", "*", "%"):
        res = run(["prompts", "list", "--search", q], project.path)
        assert res.exit_code == 0 and "Traceback" not in res.output, (q, res.output)


def test_export_paths_folders_and_overwrites(project, tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0
    assert run(["prompts", "add", "yn", "Yes or no?"], project.path).exit_code == 0
    (tmp_path / "afile").write_text("x")
    res = run(["export", "1", "-o", str(tmp_path / "afile" / "p.txt")], project.path)
    assert res.exit_code == 1 and "is a file, not a folder" in res.output and "Traceback" not in res.output
    res = run(["export", "1", "-o", "/proc/gradprompt-x/p.txt"], project.path)
    assert res.exit_code == 1 and "Traceback" not in res.output
    res = run(["export", "1", "-o", str(tmp_path / "newdir") + "/"], project.path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "newdir").is_dir() and [p.name for p in (tmp_path / "newdir").iterdir()] == ["yn-prompt-1.txt"]
    res = run(["export", "1", "--format", "json", "-o", str(tmp_path / "newdir")], project.path)  # existing folder
    assert res.exit_code == 0 and (tmp_path / "newdir" / "yn-prompt-1.json").is_file()
    target = tmp_path / "mine.txt"
    target.write_text("my notes")
    res = run(["export", "1", "-o", str(target)], project.path)
    assert res.exit_code == 1 and "--force" in res.output and target.read_text() == "my notes"
    assert run(["export", "1", "-o", str(target), "--force"], project.path).exit_code == 0
    assert target.read_text().startswith("Yes or no?")


def test_bad_budgets_and_sizes_are_refused_in_flag_names(project, tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0
    for args, said in (
        (["--budget", "-5"], "--budget -5"),
        (["--budget", "0"], "--budget 0"),
        (["--train-size", "0"], "'--train-size': 0 is not in the range 1<=x"),
        (["--method", "ape", "--budget", "0"], "--budget 0"),
    ):
        res = run(["optimize", "yn", "--dry-run", *args], project.path)
        # a value out of an option's range is click's usage error (exit 2); the rest are gradprompt's (exit 1)
        assert res.exit_code == (2 if "range" in said else 1) and said in res.output, (args, res.output)
    res = run(["bench", "--task", "yn", "--budget", "-1"], project.path)
    assert res.exit_code == 1 and "--budget -1" in res.output


def test_runs_show_summarises_and_keeps_ctrl_c_out_of_the_errors(project, tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0
    task = project.store.task(project.id, "yn")
    rid = project.store.create_run(
        project_id=project.id,
        task_id=task["id"],
        method="greater",
        model_id="m",
        model_sha256="abc123def456",
        seed=0,
        versions={},
        initial_prompt_id=None,
        config={
            "greater": {"mode": "direct", "steps": 9, "n_train": 4, "width": 0, "time_budget_s": 300.0},
            "initial_prompt": "Say [yes].",
        },
    )
    project.store.update_run(rid, status="stopped", error="KeyboardInterrupt: ")
    res = CliRunner().invoke(cli, ["--project", str(project.path), "runs", "show", str(rid)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "KeyboardInterrupt" not in res.output and "stopped" in res.output
    assert "Settings: mode direct, steps 9, train examples 4, budget s 300, width 0" in res.output
    assert "Starting prompt: Say [yes]." in res.output and f"runs resume {rid}" in res.output
    assert '"n_train"' not in res.output
    res = CliRunner().invoke(cli, ["--project", str(project.path), "runs", "show", str(rid), "--config"])
    assert '"n_train": 4' in res.output


def test_import_says_what_it_decided_and_why(project, tmp_path):
    many = tmp_path / "names.csv"  # 60 distinct answers in 60 rows: a text task, and the summary says why
    many.write_text("goal,target\n" + "".join(f"q{i},name{i}\n" for i in range(60)))
    res = run(["tasks", "import", str(many)], project.path)
    assert res.exit_code == 0 and "Answer: text" in res.output
    assert "Why: text: 60 distinct answers (more than --max-labels 20)" in res.output
    gsm = tmp_path / "gsm.jsonl"  # worked solutions ending in '#### N' without --answer-regex: warned, with the fix
    gsm.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} plus {i} is {2 * i}.\n#### {2 * i}"}) + "\n"
            for i in range(12)
        )
    )
    res = run(["tasks", "import", str(gsm), "--target-column", "answer"], project.path)
    assert res.exit_code == 0 and "can never match" in res.output and "--answer-regex" in res.output
    assert "####" in res.output
    res = run(
        ["tasks", "import", str(gsm), "--name", "gsm2", "--target-column", "answer", "--answer-regex", r"####\s*(.+)$"],
        project.path,
    )
    assert res.exit_code == 0 and "can never match" not in res.output and "Answer: number" in res.output
    labels = tmp_path / "wide.csv"  # 30 labels over 300 rows: the summary lists 12 and counts the rest
    labels.write_text("goal,target\n" + "".join(f"q{i},L{i % 30:02d}\n" for i in range(300)))
    res = run(["tasks", "import", str(labels), "--max-labels", "40"], project.path)
    assert res.exit_code == 0 and "30 labels" in res.output and "(18 more)" in res.output
    assert "L29" not in res.output.split("Label balance")[0]
    again = run(["tasks", "import", str(labels), "--max-labels", "40"], project.path)  # a duplicate name
    assert again.exit_code == 1 and "already exists" in again.output
    assert "Answer:" not in again.output  # refused before the summary, not after it


def test_commands_say_when_they_use_the_default_project(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GRADPROMPT_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["tasks", "list"])
    assert res.exit_code == 0 and "Using the default project" in res.output and "gradprompt init" in res.output
    res = CliRunner().invoke(cli, ["--project", str(tmp_path / "home" / "default-project"), "tasks", "list"])
    assert res.exit_code == 0 and "Using the default project" not in res.output


def test_diff_across_tasks_warns_and_a_vote_needs_distinct_voters(project, tmp_path):
    for name in ("one", "two"):
        path = tmp_path / f"{name}.csv"
        path.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
        assert run(["tasks", "import", str(path)], project.path).exit_code == 0
    a = project.add_prompt(project.store.find_task(project.id, "one"), "say yes", origin="manual")
    b = project.add_prompt(project.store.find_task(project.id, "two"), "say no", origin="manual")
    res = run(["prompts", "diff", str(a), str(b)], project.path)
    assert res.exit_code == 0 and "belongs to task one" in res.output and "do not compare" in res.output
    task = project.store.find_task(project.id, "one")
    examples = project.store.examples(task["id"], "test")
    evs = []
    for _ in range(2):  # the same prompt, model, runtime and settings twice: one voter
        ev = stored_evaluation(project.store, a, task, examples, [True] * len(examples), ci=(0.5, 1.0))
        evs.append(ev)
    res = run(["evals", "vote", str(evs[0]), str(evs[1])], project.path)
    assert res.exit_code == 1 and "one voter" in res.output
    res = run(["evals", "vote", str(evs[0]), str(evs[0])], project.path)
    assert res.exit_code == 1 and "more than once" in res.output


def test_every_list_command_prints_json(project, tmp_path):
    """`--json` on each list command: one JSON array whose rows carry what the table shows."""
    good = tmp_path / "yn.csv"
    good.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(good), "--name", "yn"], project.path).exit_code == 0
    assert run(["prompts", "add", "yn", "Answer [yes] or no."], project.path).exit_code == 0
    task = project.store.task(project.id, "yn")
    pid = project.store.list_prompts(project.id)[-1]["id"]
    stored_evaluation(project.store, pid, task, project.store.examples(task["id"], "test"), [True, False])
    list_commands = [p for p in _command_paths(cli) if p[-1] == "list"]
    assert sorted(" ".join(p) for p in list_commands) == [
        "evals list",
        "models list",
        "prompts list",
        "runs list",
        "tasks list",
    ]
    out = {}
    for path in list_commands:
        res = run([*path, "--json"], project.path)
        assert res.exit_code == 0, (path, res.output)
        out[path[0]] = json.loads(res.output)
        assert isinstance(out[path[0]], list)
    assert any(m["id"] == "smollm2-135m" and m["installed"] for m in out["models"])
    assert [(t["name"], t["splits"]["train"] + t["splits"]["dev"] + t["splits"]["test"]) for t in out["tasks"]] == [
        ("yn", 10)
    ]
    assert [p["text"] for p in out["prompts"] if p["id"] == pid] == ["Answer [yes] or no."]
    assert [(e["prompt_id"], e["task"], e["split"]) for e in out["evals"]] == [(pid, "yn", "test")]
    assert out["runs"] == []


def test_the_prompt_bold_x_and_the_input_bracket_soup_print_verbatim(project, tmp_path):
    """Issue 11's cases: a prompt `[bold]x[/]` and an input `[ ( ] )` print as written in every view."""
    f = tmp_path / "soup.csv"
    f.write_text("input,target\n" + "".join(f'"[ ( ] ) {i}",{"yes" if i % 2 else "no"}\n' for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0
    assert run(["prompts", "add", "soup", "[bold]x[/]"], project.path).exit_code == 0
    shown = {
        " ".join(args): CliRunner().invoke(cli, ["--project", str(project.path), *args], terminal_width=200)
        for args in (["tasks", "show", "soup"], ["prompts", "show", "1"], ["prompts", "list"])
    }
    for args, res in shown.items():
        assert res.exit_code == 0, (args, res.output)
    assert "[ ( ] ) 0" in shown["tasks show soup"].output
    assert "[bold]x[/]" in shown["prompts show 1"].output and "[bold]x[/]" in shown["prompts list"].output
