"""The history's schema and encoding: the migrations (sqlite-utils' Migrations, applied in order, never edited
once shipped), the JSON-encoded columns of each table (one map, used by every write and read) and row helpers."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .. import owner
from ..errors import ConfigError


class HasDb:
    """What the store's rooms (Library, Runs, Evaluations) need of the store: its connection (Store.db)."""

    @property
    def db(self) -> sqlite_utils.Database:  # pragma: no cover - Store defines it
        raise NotImplementedError


def new_id(table: sqlite_utils.db.Table) -> int:
    """The id of the row ``table`` last inserted."""
    pk = table.last_pk
    if pk is None:  # pragma: no cover - every insert here makes a row
        raise RuntimeError(f"no row inserted into {table.name}")
    return int(pk)


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------------------------------
# Migrations (sqlite-utils' Migrations): plain functions applied in order, each in its own transaction
# together with its record. Never edit one that has shipped; add a new one.

migrations = Migrations("gradprompt")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("projects").create({"id": int, "name": str, "path": str, "created": float}, pk="id")
    db.table("tasks").create(
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
    db.table("tasks").create_index(["project_id", "name"], unique=True)
    db.table("examples").create(
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
    db.table("examples").create_index(["task_id", "split", "idx"])
    db.table("runs").create(
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
    db.table("prompts").create(
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
    db.table("steps").create(
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
    db.table("steps").create_index(["run_id", "step"], unique=True)
    db.table("evaluations").create(
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
    db.table("results").create(
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
    db.table("results").create_index(["evaluation_id"])
    db.table("results").create_index(["cache_key"])


@migrations()
def m002_prompt_search(db: sqlite_utils.Database) -> None:
    db.table("prompts").enable_fts(["text", "note", "tags"], create_triggers=True)


@migrations()
def m003_benches(db: sqlite_utils.Database) -> None:
    db.table("benches").create(
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
    db.table("runs").add_column("bench_id", int)


@migrations()
def m004_step_dev_accuracy(db: sqlite_utils.Database) -> None:
    db.table("steps").add_column("dev_accuracy", float)


@migrations()
def m005_step_search(db: sqlite_utils.Database) -> None:
    db.table("steps").add_column("search", str)  # JSON: the step's search (pool, width, probe, rank agreement, ...)


@migrations()
def m006_owner(db: sqlite_utils.Database) -> None:
    # JSON {host, pid, start}: the process that set the row running (see toolkit.owner), to tell a killed run
    # from a live one and to refuse a second resume of a live run.
    for table in ("runs", "evaluations", "benches"):
        db.table(table).add_column("owner", str)


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
        db.table(table).create_index(columns, if_not_exists=True)


@migrations()
def m008_prompt_parts(db: sqlite_utils.Database) -> None:
    # A prompt version is more than its text (issue 26): ``demos``, JSON [[input, answer], ...] or NULL, the
    # demonstrations shown as earlier chat turns (training rows, in order); ``calibration``, JSON
    # (toolkit.calibration.Calibration) or NULL, a label calibration fitted on training rows. Every evaluation
    # and export of the version uses both. Older prompts have neither.
    db.table("prompts").add_column("demos", str)
    db.table("prompts").add_column("calibration", str)


@migrations()
def m009_memorization(db: sqlite_utils.Database) -> None:
    # Memorization checks (toolkit.memorization): whether a model reproduces a task split's examples from their
    # first half. ``summary`` JSON (share recalled, gaps, whether the split looks memorized); ``rows`` JSON, one
    # entry per example checked.
    db.table("memorization").create(
        {
            "id": int,
            "project_id": int,
            "task_id": int,
            "split": str,
            "model_id": str,
            "model_sha256": str,
            "created": float,
            "n": int,
            "recalled": int,
            "flagged": int,
            "summary": str,
            "rows": str,
        },
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("task_id", "tasks", "id")],
    )
    db.table("memorization").create_index(["task_id", "split"])


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
    "memorization": {"summary": {}, "rows": []},
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
