"""Property-based fuzzing (hypothesis) of every reader of user files: dataset importers, project settings,
model manifests, the history database. Each input either loads or raises the project's own error (never a
raw traceback), and a failed import leaves no rows behind."""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import GradpromptError
from toolkit.tasks import ImportOptions, read_task_file

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

cell = st.text(alphabet=string.printable + "é€\u2028\x00\ufeff", max_size=30)
rows = st.lists(st.lists(cell, min_size=0, max_size=4), min_size=0, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


def _write(tmp_path_factory, suffix: str, data: bytes):
    path = tmp_path_factory.mktemp("fuzz") / f"t{suffix}"
    path.write_bytes(data)
    return path


def _import_ok_or_own_error(path, options=None):
    try:
        task = read_task_file(path, options=options)
    except GradpromptError:
        return None
    assert task.examples and all(isinstance(e.input, str) and isinstance(e.answer, str) for e in task.examples)
    return task


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".txt"]))
def test_random_bytes_import_or_fail_cleanly(tmp_path_factory, data, suffix):
    _import_ok_or_own_error(_write(tmp_path_factory, suffix, data))


@FUZZ
@given(header=st.lists(cell, min_size=1, max_size=4), body=rows, sep=st.sampled_from([",", "\t", ";"]))
def test_csv_like_tables_import_or_fail_cleanly(tmp_path_factory, header, body, sep):
    text = "\n".join(sep.join(r) for r in [header, *body])
    _import_ok_or_own_error(_write(tmp_path_factory, ".csv" if sep != "\t" else ".tsv", text.encode("utf-8")))


@FUZZ
@given(values=st.lists(json_values, max_size=6), lines=st.booleans())
def test_json_structures_import_or_fail_cleanly(tmp_path_factory, values, lines):
    text = "\n".join(json.dumps(v) for v in values) if lines else json.dumps(values)
    _import_ok_or_own_error(_write(tmp_path_factory, ".jsonl" if lines else ".json", text.encode()))


def test_deeply_nested_json_is_a_clean_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GradpromptError):
        read_task_file(path)


@FUZZ
@given(
    template=st.text(alphabet="{}abcinput_ !0:", max_size=14),
    regex=st.text(alphabet="()[]*+?.\\ab#$^", max_size=8),
    split=st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 3),
    max_labels=st.integers(-2, 40),
    kind=st.sampled_from([None, "label", "number", "text"]),
)
def test_import_options_are_checked(tmp_path_factory, template, regex, split, max_labels, kind):
    path = _write(
        tmp_path_factory,
        ".csv",
        ("input,target\n" + "".join(f"q{i},{'yes' if i % 3 else 'no'}\n" for i in range(12))).encode(),
    )
    opts = ImportOptions(
        input_template=template or None,
        answer_regex=regex or None,
        split=split,
        max_labels=max_labels,
        answer_kind=kind,
    )
    _import_ok_or_own_error(path, opts)


@FUZZ
@given(body=rows)
def test_a_failed_or_good_import_leaves_whole_rows_only(tmp_path_factory, body):
    from toolkit.store import Store

    text = "\n".join(",".join(r) for r in [["input", "target"], *body])
    path = _write(tmp_path_factory, ".csv", text.encode())
    store = Store(memory=True)
    pid = store.ensure_project("p", "/tmp/p")
    task = _import_ok_or_own_error(path)
    if task is not None:
        try:
            store.add_task(pid, task)
        except GradpromptError:
            task = None
    n = store.db["examples"].count
    assert n == (len(task.examples) if task is not None else 0)
    store.close()


@FUZZ
@given(data=st.binary(max_size=300))
def test_project_settings_files_open_or_fail_cleanly(tmp_path_factory, data):
    from toolkit.project import SETTINGS_FILE, init_project, open_project

    folder = tmp_path_factory.mktemp("proj")
    init_project(folder, name="p").close()
    (folder / SETTINGS_FILE).write_bytes(data)
    try:
        project = open_project(folder)
    except GradpromptError:
        return
    try:  # opened: what it read is usable settings
        assert isinstance(project.name, str) and isinstance(project.default_model, str)
        assert project.store.integrity_check() == ["ok"]
    finally:
        project.close()


toml_value = st.sampled_from(['"x"', '"a.gguf"', "1", "true", "[1, 2]", "{ a = 1 }", '""', "3.5"])
manifest_toml = st.builds(
    lambda id_, name, gguf, hf: (
        f"id = {id_}\nname = {name}\n" + (f"gguf = {gguf}\n" if gguf else "") + (f"[hf]\npath = {hf}\n" if hf else "")
    ),
    st.sampled_from(['"m1"', "1", '"bad id"']),
    toml_value,
    st.one_of(st.none(), toml_value),
    st.one_of(st.none(), toml_value),
).map(str.encode)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(alphabet=string.printable, max_size=300).map(str.encode) | manifest_toml)
def test_model_manifests_load_or_fail_cleanly(tmp_path_factory, data):
    from toolkit.models import _read_manifest

    path = _write(tmp_path_factory, ".toml", data)
    try:
        info = _read_manifest(path, builtin=False)
    except GradpromptError:
        return
    # loaded: every field has its type, so listing, removing and loading the model cannot fail on it
    assert isinstance(info.id, str) and isinstance(info.name, str) and isinstance(info.chat_template, str)
    assert all(isinstance(v, str) for v in (info.gguf_package, info.gguf_file, info.gguf_path_str, info.hf_path))
    assert isinstance(info.default, bool) and isinstance(info.gguf_assemble, bool)


