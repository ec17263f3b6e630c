"""Issue 28's reproductions: hostile input gives a clean message (no traceback), and nothing half-written.

Each test was run against the code before its fix and failed there (see the closing note of the change)."""

import errno
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import cli


def run(args, project_dir):
    return CliRunner().invoke(cli, ["--project", str(project_dir), *args])


def clean(res, code=1):
    """Exited with ``code`` and a message, never a Python traceback."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (AssertionError, TypeError, KeyError))
    if code == 1:
        assert isinstance(res.exception, SystemExit)
    return res.output


def _task(project):
    from toolkit.demo import ensure_demo_task

    return ensure_demo_task(project)


def test_a_parent_that_does_not_exist_is_refused_and_nothing_is_stored(project):
    task = _task(project)
    before = len(project.store.list_prompts(project.id))
    for parent in ("-1", "12345", "9223372036854775808"):
        res = run(["prompts", "add", task["name"], "x", "--parent", parent], project.path)
        out = clean(res, 1 if parent == "12345" else 2)
        assert ("No prompt with id 12345" in out) if parent == "12345" else ("--parent" in out)
    assert len(project.store.list_prompts(project.id)) == before
    assert not list((project.path / "prompts").rglob("*.txt"))[before:]


@pytest.mark.parametrize(
    "args",
    [
        ["evals", "show", "99999999999999999999999"],
        ["export", "99999999999999999999999"],
        ["runs", "show", "0"],
        ["prompts", "show", "--", "-3"],
    ],
)
def test_ids_out_of_range_are_refused_by_name(project, args):
    out = clean(run(args, project.path), 2)
    assert "is not in the range" in out


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "1", "--limit", "0"],
        ["eval", "1", "--limit", "-1"],
        ["eval", "1", "--limit", "9223372036854775808"],
        ["eval", "1", "--max-new-tokens", "0"],
        ["optimize", "T", "--train-size", "99999999999999999999999", "--dry-run"],
        ["optimize", "T", "--seed", "75557863725914323419136", "--dry-run"],
        ["optimize", "T", "--method", "ape", "--steps", "-2", "--dry-run"],
        ["optimize", "T", "--method", "initial", "--dev-size", "-5", "--dry-run"],
    ],
)
def test_counts_out_of_range_are_refused_before_any_work(project, args):
    out = clean(run(args, project.path), 2)
    assert "is not in the range" in out or "Invalid value" in out


def test_an_empty_initial_prompt_is_refused_not_replaced(project):
    task = _task(project)
    out = clean(run(["optimize", task["name"], "--initial-prompt", "  ", "--dry-run"], project.path))
    assert "--initial-prompt is empty" in out


def test_baseline_settings_out_of_range_are_refused_in_the_core_too():
    from toolkit.baselines import BaselineConfig
    from toolkit.errors import ConfigError

    for bad in ({"max_steps": -1}, {"n_dev": -5}, {"n_train": 0}, {"budget_s": 0}, {"n_shots": 0}):
        with pytest.raises(ConfigError):
            BaselineConfig(method="ape", **bad)


def test_a_failed_library_file_write_stores_no_row(project, monkeypatch):
    """Both or neither: the file is written inside the row's transaction; a failed write rolls the row back."""
    from toolkit.errors import ProjectError

    task = _task(project)
    before = [p["id"] for p in project.store.list_prompts(project.id)]

    def full(prompt_id):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project, "write_prompt_file", full)
    with pytest.raises(ProjectError, match="nothing was stored"):
        project.add_prompt(task, "A prompt on a full disk.", origin="manual")
    assert [p["id"] for p in project.store.list_prompts(project.id)] == before


