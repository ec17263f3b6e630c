import json

import pytest
from conftest import SHARED, needs_shared

from toolkit.errors import DatasetError
from toolkit.tasks import ImportOptions, assign_splits, read_task_file


def write(path, text, mode="w"):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@needs_shared
def test_bbh_file_imports_with_no_flags():
    task = read_task_file(SHARED / "bbh" / "date_understanding.csv")
    assert task.name == "date_understanding"
    assert task.spec.kind == "label"
    # "(A)".."(F)" become A..F, and the label set comes from the data (the reference listed only A-E).
    assert task.spec.labels == ("A", "B", "C", "D", "E", "F")
    assert "A, B, C, D, E, F" in task.spec.extractor
    sizes = task.split_sizes()
    assert sum(sizes.values()) == 250 and sizes["test"] == 100 and sizes["dev"] == 50


def test_csv_tsv_jsonl_json_read_the_same(tmp_path):
    rows = [("good film", "positive"), ("bad film", "negative"), ("great", "positive"), ("awful", "negative")]
    write(tmp_path / "a.csv", "text,label\n" + "".join(f"{i},{t}\n" for i, t in rows))
    write(tmp_path / "a.tsv", "text\tlabel\n" + "".join(f"{i}\t{t}\n" for i, t in rows))
    write(tmp_path / "a.jsonl", "".join(json.dumps({"text": i, "label": t}) + "\n" for i, t in rows))
    write(tmp_path / "a.json", json.dumps([{"text": i, "label": t} for i, t in rows]))
    tasks = [read_task_file(tmp_path / f"a.{ext}", name="t") for ext in ("csv", "tsv", "jsonl", "json")]
    for task in tasks:
        assert [(e.input, e.answer) for e in task.examples] == rows
        assert task.spec.kind == "label" and task.spec.labels == ("negative", "positive")


def test_number_answers_with_regex_and_template(tmp_path):
    rows = [{"q": f"What is {i} + {i}?", "ctx": "math", "solution": f"Add them.\n#### {2 * i}"} for i in range(10)]
    write(tmp_path / "gsm.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    opts = ImportOptions(input_template="[{ctx}] {q}", target_column="solution", answer_regex=r"####\s*(.+)$")
    task = read_task_file(tmp_path / "gsm.jsonl", options=opts)
    assert task.spec.kind == "number"
    assert task.examples[3].input == "[math] What is 3 + 3?"
    assert task.examples[3].answer == "6"
    assert task.spec.is_correct("The answer is 6.0", "6")


def test_free_text_detected(tmp_path):
    write(tmp_path / "ant.csv", "input,output\n" + "".join(f"word{i},antonym{i}\n" for i in range(30)))
    assert read_task_file(tmp_path / "ant.csv").spec.kind == "text"


def test_splits_are_stable_and_seeded():
    a = assign_splits(100, (0.4, 0.2, 0.4), seed=1)
    assert a == assign_splits(100, (0.4, 0.2, 0.4), seed=1)
    assert a != assign_splits(100, (0.4, 0.2, 0.4), seed=2)
    assert a.count("train") == 40 and a.count("dev") == 20 and a.count("test") == 40


def test_separate_test_file(tmp_path):
    write(tmp_path / "train.csv", "goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    write(tmp_path / "test.csv", "goal,target\n" + "".join(f"t{i},{'yes' if i % 2 else 'no'}\n" for i in range(4)))
    task = read_task_file(tmp_path / "train.csv", name="yn", test_file=tmp_path / "test.csv")
    assert [e.input for e in task.split("test")] == ["t0", "t1", "t2", "t3"]
    assert len(task.split("train")) + len(task.split("dev")) == 10 and task.split("dev")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "goal,target\n", "no examples"),
        ("cols.csv", "foo,bar\n1,2\n", "cannot tell which column"),
        ("blank.csv", "goal,target\nhello,yes\n,no\nx,yes\n", "row 2: column 'goal' is empty"),
        ("bytes.csv", b"goal,target\nhello,yes\n\xff\xfe bad,no\n", "line 3: bytes that are not UTF-8"),
        ("bad.jsonl", '{"input": "a", "target": "x"}\n{"input": \n', "line 2: not valid JSON"),
        ("extra.csv", "goal,target\na,b,c\n", "row 1: 3 fields but the header has 2"),
        ("one.csv", "goal,target\na,yes\nb,yes\nc,yes\n", "only one distinct answer"),
    ],
)
def test_bad_input_names_file_row_column(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DatasetError) as info:
        read_task_file(path)
    assert message in str(info.value)
    assert name in str(info.value)


def test_label_set_too_large(tmp_path):
    path = write(tmp_path / "many.csv", "goal,label\n" + "".join(f"q{i},L{i % 25}\n" for i in range(100)))
    with pytest.raises(DatasetError, match="25 distinct answers, too many for a label set"):
        read_task_file(path, options=ImportOptions(answer_kind="label"))


def test_missing_named_column_lists_columns(tmp_path):
    path = write(tmp_path / "x.csv", "goal,target\na,yes\nb,no\n")
    with pytest.raises(DatasetError, match="no column 'question'.*Columns are: goal, target"):
        read_task_file(path, options=ImportOptions(input_column="question"))


def test_import_is_atomic_and_duplicates_refused(project, tmp_path):
    store = project.store
    good = write(tmp_path / "yn.csv", "goal,target\na,yes\nb,no\nc,yes\nd,no\n")
    store.add_task(project.id, read_task_file(good, name="yn"))
    with pytest.raises(DatasetError, match="already exists"):
        store.add_task(project.id, read_task_file(good, name="yn"))
    bad = write(tmp_path / "bad.csv", "goal,target\na,yes\n,no\n")
    with pytest.raises(DatasetError):
        store.add_task(project.id, read_task_file(bad, name="bad"))
    assert [t["name"] for t in store.list_tasks(project.id)] == ["yn"]
    assert store.db["examples"].count == 4
    # The store's own transaction: a write that fails after the task row and a first batch of 500 examples
    # were inserted leaves nothing behind.
    import dataclasses

    big = write(
        tmp_path / "big.csv", "goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(700))
    )
    task = read_task_file(big, name="big")

    class Broken:
        def __getattr__(self, name):
            raise OSError("disk went away")

    examples = list(task.examples)
    examples[600] = Broken()
    with pytest.raises(OSError, match="disk went away"):
        store.add_task(project.id, dataclasses.replace(task, examples=examples))
    assert [t["name"] for t in store.list_tasks(project.id)] == ["yn"]
    assert store.db["examples"].count == 4


@needs_shared
def test_bbh_rows_that_break_the_option_pattern_are_reported():
    task = read_task_file(SHARED / "bbh" / "movie_recommendation.csv")
    assert task.spec.labels == ("A", "B", "C", "D", "E", "Monsters, Inc")
    assert "Monsters, Inc" in task.options["warnings"][0] and "not an option letter" in task.options["warnings"][0]


def test_labels_differing_only_by_case_are_merged_and_reported(tmp_path):
    from toolkit.tasks import read_task_file

    rows = ["negative", "Negative", "NEGATIVE", "negative", "positive", "Positive ", "POSITIVE", "positive"] * 3
    f = tmp_path / "case.csv"
    f.write_text("input,target\n" + "".join(f"review {i},{a}\n" for i, a in enumerate(rows)))
    task = read_task_file(f)
    assert task.spec.labels == ("negative", "positive")
    assert {e.answer for e in task.examples} == {"negative", "positive"}
    assert any("differ only by case" in w for w in task.options["warnings"])
