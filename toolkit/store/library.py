"""The history's tasks (with their examples) and prompt library: a mixin of :class:`toolkit.store.Store`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import sqlite_utils

from ..errors import (
    DatasetError,
    PromptNotFoundError,
    TaskNotFoundError,
)
from ..tasks import AnswerSpec, TaskData
from .schema import HasDb, _check_tag, _encode, _now, _uj, new_id, row_tags


class Library(HasDb):
    """Methods of the Store (a mixin: it uses the Store's ``db``)."""

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
            task_id = new_id(
                self.db.table("tasks").insert(
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
            )
            self.db.table("examples").insert_all(
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
        ev_ids = [r["id"] for r in self.db.table("evaluations").rows_where("task_id = ?", [task_id], select="id")]
        for ev in ev_ids:
            self.db.table("results").delete_where("evaluation_id = ?", [ev])
        self.db.table("evaluations").delete_where("task_id = ?", [task_id])
        run_ids = [r["id"] for r in self.db.table("runs").rows_where("task_id = ?", [task_id], select="id")]
        for run in run_ids:
            self.db.table("steps").delete_where("run_id = ?", [run])
        self.db.table("prompts").delete_where("task_id = ?", [task_id])
        self.db.table("runs").delete_where("task_id = ?", [task_id])
        self.db.table("examples").delete_where("task_id = ?", [task_id])
        self.db.table("tasks").delete_where("id = ?", [task_id])

    def find_task(self, project_id: int, name: str) -> dict | None:
        return next(self.db.table("tasks").rows_where("project_id = ? and name = ?", [project_id, name], limit=1), None)

    def task(self, project_id: int, name_or_id: str | int) -> dict:
        row = None
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = next(
                self.db.table("tasks").rows_where("project_id = ? and id = ?", [project_id, int(name_or_id)]), None
            )
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
            return self.db.table("tasks").get(int(task_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise TaskNotFoundError(f"No task with id {task_id}.") from None

    def task_spec(self, task_row: dict) -> AnswerSpec:
        return AnswerSpec(
            kind=task_row["answer_kind"], labels=tuple(_uj(task_row["labels"], [])), extractor=task_row["extractor"]
        )

    def list_tasks(self, project_id: int) -> list[dict]:
        """The project's tasks by name, each with ``splits`` {split: examples} (two queries, not one per task)."""
        tasks = list(self.db.table("tasks").rows_where("project_id = ?", [project_id], order_by="name"))
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
        where = "task_id = ?"
        args: list[object] = [task_id]
        if split:
            where += " and split = ?"
            args.append(split)
        return list(self.db.table("examples").rows_where(where, args, order_by="idx", limit=limit))

    def delete_task(self, project_id: int, name: str) -> None:
        row = self.task(project_id, name)
        with self.db.atomic():
            self._delete_task_rows(row["id"])

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
        calibration: str | None = None,
        demos: str | None = None,
        before_commit: Callable[[int], object] | None = None,
    ) -> int:
        """Store a prompt version; returns its id. ``before_commit(id)`` runs inside the write transaction, after
        the row is inserted and before it is committed (the library writes its file there): if it raises, or the
        commit fails, nothing is stored."""
        if parent_id is not None:
            self.prompt(parent_id)  # a parent that does not exist is refused (PromptNotFoundError)
        row = _encode(
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
                "calibration": calibration,
                "demos": demos,
            },
        )
        conn = self.db.conn
        if conn.in_transaction:
            conn.commit()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cols = ", ".join(f"[{k}]" for k in row)
            cur = conn.execute(f"insert into prompts ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
            prompt_id = int(cur.lastrowid or 0)
            if before_commit is not None:
                before_commit(prompt_id)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return prompt_id

    def prompt(self, prompt_id: int) -> dict:
        try:
            return self.db.table("prompts").get(int(prompt_id))
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
        self.db.table("prompts").update(row["id"], _encode("prompts", fields))
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

    def find_prompt(
        self, project_id: int, task_id: int, text: str, calibration: str | None = None, demos: str | None = None
    ) -> dict | None:
        """The first version with this text, calibration and demonstrations (their stored JSON; None: without)."""
        where, args = "project_id = ? and task_id = ? and text = ?", [project_id, task_id, text]
        for column, value in (("calibration", calibration), ("demos", demos)):
            if value is None:
                where += f" and {column} is null"
            else:
                where += f" and {column} = ?"
                args.append(value)
        return next(self.db.table("prompts").rows_where(where, args, order_by="id", limit=1), None)

    def lineage(self, prompt_id: int) -> list[dict]:
        chain, seen = [], set()
        current: int | None = prompt_id
        while current is not None and current not in seen:
            seen.add(current)
            row = self.prompt(current)
            chain.append(row)
            current = row["parent_id"]
        return chain