@FUZZ
@given(data=st.binary(max_size=2000), keep_header=st.booleans())
def test_history_databases_open_or_fail_cleanly(tmp_path_factory, data, keep_header):
    from toolkit.project import init_project, open_project

    folder = tmp_path_factory.mktemp("proj")
    proj = init_project(folder, name="p")
    history = proj.history_path
    proj.close()
    good = history.read_bytes()
    for side in ("-wal", "-shm"):
        history.with_name(history.name + side).unlink(missing_ok=True)
    blob = (good[:100] + data + good[100 + len(data) :]) if keep_header else data
    history.write_bytes(blob)
    try:
        project = open_project(folder)
    except GradpromptError:
        assert history.read_bytes() == blob  # refused: never written to
        return
    try:  # opened: a history that passes SQLite's check and reads
        assert project.store.integrity_check() == ["ok"]
        project.store.list_tasks(project.id)
    finally:
        project.close()


# -- the command line itself: arguments, files and options as a hostile user gives them -------------------------

hostile_text = st.text(
    alphabet=st.characters(codec=None, categories=("L", "N", "P", "S", "Z", "Cc", "Cs")), max_size=40
) | st.sampled_from(["", " ", "{input}", "{{7*7}}", "\\n\\t\\\\", "$x", "-1", "0", "9223372036854775808", "--"])
hostile_int = st.integers(min_value=-(2**70), max_value=2**70).map(str) | hostile_text


@st.composite
def cli_calls(draw):
    kind = draw(st.sampled_from(["add", "show", "list", "import", "evals", "runs", "tasks"]))
    if kind == "add":
        args = ["prompts", "add", draw(st.sampled_from(["t", "nope", ""])), draw(hostile_text)]
        if draw(st.booleans()):
            args += ["--parent", draw(hostile_int)]
        if draw(st.booleans()):
            args += ["--note", draw(hostile_text)]
        return args, None
    if kind == "show":
        return ["prompts", "show", draw(hostile_int)], None
    if kind == "list":
        return ["prompts", "list", "--search", draw(hostile_text)], None
    if kind == "evals":
        return ["evals", "show", draw(hostile_int)], None
    if kind == "runs":
        return ["runs", "show", draw(hostile_int)], None
    if kind == "tasks":
        return ["tasks", "show", draw(hostile_text)], None
    body = draw(rows)
    text = "\n".join(",".join(r) for r in [["input", "target"], *body])
    args = ["tasks", "import", "FILE", "--name", draw(st.sampled_from(["u", "t", "x y", "../z", ""]))]
    if draw(st.booleans()):
        args += ["--split", draw(st.sampled_from(["1e308,1e308,1e308", "0,0,0", "1,1,2", "a", "-1,1,1"]))]
    if draw(st.booleans()):
        args += ["--answer-regex", draw(st.sampled_from(["(x)?", "(", "^(.)", ".*"]))]
    return args, text


def _run_calls(folder, calls) -> list[int]:
    """Run ``calls`` against a fresh project holding task ``t``; check the history after each; the exit codes."""
    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.project import init_project, open_project
    from toolkit.tasks import read_task_file

    proj = init_project(folder / "p", name="p")
    src = folder / "t.csv"
    src.write_text("input,target\n" + "\n".join(f"q{i},{'ab'[i % 2]}" for i in range(12)) + "\n")
    proj.store.add_task(proj.id, read_task_file(src, name="t"))
    proj.close()
    codes = []
    for args, text in calls:
        if text is not None:
            (folder / "in.csv").write_text(text, encoding="utf-8", errors="surrogateescape")
            args = [str(folder / "in.csv") if a == "FILE" else a for a in args]
        res = CliRunner().invoke(cli, ["--project", str(folder / "p"), *args])
        codes.append(res.exit_code)
        assert res.exit_code in (0, 1, 2), (args, res.output, res.exception)
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
        assert "Traceback" not in res.output
        proj = open_project(folder / "p")
        try:
            assert proj.store.integrity_check() == ["ok"]
            prompts = proj.store.list_prompts(proj.id)
            files = list((folder / "p" / "prompts").rglob("*.txt"))
            assert len(files) == len(prompts), (args, len(files), len(prompts))
            for task in proj.store.list_tasks(proj.id):
                assert proj.store.examples(task["id"]), task["name"]
        finally:
            proj.close()
    return codes


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(calls=st.lists(cli_calls(), min_size=1, max_size=4))
def test_the_command_line_succeeds_or_fails_cleanly_and_never_half_writes(tmp_path_factory, calls):
    """Every call exits 0, 1 (a GradpromptError's message) or 2 (a usage error), never with a traceback; after
    each one the history passes SQLite's integrity check, every stored prompt has its library file and every
    task its examples (no partial rows or files)."""
    _run_calls(tmp_path_factory.mktemp("cli"), calls)


def test_the_command_line_harness_lets_good_calls_through(tmp_path):
    """The fuzz harness above is not passed by refusing everything: the same checks with calls that must work."""
    body = "\n".join(f"text {i},{'xy'[i % 2]}" for i in range(10))
    calls = [
        (["prompts", "add", "t", "A prompt with {input}, {{7*7}} and \\n in it."], None),
        (["prompts", "add", "t", "Edited.", "--parent", "1", "--note", "é€"], None),
        (["prompts", "show", "2"], None),
        (["tasks", "import", "FILE", "--name", "u", "--split", "1,1,2"], "input,target\n" + body),
        (["tasks", "show", "u"], None),
    ]
    assert _run_calls(tmp_path, calls) == [0, 0, 0, 0, 0]