def test_a_database_that_cannot_grow_keeps_neither_row_nor_file(project):
    """A full disk in SQLite (its page limit stands in for the disk): no row, no library file, and the command
    line's message says disk full."""
    from toolkit.cli import resource_error

    task = _task(project)
    files = sorted((project.path / "prompts").rglob("*.txt"))
    rows = len(project.store.list_prompts(project.id))
    db = project.store.db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as info:
        project.add_prompt(task, "R " + "f" * 100_000, origin="manual")
    db.execute("PRAGMA max_page_count = 1073741823")
    assert resource_error(info.value).startswith("Disk full")
    assert len(project.store.list_prompts(project.id)) == rows
    assert sorted((project.path / "prompts").rglob("*.txt")) == files


def _damage(project, page: int = 4):
    """Zero one page of the history (``dd if=/dev/zero of=history.db bs=4096 seek=PAGE count=1 conv=notrunc``);
    ``page=-1``: the last page, which holds examples that most commands never read."""
    history = project.history_path
    project.close()
    size = history.stat().st_size
    with open(history, "r+b") as f:
        f.seek(4096 * page if page >= 0 else size - 4096)
        f.write(b"\0" * 4096)
    return history


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "list"],
        ["prompts", "list"],
        ["prompts", "add", "demo-sentiment", "Is it positive?"],
        ["runs", "list"],
        ["evals", "list"],
    ],
)
@pytest.mark.parametrize("page", [4, -1])
def test_a_damaged_history_is_reported_with_a_way_out_and_never_written(project, args, page):
    _task(project)
    project.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    history = _damage(project, page)
    before = history.read_bytes()
    out = clean(run(args, project.path))
    assert "is damaged" in out and ".recover" in out and "move the file away" not in out
    assert history.read_bytes() == before


def test_history_check_reports_ok_and_damage(project):
    _task(project)
    out = clean(run(["history", "check"], project.path), 0)
    assert "ok" in out
    project.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(project)
    assert "is damaged" in clean(run(["history", "check"], project.path))


def test_an_empty_history_file_is_not_silently_a_new_history(project):
    history = project.history_path
    project.close()
    for extra in ("-wal", "-shm"):
        history.with_name(history.name + extra).unlink(missing_ok=True)
    history.write_bytes(b"")
    out = clean(run(["tasks", "list"], project.path))
    assert "is empty (0 bytes)" in out
    assert history.read_bytes() == b""


def test_a_history_folder_that_is_a_file(tmp_path):
    from toolkit.project import init_project

    proj = init_project(tmp_path / "p", name="p")
    folder = proj.history_path.parent
    proj.close()
    import shutil

    shutil.rmtree(folder)
    folder.write_text("not a folder")
    out = clean(run(["tasks", "list"], tmp_path / "p"))
    assert "is a file" in out


@pytest.mark.parametrize(
    "error, says, never",
    [
        (sqlite3.OperationalError("database or disk is full"), "is full", "move it away"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read-only", "move it away"),
        (sqlite3.OperationalError("unable to open database file"), "read-only", "move it away"),
        (sqlite3.DatabaseError("database disk image is malformed"), "is damaged", "move it away"),
        (sqlite3.DatabaseError("file is not a database"), "is not a gradprompt history", "is damaged"),
    ],
)
def test_history_problems_are_told_apart(tmp_path, error, says, never):
    from toolkit.project import history_problem

    text = history_problem(tmp_path / "history.db", error)
    assert says in text and never not in text


def test_confusion_tables_show_every_label():
    from toolkit.cli import _confusion_table

    table = _confusion_table(
        {"world": {"business": 3}, "science": {"business": 2}}, labels=("business", "science", "sports", "world")
    )
    headers = [c.header for c in table.columns]
    assert headers == ["gold \\ predicted", "business", "science", "sports", "world"]


@pytest.mark.parametrize(
    "text, options, says",
    [
        ('{"input": "x \\ud800", "target": "a"}\n{"input": "y", "target": "b"}\n', {}, "half of a UTF-16 pair"),
        ("input,target\nabc,b\ndef,c\n", {"answer_regex": "(x)?"}, "captures nothing"),
    ],
)
def test_bad_rows_are_a_clean_import_error(tmp_path, text, options, says):
    from toolkit.errors import DatasetError
    from toolkit.tasks import ImportOptions, read_task_file

    path = tmp_path / ("t.jsonl" if text.startswith("{") else "t.csv")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=says):
        read_task_file(path, options=ImportOptions(**options))


