"""The history: one class owns the SQLite database (sqlite-utils, WAL mode, schema by migrations).

Neither the CLI nor the TUI writes SQL: they call :class:`Store` methods. The Store's methods live by subject in
:mod:`.library` (tasks, prompts), :mod:`.runs` (runs, benches, steps) and :mod:`.evaluations`; the migrations and
the JSON columns of each table in :mod:`.schema`.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import sqlite_utils

from .evaluations import Evaluations
from .library import Library
from .runs import Runs
from .schema import JSON_COLUMNS, _now, apply_migrations, migrations, new_id, row_tags

__all__ = ["JSON_COLUMNS", "Store", "apply_migrations", "migrations", "row_tags"]


class DamagedHistoryError(sqlite3.DatabaseError):
    """The history database fails SQLite's check: damaged pages (never written to)."""


class Store(Library, Runs, Evaluations):
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
            self._memory_db: sqlite_utils.Database | None = sqlite_utils.Database(memory=True)
            self._memory_db.execute("PRAGMA foreign_keys = ON")
        else:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._memory_db = None
            self.db.enable_wal()
        apply_migrations(self.db)

    def quick_check(self) -> None:
        """Raise :class:`DamagedHistoryError` if SQLite's quick check finds the database damaged (every page of
        every table and index read once; milliseconds for a history of a few MB)."""
        problems = [row[0] for row in self.db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise DamagedHistoryError("; ".join(problems))

    def integrity_check(self) -> list[str]:
        """SQLite's full integrity check: ``["ok"]``, or up to 100 problems."""
        return [row[0] for row in self.db.execute("PRAGMA integrity_check(100)").fetchall()]

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

    def ensure_project(self, name: str, path: str) -> int:
        """The project row of the folder at ``path``. A history database lives inside its project's folder and
        holds one project, so when the folder has moved (or was copied) the row keeps its history and its path
        is updated; a second row is never made for the same history."""
        row = next(self.db.table("projects").rows_where("path = ?", [path], limit=1), None)
        if row:
            return row["id"]
        first = next(self.db.table("projects").rows_where(order_by="id", limit=1), None)
        if first is not None:
            self.db.table("projects").update(first["id"], {"path": path})
            return first["id"]
        return new_id(self.db.table("projects").insert({"name": name, "path": path, "created": _now()}))

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy of the database (SQLite's online backup), safe while a run writes."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        from ..files import partial_path

        tmp = partial_path(dest)
        target = sqlite3.connect(str(tmp))
        try:
            self.db.conn.backup(target)
        finally:
            target.close()
        shutil.move(str(tmp), str(dest))
        return dest
