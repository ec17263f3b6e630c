"""The history: one class owns the SQLite database (sqlite-utils, WAL mode, schema by migrations).

Neither the CLI nor the TUI writes SQL: they call :class:`Store` methods.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .errors import (
    ConfigError,
    DatasetError,
    EvaluationNotFoundError,
    PromptNotFoundError,
    RunNotFoundError,
    TaskNotFoundError,
)
from . import owner
from .tasks import AnswerSpec, TaskData


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------------------------------
# Migrations (sqlite-utils' Migrations): plain functions applied in order, each in its own transaction
# together with its record. Never edit one that has shipped; add a new one.

migrations = Migrations("gradprompt")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["projects"].create({"id": int, "name": str, "path": str, "created": float}, pk="id")
    db["tasks"].create(
        {
            "id": int,
            "project_id": int,
            "name": str,
            "source": str,
            "answer_kind": str,
            "labels": str,
            "extractor": str,
            "options": str,
            "created": float,
        },
        pk="id",
        foreign_keys=[("project_id", "projects", "id")],
    )
    db["tasks"].create_index(["project_id", "name"], unique=True)
    db["examples"].create(
        {
            "id": int,
            "task_id": int,
            "idx": int,
            "split": str,
            "input": str,
            "target": str,
            "answer": str,
            "source_row": int,
        },
        pk="id",
        foreign_keys=[("task_id", "tasks", "id")],
    )
    db["examples"].create_index(["task_id", "split", "idx"])
    db["runs"].create(
        {
            "id": int,
            "project_id": int,
            "task_id": int,
            "method": str,
            "model_id": str,
            "model_sha256": str,
            "config": str,
            "seed": int,
            "versions": str,
            "status": str,
            "started": float,
            "finished": float,
            "timings": str,
            "initial_prompt_id": int,
            "best_prompt_id": int,
            "error": str,
        },
        pk="id",
        foreign_keys=[("task_id", "tasks", "id")],
    )
    db["prompts"].create(
        {
            "id": int,
            "project_id": int,
            "task_id": int,
            "text": str,
            "parent_id": int,
            "origin": str,
            "run_id": int,
            "step": int,
            "tags": str,
            "note": str,
            "created": float,
        },
        pk="id",
        foreign_keys=[("task_id", "tasks", "id"), ("run_id", "runs", "id")],
    )
    db["steps"].create(
        {
            "id": int,
            "run_id": int,
            "step": int,
            "position": int,
            "prompt_before": str,
            "prompt_after": str,
            "prompt_ids": str,
            "chosen_token": str,
            "accepted": int,
            "candidates": str,
            "train_score": float,
            "train_accuracy": float,
            "state": str,
            "timings": str,
            "created": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["steps"].create_index(["run_id", "step"], unique=True)
    db["evaluations"].create(
        {
            "id": int,
            "prompt_id": int,
            "task_id": int,
            "split": str,
            "model_id": str,
            "model_sha256": str,
            "backend": str,
            "quantization": str,
            "mode": str,
            "settings": str,
            "n": int,
            "correct": int,
            "accuracy": float,
            "ci_low": float,
            "ci_high": float,
            "status": str,
            "started": float,
            "finished": float,
            "timings": str,
        },
        pk="id",
        foreign_keys=[("prompt_id", "prompts", "id"), ("task_id", "tasks", "id")],
    )
    db["results"].create(
        {
            "id": int,
            "evaluation_id": int,
            "example_id": int,
            "cache_key": str,
            "output": str,
            "predicted": str,
            "correct": int,
            "seconds": float,
        },
        pk="id",
        foreign_keys=[("evaluation_id", "evaluations", "id"), ("example_id", "examples", "id")],
    )
    db["results"].create_index(["evaluation_id"])
    db["results"].create_index(["cache_key"])


@migrations()
def m002_prompt_search(db: sqlite_utils.Database) -> None:
    db["prompts"].enable_fts(["text", "note", "tags"], create_triggers=True)


@migrations()
def m003_benches(db: sqlite_utils.Database) -> None:
    db["benches"].create(
        {
            "id": int,
            "project_id": int,
            "name": str,
            "config": str,
            "status": str,
            "created": float,
            "finished": float,
            "report": str,
        },
        pk="id",
    )
    db["runs"].add_column("bench_id", int)


@migrations()
def m004_step_dev_accuracy(db: sqlite_utils.Database) -> None:
    db["steps"].add_column("dev_accuracy", float)


@migrations()
def m005_step_search(db: sqlite_utils.Database) -> None:
    db["steps"].add_column("search", str)  # JSON: the step's search (pool, width, probe, rank agreement, ...)


@migrations()
def m006_owner(db: sqlite_utils.Database) -> None:
    # JSON {host, pid, start}: the process that set the row running (see toolkit.owner), to tell a killed run
    # from a live one and to refuse a second resume of a live run.
    for table in ("runs", "evaluations", "benches"):
        db[table].add_column("owner", str)


@migrations()
def m007_indexes(db: sqlite_utils.Database) -> None:
    # the lookups every list and evaluation makes: by project, by task, by prompt, by bench
    for table, columns in (
        ("prompts", ["project_id", "task_id"]),
        ("runs", ["project_id"]),
        ("runs", ["bench_id"]),
        ("evaluations", ["prompt_id"]),
        ("evaluations", ["task_id"]),
        ("benches", ["project_id"]),
    ):
        db[table].create_index(columns, if_not_exists=True)


def apply_migrations(db: sqlite_utils.Database, migration_set: Migrations | None = None) -> list[str]:
    """Apply the pending migrations; returns their names."""
    migration_set = migration_set or migrations
    pending = [m.name for m in migration_set.pending(db)]
    migration_set.apply(db)
    return pending


# ---------------------------------------------------------------------------------------------


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_json_default)


def _json_default(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _uj(value: str | None, default: Any = None) -> Any:
    if value in (None, ""):
        return default
    return json.loads(value)


# The JSON-encoded columns of each table and what an empty one reads as: one map, used by every write (encode)
# and read (decode) of those tables. Prompt tags stay encoded in prompt rows (read them with ``row_tags``).
JSON_COLUMNS: dict[str, dict[str, Any]] = {
    "tasks": {"labels": [], "options": {}},
    "prompts": {"tags": []},
    "runs": {"config": {}, "versions": {}, "timings": {}},
    "benches": {"config": {}},
    "steps": {"candidates": None, "timings": None, "state": None, "prompt_ids": None, "search": None},
    "evaluations": {"settings": {}, "timings": {}},
}


def _encode(table: str, fields: dict) -> dict:
    """``fields`` with the table's JSON columns encoded (values already encoded as text are kept)."""
    out = dict(fields)
    for key in JSON_COLUMNS[table]:
        if key in out and out[key] is not None and not isinstance(out[key], str):
            out[key] = _j(out[key])
    return out