def test_split_fractions_that_overflow_are_refused():
    from toolkit.errors import DatasetError
    from toolkit.tasks import parse_split

    with pytest.raises(DatasetError, match="three fractions"):
        parse_split("1e308,1e308,1e308")
    assert parse_split("1,1,2") == (1.0, 1.0, 2.0)


def test_arguments_that_are_not_utf8_are_refused_by_position(project):
    task = _task(project)
    before = len(project.store.list_prompts(project.id))
    bad = b"bad \xff\xfe".decode("utf-8", "surrogateescape")
    for args in (["prompts", "add", task["name"], bad], ["prompts", "add", task["name"], "ok", "--note", bad]):
        out = clean(run(args, project.path), 2)
        assert "not valid UTF-8" in out and "\\xff" in out
    assert len(project.store.list_prompts(project.id)) == before


def test_flipped_says_whether_the_difference_is_significant(project):
    from conftest import stored_evaluation

    task = _task(project)
    examples = project.store.examples(task["id"], "test")[:20]
    pa = project.add_prompt(task, "A.", origin="manual")
    pb = project.add_prompt(task, "B.", origin="manual")
    a = stored_evaluation(project.store, pa, task, examples, [True] * 10 + [False] * 10)
    b = stored_evaluation(project.store, pb, task, examples, [True] * 20)
    out = clean(run(["evals", "flipped", str(a), str(b)], project.path), 0)
    assert "10 fixed, 0 broken" in out and "McNemar p = 0.00195" in out and "a significant difference" in out


def test_a_manifest_with_wrong_types_is_named_listed_as_broken_and_removable(project, monkeypatch, tmp_path):
    from toolkit.models import user_manifest_dir

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    bad = user_manifest_dir() / "bad.toml"
    bad.write_text('id = "bad"\ngguf = "x"\n')
    out = clean(run(["models", "list"], project.path), 0)
    assert "smollm2-135m" in out and "Not listed" in out and "'gguf' must be a table" in out
    assert "'gguf' must be a table" in clean(run(["eval", "1", "--model", "bad"], project.path))
    clean(run(["models", "remove", "bad"], project.path), 0)
    assert not bad.exists()


def test_a_user_manifest_cannot_import_an_arbitrary_module(tmp_path):
    from toolkit.errors import ConfigError
    from toolkit.models import _read_manifest

    path = tmp_path / "evil.toml"
    path.write_text('id = "evil"\n[gguf]\npackage = "antigravity"\nfile = "x.gguf"\n')
    info = _read_manifest(path, builtin=False)  # listed (it may be a model package not installed yet)...
    with pytest.raises(ConfigError, match="not a package that ships a model"):
        info.gguf_path()  # ...but never imported
    path.write_text('id = "evil"\n[gguf]\npackage = "os.path"\nfile = "x.gguf"\n')
    with pytest.raises(ConfigError, match="not a package name"):
        _read_manifest(path, builtin=False)


