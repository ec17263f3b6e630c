"""The history's evaluations and their per-example results (the cache of every scored example): a mixin of the
Store."""

from __future__ import annotations

import sqlite_utils

from .. import owner
from ..errors import (
    EvaluationNotFoundError,
)
from .schema import HasDb, _decode, _decoded_evaluation, _encode, _now, new_id


class Evaluations(HasDb):
    """Methods of the Store (a mixin: it uses the Store's ``db``)."""

    def create_evaluation(self, **fields) -> int:
        fields.setdefault("started", _now())
        fields.setdefault("status", "running")
        fields.setdefault("owner", owner.me())
        return new_id(self.db.table("evaluations").insert(_encode("evaluations", fields)))

    def finish_evaluation(self, evaluation_id: int, **fields) -> None:
        fields.setdefault("finished", _now())
        fields.setdefault("status", "done")
        self.db.table("evaluations").update(evaluation_id, _encode("evaluations", fields))

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
        self.db.table("results").insert(
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
        return next(self.db.table("results").rows_where("cache_key = ?", [cache_key], limit=1), None)

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
        rows = self.db.table("evaluations").rows_where(" and ".join(where) or None, args or None, order_by="id")
        return [_decoded_evaluation(row) for row in rows]

    def evaluation(self, evaluation_id: int) -> dict:
        try:
            row = self.db.table("evaluations").get(int(evaluation_id))
        except (sqlite_utils.db.NotFoundError, ValueError):
            raise EvaluationNotFoundError(
                f"No evaluation with id {evaluation_id}. `gradprompt evals list` shows the evaluations."
            ) from None
        return _decoded_evaluation(row)

    def add_memorization_check(self, record: dict) -> int:
        """Store one memorization check (toolkit.memorization); returns its id."""
        return new_id(self.db.table("memorization").insert(_encode("memorization", {**record, "created": _now()})))

    def memorization_checks(self, task_id: int, split: str | None = None, model_id: str | None = None) -> list[dict]:
        """The memorization checks of a task (one split, one model), newest first."""
        where: list[str] = ["task_id = ?"]
        args: list[object] = [task_id]
        if split is not None:
            where.append("split = ?")
            args.append(split)
        if model_id is not None:
            where.append("model_id = ?")
            args.append(model_id)
        rows = self.db.table("memorization").rows_where(" and ".join(where), args, order_by="id desc")
        return [_decode("memorization", r) for r in rows]

    def results(self, evaluation_id: int) -> list[dict]:
        return list(self.db.table("results").rows_where("evaluation_id = ?", [evaluation_id], order_by="id"))

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
