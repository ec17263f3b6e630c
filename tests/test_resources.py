"""Running out of disk or memory stops cleanly: a plain message (what ran out, what to free, that nothing
finished is lost), exit code 1, no traceback, and a consistent history."""

import sqlite3

import pytest
from click.testing import CliRunner

from toolkit import store as store_module
from toolkit.cli import cli, resource_error


def run(args, project_dir):
    return CliRunner().invoke(cli, ["--project", str(project_dir), *args])


def _task(project, tmp_path):
    f = tmp_path / "yn.csv"
    f.write_text("goal,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(10)))
    assert run(["tasks", "import", str(f)], project.path).exit_code == 0


def test_a_full_disk_stops_cleanly_and_keeps_the_history(project, tmp_path, monkeypatch):
    _task(project, tmp_path)
    path = project.history_path
    real_connect = sqlite3.connect

    def full_disk(*args, **kwargs):  # SQLite's own SQLITE_FULL: the database may not grow by one page
        conn = real_connect(*args, **kwargs)
        pages = conn.execute("pragma page_count").fetchone()[0]
        conn.execute(f"pragma max_page_count = {pages}")
        return conn

    monkeypatch.setattr(store_module.sqlite3, "connect", full_disk)
    res = run(["prompts", "add", "yn", "x" * 200_000], project.path)
    assert res.exit_code == 1, res.output
    assert "Disk full" in res.output and "Free some space" in res.output and "Traceback" not in res.output
    monkeypatch.setattr(store_module.sqlite3, "connect", real_connect)
    conn = real_connect(path)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert conn.execute("select count(*) from prompts").fetchone()[0] == 0  # nothing half-written
    conn.close()
    assert not list((project.path / "prompts").rglob("*.txt"))


def test_out_of_memory_at_model_load_is_a_message(project, tmp_path, monkeypatch):
    _task(project, tmp_path)
    from toolkit.engine import torch_backend

    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(torch_backend, "load_torch_model", oom)
    res = run(["optimize", "yn", "--steps", "1"], project.path)
    assert res.exit_code == 1, res.output
    assert "Out of memory" in res.output and "--batch-size" in res.output and "Traceback" not in res.output
    assert project.store.list_runs(project.id) == []  # the run is created after the model loaded


@pytest.mark.parametrize(
    "exc,expected",
    [
        (MemoryError(), "Out of memory"),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
            "Out of memory",
        ),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "Out of memory"),
        (sqlite3.OperationalError("database or disk is full"), "Disk full"),
        (sqlite3.OperationalError("disk I/O error"), "Disk full"),
        (OSError(28, "No space left on device"), "Disk full"),
    ],
)
def test_resource_errors_are_recognised(exc, expected):
    assert resource_error(exc).startswith(expected)


@pytest.mark.parametrize(
    "exc", [RuntimeError("shape mismatch"), OSError(2, "No such file"), sqlite3.OperationalError("no such table: x")]
)
def test_other_errors_are_not_called_resource_errors(exc):
    assert resource_error(exc) is None
