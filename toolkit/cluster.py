"""Fanning work out over a Ray cluster (``--ray ADDRESS``); the project's history keeps one writer.

Ray is an optional extra (``pip install 'gradprompt[cluster]'``) and is imported only here, only when a command is
given ``--ray``. The pattern, for a bench cell (toolkit.bench) or an evaluation shard (toolkit.evaluate):

* the driver (the process the user started) sends each piece of work to the cluster as a Ray task, with what the
  worker needs: for a bench cell a consistent copy of the history (``history_snapshot``), for a shard the examples;
  and the model as the history records it, its id and the sha256 of its file;
* a worker finds its own copy of that model file by its hash (``toolkit.models.locate_model``; a worker without it
  says so), runs the work with the same code as a local run, in a history of its own (``WorkerProject``, a
  temporary copy), and returns the rows it added (``WorkerProject.new_rows``);
* the driver stores them as each piece finishes (``import_rows``, one transaction: a cell is stored whole or not
  at all), so a killed driver loses at most the work in flight, and a re-run skips what is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError

# The tables a run or an evaluation adds rows to, in the order they are imported (each one's references first).
TABLES = ("runs", "prompts", "steps", "evaluations", "results")


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address``: "auto" (the cluster this machine belongs to, or
    $RAY_ADDRESS), "local" (a one-machine cluster started for this command, for trying it), or the head node's
    "HOST:PORT" / "ray://HOST:PORT". Errors are told in gradprompt's words."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which this install does not have. Install it with "
            "`pip install 'gradprompt[cluster]'` (on this machine and on every machine of the cluster).",
            title="Ray is not installed",
        ) from None
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"Could not reach a Ray cluster at {address!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). "
            "Start one with `ray start --head` (then use --ray auto on that machine, or --ray HEAD_IP:6379 from "
            "another), or use --ray local to try it on this machine alone.",
            title="No Ray cluster",
        ) from None
    return ray


def describe(exc: BaseException) -> str:
    """A worker's error in one line: the error the cell raised, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")


def fan_out(
    ray,
    fn: Callable,
    calls: Iterable[tuple[Any, tuple]],
    *,
    on_result: Callable[[Any, Any], None],
    on_error: Callable[[Any, str], None],
    stop: threading.Event | None = None,
    num_cpus: float = 1,
) -> None:
    """Run ``fn(*args)`` for each (key, args) as a Ray task; ``on_result(key, value)`` as each one finishes (in
    the driver, one at a time), ``on_error(key, message)`` for a task that raised (the others go on). A ``stop``
    event, Ctrl-C or an error in ``on_result`` cancels the tasks still on the cluster."""
    remote = ray.remote(fn).options(num_cpus=num_cpus)
    pending = {remote.remote(*args): key for key, args in calls}
    try:
        while pending:
            if stop is not None and stop.is_set():
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # the task raised, or its worker died: this cell only
                    on_error(key, describe(exc))
                    continue
                on_result(key, value)
    finally:
        for ref in pending:  # Ctrl-C, a stop or an error here: nothing is left running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass


def assigned_cpus() -> int:
    """The CPUs Ray gave this task (a worker runs llama.cpp with that many threads, not with the whole machine's)."""
    try:
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:
        return max(1, os.cpu_count() or 1)