def _decode(table: str, row: dict, with_status: bool = False) -> dict:
    """A row with the table's JSON columns decoded (``prompts`` rows keep their tags encoded); ``with_status``:
    the status as a user should see it (a running row whose process is gone reads ``interrupted``)."""
    row = dict(row)
    if table != "prompts":
        for key, default in JSON_COLUMNS[table].items():
            if key in row:
                row[key] = _uj(row[key], default)
    if with_status:
        row["status"] = owner.effective_status(row)
    return row


def row_tags(row: dict) -> list[str]:
    """The tags of a prompt row."""
    return _uj(row["tags"], [])


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or len(tag) > 40 or "," in tag or any(c.isspace() for c in tag):
        raise ConfigError(
            f"Bad tag {tag!r}: a tag is 1-40 characters with no spaces or commas "
            "(for example 'best', 'v2', 'reviewed')."
        )
    return tag


def _decoded_evaluation(row: dict) -> dict:
    return _decode("evaluations", row, with_status=True)


class Store:
    """The history database of one project.

    Each thread gets its own SQLite connection to the file (WAL: readers never block the writer), so a
    background run can write steps while the UI thread reads them. Sharing one connection between threads
    interleaves sqlite-utils' savepoints and fails with "no such savepoint". An in-memory store has a
    single connection and is meant for one thread.
    """

    def __init__(self, path: str | Path | None = None, *, memory: bool = False):
        self._local = threading.local()
        self._connections: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()
        if memory or path is None:
            self.path = None
            self._memory_db = sqlite_utils.Database(memory=True)
            self._memory_db.execute("PRAGMA foreign_keys = ON")
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._memory_db = None
            self.db.enable_wal()
        apply_migrations(self.db)

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (opened on first use)."""
        if self._memory_db is not None:
            return self._memory_db
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def close(self) -> None:
        if self._memory_db is not None:
            self._memory_db.close()
            return
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()

    # -- projects ------------------------------------------------------------------------------

    def ensure_project(self, name: str, path: str) -> int:
        """The project row of the folder at ``path``. A history database lives inside its project's folder and
        holds one project, so when the folder has moved (or was copied) the row keeps its history and its path
        is updated; a second row is never made for the same history."""
        row = next(self.db["projects"].rows_where("path = ?", [path], limit=1), None)
        if row:
            return row["id"]
        first = next(self.db["projects"].rows_where(order_by="id", limit=1), None)
        if first is not None:
            self.db["projects"].update(first["id"], {"path": path})
            return first["id"]
        return self.db["projects"].insert({"name": name, "path": path, "created": _now()}).last_pk

    # -- tasks -----------------------------------------------------------------------------------

    def check_new_task_name(self, project_id: int, name: str) -> None:
        """Refuse a name a task of this project already has (with what to do instead)."""
        if self.find_task(project_id, name):
            raise DatasetError(
                f"A task named {name!r} already exists in this project. Choose another name with "
                "--name, or pass --replace to overwrite it.",
                title="Duplicate task name",
            )

    def add_task(self, project_id: int, task: TaskData, *, replace: bool = False) -> int:
        """Store a validated task and its examples in one transaction. Duplicate names are refused."""
        existing = self.find_task(project_id, task.name)
        if existing and not replace:
            self.check_new_task_name(project_id, task.name)
        with self.db.atomic():
            if existing:
                self._delete_task_rows(existing["id"])
            task_id = (
                self.db["tasks"]
                .insert(
                    _encode(
                        "tasks",
                        {
                            "project_id": project_id,
                            "name": task.name,
                            "source": task.source,
                            "answer_kind": task.spec.kind,
                            "labels": list(task.spec.labels),
                            "extractor": task.spec.extractor,
                            "options": task.options,
                            "created": _now(),
                        },
                    )
                )
                .last_pk
            )
            self.db["examples"].insert_all(
                (
                    {
                        "task_id": task_id,
                        "idx": i,
                        "split": ex.split,
                        "input": ex.input,
                        "target": ex.target,
                        "answer": ex.answer,
                        "source_row": ex.source_row,
                    }
                    for i, ex in enumerate(task.examples)
                ),
                batch_size=500,
            )
        return task_id

    def _delete_task_rows(self, task_id: int) -> None:
        ev_ids = [r["id"] for r in self.db["evaluations"].rows_where("task_id = ?", [task_id], select="id")]
        for ev in ev_ids:
            self.db["results"].delete_where("evaluation_id = ?", [ev])
        self.db["evaluations"].delete_where("task_id = ?", [task_id])
        run_ids = [r["id"] for r in self.db["runs"].rows_where("task_id = ?", [task_id], select="id")]
        for run in run_ids:
            self.db["steps"].delete_where("run_id = ?", [run])
        self.db["prompts"].delete_where("task_id = ?", [task_id])
        self.db["runs"].delete_where("task_id = ?", [task_id])
        self.db["examples"].delete_where("task_id = ?", [task_id])
        self.db["tasks"].delete_where("id = ?", [task_id])

    def find_task(self, project_id: int, name: str) -> dict | None:
        return next(self.db["tasks"].rows_where("project_id = ? and name = ?", [project_id, name], limit=1), None)

    def task(self, project_id: int, name_or_id: str | int) -> dict:
        row = None
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = next(self.db["tasks"].rows_where("project_id = ? and id = ?", [project_id, int(name_or_id)]), None)
        if row is None:
            row = self.find_task(project_id, str(name_or_id))
        if row is None:
            names = [t["name"] for t in self.list_tasks(project_id)]
            hint = f" Tasks here: {', '.join(names)}." if names else " Import one with `gradprompt tasks import FILE`."
            raise TaskNotFoundError(f"No task {name_or_id!r} in this project.{hint}")
        return row

    def task_by_id(self, task_id: int) -> dict:
        """A task row by id, whatever its project (evaluations and prompts point at tasks by id)."""
        try:
            return self.db["tasks"].get(int(task_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise TaskNotFoundError(f"No task with id {task_id}.") from None

    def task_spec(self, task_row: dict) -> AnswerSpec:
        return AnswerSpec(
            kind=task_row["answer_kind"], labels=tuple(_uj(task_row["labels"], [])), extractor=task_row["extractor"]
        )

    def list_tasks(self, project_id: int) -> list[dict]:
        """The project's tasks by name, each with ``splits`` {split: examples} (two queries, not one per task)."""
        tasks = list(self.db["tasks"].rows_where("project_id = ?", [project_id], order_by="name"))
        counts: dict[int, dict[str, int]] = {}
        sql = (
            "select e.task_id, e.split, count(*) as n from examples e join tasks t on t.id = e.task_id "
            "where t.project_id = ? group by e.task_id, e.split"
        )
        for r in self.db.query(sql, [project_id]):
            counts.setdefault(r["task_id"], {})[r["split"]] = r["n"]
        for t in tasks:
            t["splits"] = counts.get(t["id"], {})
        return tasks

    def examples(self, task_id: int, split: str | None = None, limit: int | None = None) -> list[dict]:
        where, args = "task_id = ?", [task_id]
        if split:
            where += " and split = ?"
            args.append(split)
        return list(self.db["examples"].rows_where(where, args, order_by="idx", limit=limit))

    def delete_task(self, project_id: int, name: str) -> None:
        row = self.task(project_id, name)
        with self.db.atomic():
            self._delete_task_rows(row["id"])

    # -- prompts ---------------------------------------------------------------------------------

    def add_prompt(
        self,
        project_id: int,
        task_id: int | None,
        text: str,
        *,
        origin: str,
        parent_id: int | None = None,
        run_id: int | None = None,
        step: int | None = None,
        tags: Iterable[str] = (),
        note: str = "",
    ) -> int:
        return (
            self.db["prompts"]
            .insert(
                _encode(
                    "prompts",
                    {
                        "project_id": project_id,
                        "task_id": task_id,
                        "text": text,
                        "parent_id": parent_id,
                        "origin": origin,
                        "run_id": run_id,
                        "step": step,
                        "tags": sorted(set(tags)),
                        "note": note,
                        "created": _now(),
                    },
                )
            )
            .last_pk
        )

    def delete_prompt(self, prompt_id: int) -> None:
        """Remove a prompt that nothing refers to yet (undoing a half-finished add)."""
        self.db["prompts"].delete(int(prompt_id))

    def prompt(self, prompt_id: int) -> dict:
        try:
            return self.db["prompts"].get(int(prompt_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise PromptNotFoundError(
                f"No prompt with id {prompt_id}. `gradprompt prompts list` shows the prompts."
            ) from None

    def prompt_tags(self, prompt_id: int) -> list[str]:
        return row_tags(self.prompt(prompt_id))

    def best_test_accuracy(self, prompt_id: int) -> float | None:
        """The best finished test-split accuracy of a prompt over all its evaluations (None: never scored)."""
        # "direct+logic-of-thought" etc. score the prompt with a strategy around it, not the prompt
        sql = (
            "select max(accuracy) as best from evaluations where prompt_id = ? and split = 'test' and status = 'done' "
            "and instr(coalesce(mode, ''), '+') = 0"
        )
        return next(iter(self.db.query(sql, [int(prompt_id)])))["best"]

    def update_prompt_meta(
        self,
        prompt_id: int,
        *,
        tags: Iterable[str] | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        note: str | None = None,
    ) -> dict:
        """Change a prompt's tags and note (metadata only: the text of a version never changes).

        ``tags`` replaces the set; ``add_tags``/``remove_tags`` edit it. Returns the updated row.
        """
        row = self.prompt(prompt_id)
        current = set(_uj(row["tags"], [])) if tags is None else {_check_tag(t) for t in tags if t.strip()}
        current |= {_check_tag(t) for t in add_tags}
        current -= {t.strip() for t in remove_tags}
        fields: dict[str, Any] = {"tags": sorted(current)}
        if note is not None:
            fields["note"] = note.strip()
        self.db["prompts"].update(row["id"], _encode("prompts", fields))
        return self.prompt(row["id"])

    def list_prompts(self, project_id: int, task_id: int | None = None, search: str | None = None) -> list[dict]:
        """Prompts of a project, optionally of one task, optionally matching ``search``: every word of it as
        the start of a word in the text, note or tags ("calen" finds "calendar"), any punctuation allowed;
        a search with no word characters matches as a plain substring."""
        where, args = "prompts.project_id = ?", [project_id]
        if task_id is not None:
            where += " and prompts.task_id = ?"
            args.append(task_id)
        if not search or not search.strip():
            return list(self.db.query(f"select * from prompts where {where} order by id", args))
        words = re.findall(r"\w+", search)
        if words:  # each word quoted (FTS syntax characters in the input are never operators), as a prefix
            match = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
            sql = (
                "select prompts.* from prompts join prompts_fts on prompts.rowid = prompts_fts.rowid "
                f"where prompts_fts match ? and {where} order by prompts.id"
            )
            return list(self.db.query(sql, [match, *args]))
        like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (
            f"select * from prompts where {where} and (text like ? escape '\\' or note like ? escape '\\' "
            "or tags like ? escape '\\') order by id"
        )
        return list(self.db.query(sql, [*args, like, like, like]))

    def find_prompt(self, project_id: int, task_id: int, text: str) -> dict | None:
        return next(
            self.db["prompts"].rows_where(
                "project_id = ? and task_id = ? and text = ?", [project_id, task_id, text], order_by="id", limit=1
            ),
            None,
        )

    def lineage(self, prompt_id: int) -> list[dict]:
        chain, seen = [], set()
        current: int | None = prompt_id
        while current is not None and current not in seen:
            seen.add(current)
            row = self.prompt(current)
            chain.append(row)
            current = row["parent_id"]
        return chain

    # -- runs --------------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        project_id: int,
        task_id: int,
        method: str,
        model_id: str,
        model_sha256: str,
        config: dict,
        seed: int,
        versions: dict,
        initial_prompt_id: int | None,
        bench_id: int | None = None,
    ) -> int:
        return (
            self.db["runs"]
            .insert(
                _encode(
                    "runs",
                    {
                        "bench_id": bench_id,
                        "project_id": project_id,
                        "task_id": task_id,
                        "method": method,
                        "model_id": model_id,
                        "model_sha256": model_sha256,
                        "config": config,
                        "seed": seed,
                        "versions": versions,
                        "status": "running",
                        "started": _now(),
                        "finished": None,
                        "timings": {},
                        "initial_prompt_id": initial_prompt_id,
                        "best_prompt_id": None,
                        "error": "",
                        "owner": owner.me(),
                    },
                )
            )
            .last_pk
        )

    def update_run(self, run_id: int, **fields) -> None:
        self.db["runs"].update(run_id, _encode("runs", fields))

    def run(self, run_id: int) -> dict:
        try:
            row = self.db["runs"].get(int(run_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise RunNotFoundError(f"No run with id {run_id}. `gradprompt runs list` shows the runs.") from None
        return _decode("runs", row, with_status=True)

    @staticmethod
    def _check_resumable(run_id: int, status: str, who: str | None, force: bool) -> None:
        if status == "done":
            raise ConfigError(f"Run {run_id} already finished; start a new run instead.")
        # A row from before owners were recorded (who is None) is taken as interrupted.
        if status != "running" or not who or force or who == owner.me():
            return
        state = owner.alive(who)
        if state is False:
            return
        if state:
            raise ConfigError(
                f"Run {run_id} is running in process {owner.pid_of(who)}; it cannot be resumed twice. Stop it "
                f"first (Ctrl-C in its terminal, or s in the TUI's Live tab), then `gradprompt runs resume {run_id}`."
            )
        raise ConfigError(
            f"Run {run_id} is marked running by a process on another machine (or one that cannot be checked). "
            f"If it is really gone, `gradprompt runs resume {run_id} --force` takes it over."
        )

    @staticmethod
    def _status_and_owner(conn, run_id: int) -> tuple[str, str | None]:
        """The stored status (not the shown one) and owner of a run."""
        row = conn.execute("select status, owner from runs where id = ?", [int(run_id)]).fetchone()
        if row is None:
            raise RunNotFoundError(f"No run with id {run_id}. `gradprompt runs list` shows the runs.")
        return row

    def check_resumable(self, run_id: int, *, force: bool = False) -> dict:
        """The run, if it may be resumed now (raises ConfigError saying why not); claims nothing."""
        self._check_resumable(run_id, *self._status_and_owner(self.db.conn, run_id), force)
        return self.run(run_id)

    def claim_run(self, run_id: int, *, force: bool = False) -> dict:
        """Take a stopped, failed or interrupted run over for this process (``running``, owned by it), in one
        write transaction, so two ``runs resume`` of the same run cannot both go ahead."""
        conn = self.db.conn
        if conn.in_transaction:
            conn.commit()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_resumable(run_id, *self._status_and_owner(conn, run_id), force)
            conn.execute(
                "update runs set status = 'running', error = '', owner = ? where id = ?", [owner.me(), int(run_id)]
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return self.run(run_id)

    def list_runs(self, project_id: int) -> list[dict]:
        """The project's runs, oldest first, each with ``n_steps`` (one query)."""
        sql = (
            "select runs.*, (select count(*) from steps where steps.run_id = runs.id) as n_steps from runs "
            "where project_id = ? order by id"
        )
        rows = [dict(r) for r in self.db.query(sql, [project_id])]
        for row in rows:
            row["status"] = owner.effective_status(row)
        return rows

    def create_bench(self, project_id: int, name: str, config: dict) -> int:
        return (
            self.db["benches"]
            .insert(
                _encode(
                    "benches",
                    {
                        "project_id": project_id,
                        "name": name,
                        "config": config,
                        "status": "running",
                        "created": _now(),
                        "owner": owner.me(),
                    },
                )
            )
            .last_pk
        )

    def bench(self, bench_id: int) -> dict:
        try:
            row = self.db["benches"].get(int(bench_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise RunNotFoundError(f"No bench with id {bench_id}. `gradprompt bench --list` shows them.") from None
        return _decode("benches", row, with_status=True)

    def list_benches(self, project_id: int) -> list[dict]:
        rows = list(self.db["benches"].rows_where("project_id = ?", [project_id], order_by="id"))
        for row in rows:
            row["status"] = owner.effective_status(row)
        return rows

    def update_bench(self, bench_id: int, **fields) -> None:
        self.db["benches"].update(bench_id, _encode("benches", fields))

    def bench_runs(self, bench_id: int) -> list[dict]:
        rows = self.db["runs"].rows_where("bench_id = ?", [bench_id], order_by="id")
        return [_decode("runs", row, with_status=True) for row in rows]

    def add_step(self, run_id: int, record: dict) -> int:
        row = _encode("steps", record)
        row["run_id"] = run_id
        row["created"] = _now()
        return self.db["steps"].insert(row).last_pk

    def steps(self, run_id: int) -> list[dict]:
        return [_decode("steps", row) for row in self.db["steps"].rows_where("run_id = ?", [run_id], order_by="step")]

    # -- evaluations -------------------------------------------------------------------------------

    def create_evaluation(self, **fields) -> int:
        fields.setdefault("started", _now())
        fields.setdefault("status", "running")
        fields.setdefault("owner", owner.me())
        return self.db["evaluations"].insert(_encode("evaluations", fields)).last_pk

    def finish_evaluation(self, evaluation_id: int, **fields) -> None:
        fields.setdefault("finished", _now())
        fields.setdefault("status", "done")
        self.db["evaluations"].update(evaluation_id, _encode("evaluations", fields))

    def add_result(
        self,
        evaluation_id: int,
        example_id: int,
        cache_key: str,
        output: str,
        predicted: str | None,
        correct: bool,
        seconds: float,
    ) -> None:
        self.db["results"].insert(
            {
                "evaluation_id": evaluation_id,
                "example_id": example_id,
                "cache_key": cache_key,
                "output": output,
                "predicted": predicted,
                "correct": int(correct),
                "seconds": seconds,
            }
        )

    def cached_result(self, cache_key: str) -> dict | None:
        return next(self.db["results"].rows_where("cache_key = ?", [cache_key], limit=1), None)

    def evaluations(
        self, prompt_id: int | None = None, task_id: int | None = None, project_id: int | None = None
    ) -> list[dict]:
        """Evaluations, oldest first, optionally of one prompt, task or project."""
        where, args = [], []
        for column, value in (("prompt_id", prompt_id), ("task_id", task_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if project_id is not None:
            where.append("prompt_id in (select id from prompts where project_id = ?)")
            args.append(project_id)
        rows = self.db["evaluations"].rows_where(" and ".join(where) or None, args or None, order_by="id")
        return [_decoded_evaluation(row) for row in rows]

    def evaluation(self, evaluation_id: int) -> dict:
        try:
            row = self.db["evaluations"].get(int(evaluation_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise EvaluationNotFoundError(
                f"No evaluation with id {evaluation_id}. `gradprompt evals list` shows the evaluations."
            ) from None
        return _decoded_evaluation(row)

    def results(self, evaluation_id: int) -> list[dict]:
        return list(self.db["results"].rows_where("evaluation_id = ?", [evaluation_id], order_by="id"))

    def example_results(self, evaluation_id: int) -> list[dict]:
        """An evaluation's per-example results with the example itself (split order): input, answer, output,
        predicted, correct, seconds."""
        sql = (
            "select r.example_id, e.idx, e.input, e.answer, r.output, r.predicted, r.correct, r.seconds "
            "from results r join examples e on e.id = r.example_id where r.evaluation_id = ? order by e.idx, r.id"
        )
        return [dict(row) for row in self.db.query(sql, [int(evaluation_id)])]

    def flipped(self, evaluation_a: int, evaluation_b: int) -> list[dict]:
        """Examples scored in both evaluations whose correctness differs: [{example, a, b}]."""
        a = {r["example_id"]: r for r in self.results(evaluation_a)}
        b = {r["example_id"]: r for r in self.results(evaluation_b)}
        ids = sorted(ex_id for ex_id in set(a) & set(b) if a[ex_id]["correct"] != b[ex_id]["correct"])
        examples = {}
        for i in range(0, len(ids), 500):  # one query per 500 examples, not one per example
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            examples.update({r["id"]: r for r in self.db.query(f"select * from examples where id in ({marks})", chunk)})
        return [{"example": examples[ex_id], "a": a[ex_id], "b": b[ex_id]} for ex_id in ids]

    # -- maintenance -------------------------------------------------------------------------------

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy of the database (SQLite's online backup), safe while a run writes."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".partial")
        target = sqlite3.connect(str(tmp))
        try:
            self.db.conn.backup(target)
        finally:
            target.close()
        shutil.move(str(tmp), str(dest))
        return dest