def test_prompts_show_never_sends_control_characters_to_the_terminal(project):
    task = _task(project)
    pid = project.add_prompt(
        task, "Red \x1b[31malert\x1b[0m and a bell\x07.\nSecond line.", origin="manual", note="[/bold] \x1b]0;title\x07"
    )
    out = clean(run(["prompts", "show", str(pid)], project.path), 0)
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[31malert" in out and "Second line." in out and "[/bold]" in out


def test_a_closed_output_pipe_is_a_message_not_a_silent_failure(tmp_path):
    """`gradprompt tasks import F | head -1` (here `| true`, which closes the pipe at once): the import is stored,
    the command says why its output stopped and exits 141 as a pipe-stopped writer does."""
    import os
    import subprocess
    import sys

    from toolkit.project import init_project, open_project

    init_project(tmp_path / "p", name="p").close()
    src = tmp_path / "t.csv"
    src.write_text("input,target\n" + "".join(f"q{i},{'ab'[i % 2]}\n" for i in range(20)))
    exe = Path(sys.executable).parent / "gradprompt"  # the installed command, as a user runs it
    cmd = f"{exe} --project {tmp_path / 'p'} tasks import {src} | true; echo ${{PIPESTATUS[0]}}"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert res.stdout.strip().splitlines()[-1] == "141", res.stdout + res.stderr
    assert "Output stopped" in res.stderr and "Traceback" not in res.stderr
    proj = open_project(tmp_path / "p")
    assert proj.store.find_task(proj.id, "t")
    proj.close()


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("big.csv", "h" * 140_000 + ",target\nx,y\n", "header row is not readable"),
        ("int.jsonl", '{"input": "x", "target": ' + "9" * 5000 + "}\n", "not readable as JSON"),
        ("int.json", '[{"input": "x", "target": ' + "9" * 5000 + "}]", "not readable as JSON"),
    ],
)
def test_files_beyond_the_parsers_limits_are_clean_import_errors(tmp_path, name, data, says):
    from toolkit.errors import DatasetError
    from toolkit.tasks import read_task_file

    path = tmp_path / name
    path.write_text(data)
    with pytest.raises(DatasetError, match=says):
        read_task_file(path)


def test_deeply_nested_settings_are_a_clean_error(project):
    from toolkit.project import SETTINGS_FILE

    (project.path / SETTINGS_FILE).write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    out = clean(run(["tasks", "list"], project.path))
    assert "nested too deeply" in out


def test_an_export_path_that_cannot_be_written_is_a_message(project, tmp_path):
    task = _task(project)
    pid = project.add_prompt(task, "Is it positive?", origin="manual")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "out.txt", tmp_path / ("n" * 300 + ".txt")):
        out = clean(run(["export", str(pid), "-o", str(target)], project.path))
        assert "Cannot write" in out or "File name too long" in out


def test_a_chat_template_file_that_is_not_text_or_does_not_render_is_refused(tmp_path):
    from toolkit.models import get_model

    gguf = str(get_model().gguf_path())
    bad = tmp_path / "t.jinja"
    bad.write_bytes(b"\xff\xfe{{ x }}")
    res = CliRunner().invoke(cli, ["models", "add", "x1", "--gguf", gguf, "--chat-template-file", str(bad)])
    assert "not a text file" in clean(res)
    bad.write_text("{% for m in messages %}")
    res = CliRunner().invoke(cli, ["models", "add", "x2", "--gguf", gguf, "--chat-template-file", str(bad)])
    assert "chat template cannot be rendered" in clean(res)


@pytest.mark.parametrize("damage", ["config", "empty-weights", "cut-weights"])
def test_models_add_refuses_an_incomplete_hugging_face_folder(tmp_path, monkeypatch, damage):
    """Issue 28: a folder with truncated JSON or an empty safetensors file was accepted and failed at first load."""
    import json as _json

    from toolkit.errors import ModelFileError
    from toolkit.models import add_model

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "hf"
    folder.mkdir()
    header = _json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    whole = len(header).to_bytes(8, "little") + header + b"\0" * 8
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(whole)
    add_model("ok-model", hf=str(folder))  # the whole folder is taken
    if damage == "config":
        (folder / "config.json").write_text('{"model_type": "lla')
    elif damage == "empty-weights":
        (folder / "model.safetensors").write_bytes(b"")
    else:
        (folder / "model.safetensors").write_bytes(whole[:-4])
    with pytest.raises(ModelFileError, match="not valid JSON|not a complete safetensors"):
        add_model("bad-model", hf=str(folder))
