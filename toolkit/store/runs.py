"""The history's runs (claimed by one live process at a time), benches and steps: a mixin of the Store."""

from __future__ import annotations

import sqlite_utils

from .. import owner
from ..errors import (
    ConfigError,
    RunNotFoundError,
)
from .schema import HasDb, _decode, _encode, _now, new_id


class Runs(HasDb):
    """Methods of the Store (a mixin: it uses the Store's ``db``)."""

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
        return new_id(
            self.db.table("runs").insert(
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
        )

    def update_run(self, run_id: int, **fields) -> None:
        self.db.table("runs").update(run_id, _encode("runs", fields))

    def run(self, run_id: int) -> dict:
        try:
            row = self.db.table("runs").get(int(run_id))
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
        return new_id(
            self.db.table("benches").insert(
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
        )

    def bench(self, bench_id: int) -> dict:
        try:
            row = self.db.table("benches").get(int(bench_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise RunNotFoundError(f"No bench with id {bench_id}. `gradprompt bench --list` shows them.") from None
        return _decode("benches", row, with_status=True)

    def list_benches(self, project_id: int) -> list[dict]:
        rows = list(self.db.table("benches").rows_where("project_id = ?", [project_id], order_by="id"))
        for row in rows:
            row["status"] = owner.effective_status(row)
        return rows

    def update_bench(self, bench_id: int, **fields) -> None:
        self.db.table("benches").update(bench_id, _encode("benches", fields))

    def bench_runs(self, bench_id: int) -> list[dict]:
        rows = self.db.table("runs").rows_where("bench_id = ?", [bench_id], order_by="id")
        return [_decode("runs", row, with_status=True) for row in rows]

    def add_step(self, run_id: int, record: dict) -> int:
        row = _encode("steps", record)
        row["run_id"] = run_id
        row["created"] = _now()
        return new_id(self.db.table("steps").insert(row))

    def steps(self, run_id: int) -> list[dict]:
        return [
            _decode("steps", row) for row in self.db.table("steps").rows_where("run_id = ?", [run_id], order_by="step")
        ]
