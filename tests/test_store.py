import sqlite3

import pytest
from sqlite_utils.migrations import Migrations

from toolkit.store import Store, apply_migrations, migrations
from toolkit.tasks import read_task_file


def test_migrations_apply_once_in_wal_mode(tmp_path):
    path = tmp_path / "h.db"
    s = Store(path)
    assert s.db.journal_mode == "wal"
    assert [m.name for m in migrations.applied(s.db)] == [
        "m001_initial",
        "m002_prompt_search",
        "m003_benches",
        "m004_step_dev_accuracy",
        "m005_step_search",
        "m006_owner",
        "m007_indexes",
        "m008_prompt_parts",
        "m009_memorization",
    ]
    s.close()
    s2 = Store(path)
    assert apply_migrations(s2.db) == []
    s2.close()


def test_failed_migration_rolls_back(store):
    broken = Migrations("broken")

    @broken()
    def m900_broken(db):
        db["half_done"].insert({"x": 1})
        db.execute("create table half_done_too (x int)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        apply_migrations(store.db, broken)
    assert "half_done" not in store.db.table_names()
    assert "half_done_too" not in store.db.table_names()
    assert broken.applied(store.db) == []


def test_prompts_lineage_search_runs_and_steps(store):
    pid = store.ensure_project("p", "/tmp/p")
    p1 = store.add_prompt(pid, None, "think step by step", origin="initial")
    p2 = store.add_prompt(pid, None, "reason carefully step by step", origin="run", parent_id=p1)
    assert [r["id"] for r in store.lineage(p2)] == [p2, p1]
    assert [r["id"] for r in store.list_prompts(pid, search="carefully")] == [p2]
    run = store.create_run(
        project_id=pid,
        task_id=None,
        method="greater",
        model_id="m",
        model_sha256="abc",
        config={"a": 1},
        seed=3,
        versions={"torch": "x"},
        initial_prompt_id=p1,
    )
    store.add_step(
        run,
        {
            "step": 0,
            "position": 0,
            "prompt_before": "a",
            "prompt_after": "b",
            "prompt_ids": [1, 2],
            "chosen_token": "b",
            "accepted": 1,
            "candidates": [{"token": 1}],
            "train_score": 0.5,
            "train_accuracy": 0.5,
            "state": {"pos": 1},
            "timings": {"gradient": 1.0},
        },
    )
    steps = store.steps(run)
    assert steps[0]["state"] == {"pos": 1} and steps[0]["candidates"] == [{"token": 1}]
    assert store.run(run)["config"] == {"a": 1}


def test_backup_is_a_readable_copy(tmp_path):
    s = Store(tmp_path / "h.db")
    pid = s.ensure_project("p", "/x")
    s.add_prompt(pid, None, "hello", origin="manual")
    out = s.backup(tmp_path / "copy.db")
    con = sqlite3.connect(out)
    assert con.execute("select text from prompts").fetchall() == [("hello",)]


def test_one_store_is_safe_to_share_between_a_writer_and_reader_threads(tmp_path):
    """The TUI reads the store while a background run writes to it (regression: one shared connection
    interleaved sqlite-utils savepoints across threads and failed with 'no such savepoint')."""
    import sys
    import threading

    from toolkit.tasks import read_task_file

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        s = Store(tmp_path / "h.db")
        pid = s.ensure_project("p", "/x")
        data = tmp_path / "t.csv"
        data.write_text("input,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
        s.add_task(pid, read_task_file(data))
        errors: list[BaseException] = []
        n = 200
        done = threading.Event()

        def writer():
            try:
                for i in range(n):
                    s.add_prompt(pid, None, f"prompt {i}", origin="manual")
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        def reader():
            try:
                while not done.is_set():
                    s.list_tasks(pid)
                    s.list_prompts(pid)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(s.list_prompts(pid)) == n
        s.close()
    finally:
        sys.setswitchinterval(old)


def test_the_indexes_migration_and_aggregate_lists(tmp_path):
    """m007 adds the lookup indexes; list_tasks, list_runs and best_test_accuracy answer from aggregate queries
    with the same values a row-by-row count gives."""
    s = Store(tmp_path / "h.db")
    indexes = {(t, tuple(i.columns)) for t in ("prompts", "runs", "evaluations") for i in s.db[t].indexes}
    assert {
        ("prompts", ("project_id", "task_id")),
        ("runs", ("project_id",)),
        ("runs", ("bench_id",)),
        ("evaluations", ("prompt_id",)),
        ("evaluations", ("task_id",)),
    } <= indexes
    pid = s.ensure_project("p", "/x")
    data = tmp_path / "t.csv"
    data.write_text("input,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    task_id = s.add_task(pid, read_task_file(data, name="t"))
    [task] = s.list_tasks(pid)
    assert task["splits"] == {
        split: s.db["examples"].count_where("task_id = ? and split = ?", [task_id, split])
        for split in ("train", "dev", "test")
    }
    p1 = s.add_prompt(pid, task_id, "a", origin="manual")
    run = s.create_run(
        project_id=pid,
        task_id=task_id,
        method="greater",
        model_id="m",
        model_sha256="x",
        config={},
        seed=0,
        versions={},
        initial_prompt_id=p1,
    )
    for step in range(3):
        s.add_step(run, {"step": step, "prompt_before": "a", "prompt_after": "a", "candidates": [], "timings": {}})
    assert [(r["id"], r["n_steps"]) for r in s.list_runs(pid)] == [(run, 3)]
    assert s.best_test_accuracy(p1) is None

    def evaluation(split, mode, status, accuracy):
        ev = s.create_evaluation(
            prompt_id=p1, task_id=task_id, split=split, model_id="m", model_sha256="x", backend="llamacpp", mode=mode
        )
        s.finish_evaluation(ev, status=status, accuracy=accuracy)

    evaluation("test", "direct", "done", 0.5)
    evaluation("test", "direct+logic-of-thought", "done", 0.9)  # a strategy around the prompt: not its score
    evaluation("dev", "direct", "done", 0.8)
    evaluation("test", "direct", "stopped", 0.7)
    evaluation("test", "reasoning", "done", 0.6)
    assert s.best_test_accuracy(p1) == 0.6