def worker_identity(info=None) -> dict:
    """Who ran a piece of work: the host, the process, gradprompt's version and, for a model's manifest ``info``,
    which chat template it renders ('' for the one the model file carries, which the file's hash pins; else a
    hash of the manifest's). A worker's result is stored only when these match the driver's (:func:`mismatch`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("gradprompt")
    except PackageNotFoundError:
        v = "unknown"
    out = {"host": platform.node(), "pid": os.getpid(), "version": v}
    if info is not None:
        template = info.chat_template or ""
        out["template"] = "" if template == "gguf" else hashlib.sha256(template.encode()).hexdigest()[:16]
    return out


def mismatch(out: dict, mine: dict) -> str | None:
    """Why a worker's result (with its :func:`worker_identity`) cannot be stored beside this machine's work
    (``mine``): another gradprompt version, or another chat template for the model; None when it matches."""
    why = []
    if out.get("version") != mine["version"]:
        why.append(f"gradprompt {out.get('version')}, this machine {mine['version']}")
    if "template" in mine and out.get("template") != mine["template"]:
        why.append("another chat template in its manifest of the model")
    return f"worker {out.get('host', '?')} has " + "; ".join(why) if why else None


def history_snapshot(store) -> bytes:
    """A consistent copy of the history (SQLite's online backup) as bytes, to send to the workers."""
    folder = tempfile.mkdtemp(prefix="gradprompt-snapshot-")
    try:
        path = store.backup(Path(folder) / "history.db")
        return path.read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class WorkerProject:
    """On a worker: a temporary project holding a copy of the driver's history; ``new_rows`` gives what the work
    added to it (and the library tags it added to prompts the copy already had). Removed on exit."""

    def __init__(self, snapshot: bytes, settings: dict):
        import tomli_w

        from .project import SETTINGS_FILE, open_project

        self.folder = Path(tempfile.mkdtemp(prefix="gradprompt-cell-"))
        path = self.folder / "project"
        (path / ".gradprompt").mkdir(parents=True)
        (path / ".gradprompt" / "history.db").write_bytes(snapshot)
        (path / SETTINGS_FILE).write_text(tomli_w.dumps(settings), encoding="utf-8")
        self.project = open_project(path)
        conn = self.project.store.db.conn
        self.marks = {t: conn.execute(f"select coalesce(max(id), 0) from [{t}]").fetchone()[0] for t in TABLES}
        self._meta = {r[0]: (r[1], r[2]) for r in conn.execute("select id, tags, note from prompts")}

    def __enter__(self) -> WorkerProject:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.project.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def new_rows(self) -> dict:
        conn = self.project.store.db.conn
        conn.row_factory = sqlite3.Row
        try:
            rows: dict[str, Any] = {
                t: [dict(r) for r in conn.execute(f"select * from [{t}] where id > ? order by id", [self.marks[t]])]
                for t in TABLES
            }
            updates = []
            for r in conn.execute("select id, tags, note from prompts where id <= ?", [self.marks["prompts"]]):
                if (r["tags"], r["note"]) != self._meta.get(r["id"]):
                    updates.append({"id": r["id"], "tags": r["tags"], "note": r["note"]})
        finally:
            conn.row_factory = None
        rows["prompt_updates"] = updates
        rows["marks"] = dict(self.marks)
        return rows


def import_rows(project, rows: dict) -> dict[str, dict[int, int]]:
    """Store the rows a worker added (``WorkerProject.new_rows``) in the driver's history, in one transaction,
    with new ids. A prompt version the history already has (same task, text, calibration and demonstrations) is
    reused, as a local run reuses it; so is a finished evaluation equal to one already stored (same prompt, split,
    model file, settings and size), and its results are not stored twice. Library files are written for the new
    prompts inside the transaction (both or neither). Returns the id maps {table: {worker id: driver id}}."""
    store = project.store
    conn = store.db.conn
    marks = rows["marks"]
    maps: dict[str, dict[int, int]] = {t: {} for t in TABLES}

    def mapped(table: str, value):
        if value is None or value <= marks[table]:
            return value  # the row was in the copy the worker had: the same id here
        return maps[table][value]

    def insert(table: str, row: dict) -> int:
        cols = [k for k in row if k != "id"]
        cur = conn.execute(
            f"insert into [{table}] ({', '.join(f'[{c}]' for c in cols)}) values ({', '.join('?' * len(cols))})",
            [row[c] for c in cols],
        )
        return int(cur.lastrowid or 0)

    written: list[Path] = []
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for run in rows["runs"]:
            maps["runs"][run["id"]] = insert("runs", run | {"initial_prompt_id": None, "best_prompt_id": None})
        new_prompts = []
        for p in rows["prompts"]:
            same = conn.execute(
                "select id, tags from prompts where project_id = ? and task_id is ? and text = ? and calibration is ? "
                "and demos is ? order by id limit 1",
                [p["project_id"], p["task_id"], p["text"], p["calibration"], p["demos"]],
            ).fetchone()
            if same is not None:
                maps["prompts"][p["id"]] = same[0]
                _merge_tags(conn, same[0], same[1], p["tags"], p["note"])
                continue
            pid = insert(
                "prompts",
                p | {"parent_id": mapped("prompts", p["parent_id"]), "run_id": mapped("runs", p["run_id"])},
            )
            maps["prompts"][p["id"]] = pid
            new_prompts.append(pid)
        for run in rows["runs"]:
            timings = json.loads(run["timings"]) if run["timings"] else None
            if isinstance(timings, dict):
                for row in timings.get("top") or ():
                    if isinstance(row, dict) and row.get("prompt_id") is not None:
                        row["prompt_id"] = mapped("prompts", row["prompt_id"])
            conn.execute(
                "update runs set initial_prompt_id = ?, best_prompt_id = ?, timings = ? where id = ?",
                [
                    mapped("prompts", run["initial_prompt_id"]),
                    mapped("prompts", run["best_prompt_id"]),
                    json.dumps(timings) if timings is not None else None,
                    maps["runs"][run["id"]],
                ],
            )
        for step in rows["steps"]:
            maps["steps"][step["id"]] = insert("steps", step | {"run_id": mapped("runs", step["run_id"])})
        skipped: set[int] = set()
        for ev in rows["evaluations"]:
            ev = ev | {"prompt_id": mapped("prompts", ev["prompt_id"])}
            same = None
            if ev["status"] == "done":
                same = conn.execute(
                    "select id from evaluations where prompt_id = ? and task_id = ? and split = ? and model_sha256 = ? "
                    "and backend = ? and mode = ? and n = ? and settings = ? and status = 'done' order by id limit 1",
                    [
                        ev[k]
                        for k in ("prompt_id", "task_id", "split", "model_sha256", "backend", "mode", "n", "settings")
                    ],
                ).fetchone()
            if same is not None:
                maps["evaluations"][ev["id"]] = same[0]
                skipped.add(ev["id"])
                continue
            maps["evaluations"][ev["id"]] = insert("evaluations", ev)
        for res in rows["results"]:
            if res["evaluation_id"] in skipped:
                continue
            maps["results"][res["id"]] = insert(
                "results", res | {"evaluation_id": mapped("evaluations", res["evaluation_id"])}
            )
        for up in rows["prompt_updates"]:
            cur = conn.execute("select tags from prompts where id = ?", [up["id"]]).fetchone()
            if cur is not None:
                _merge_tags(conn, up["id"], cur[0], up["tags"], up["note"])
        for pid in new_prompts:  # the library files, inside the transaction: both or neither
            written.append(project.write_prompt_file(pid))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return maps


def _merge_tags(conn, prompt_id: int, tags_here: str | None, tags_there: str | None, note_there: str | None) -> None:
    here = set(json.loads(tags_here or "[]"))
    both = sorted(here | set(json.loads(tags_there or "[]")))
    if both != sorted(here):
        conn.execute("update prompts set tags = ? where id = ?", [json.dumps(both), prompt_id])
    if note_there:
        conn.execute(
            "update prompts set note = ? where id = ? and (note is null or note = '')", [note_there, prompt_id]
        )
