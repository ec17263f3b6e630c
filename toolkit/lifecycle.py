"""The run lifecycle every optimizer shares (GReaTer and each baseline): :func:`drive` runs an optimizer through
the one protocol (``run(state, stop)`` yields step records, ``current_prompt(state)``, ``conclude(state) ->
Finished``), stores each step as it completes, then the final prompt, the candidates the final dev test compared
and the run's result. toolkit.optimize (GReaTer) and toolkit.baselines both build on this room; neither imports
the other's lifecycle, so there is no import circle.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .engine.config import STORED_STEP_FIELDS, StepRecord


@dataclass
class OptimizeResult:
    run_id: int
    status: str
    prompt_id: int | None
    prompt: str
    initial_prompt_id: int
    train_accuracy: float | None
    dev_accuracy: float | None
    steps: int
    seconds: float
    selection: dict | None = None  # the paired dev test against the starting prompt (see toolkit.selection)
    stop_reason: str | None = None  # why the search ended early (converged), if it did
    calibration: dict | None = None  # the final prompt's label calibration, if the final choice took one
    demos: list | None = None  # the final prompt's demonstrations, if the final choice took some


def library_versions() -> dict:
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("gradprompt", "torch", "transformers", "bitsandbytes", "llama-cpp-python", "sqlite-utils"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return versions


STEP_FIELDS = STORED_STEP_FIELDS  # the schema: toolkit.engine.config.StepRecord


def record_step(store, run_id: int, record: StepRecord, on_step: Callable[[Any], None] | None) -> None:
    """Store one step record of any optimizer (it carries the state to resume from), then report it."""
    store.add_step(
        run_id,
        {k: record[k] for k in STEP_FIELDS}  # type: ignore[literal-required]  # (the schema's own keys)
        | {
            "accepted": int(record["accepted"]),
            "dev_accuracy": record.get("dev_accuracy"),
            "search": record.get("search"),
        },
    )
    if on_step:
        on_step(record)


@dataclass
class Finished:
    """What any optimizer concludes with: the final prompt and how it was chosen (stored with the run)."""

    prompt: str
    train_accuracy: float | None
    dev_accuracy: float | None
    steps: int
    top: list = field(default_factory=list)  # the prompts compared at the end, with their scores
    selection: dict | None = None  # the paired dev test against the starting prompt
    stop_reason: str | None = None
    usage: dict = field(default_factory=dict)  # model calls / tokens the run cost
    calibration: dict | None = None  # the final prompt's label calibration (toolkit.calibration), if chosen
    demos: list | None = None  # the final prompt's demonstrations [[input, answer], ...], if chosen


def drive(
    project,
    task_row,
    run_id: int,
    optimizer,
    state: dict,
    initial_id: int,
    on_step: Callable[[Any], None] | None,
    stop: threading.Event | None,
) -> OptimizeResult:
    """The one run lifecycle of every method: run steps (each stored as it completes, with the state to resume
    from), then stop (``stopped``, resumable), fail (``failed``; Ctrl-C is ``stopped``) or conclude (``done``, the
    final prompt registered in the library)."""
    store = project.store
    t_start = time.perf_counter()
    try:
        for record in optimizer.run(state, stop=stop):
            state = record["state"]
            record_step(store, run_id, record, on_step)
        if stop is not None and stop.is_set():
            seconds = time.perf_counter() - t_start
            store.update_run(run_id, status="stopped", timings={"seconds": seconds})
            return OptimizeResult(
                run_id, "stopped", None, optimizer.current_prompt(state), initial_id, None, None, state["step"], seconds
            )
        optimize_seconds = time.perf_counter() - t_start
        done = optimizer.conclude(state)
    except BaseException as exc:
        try:
            store.update_run(
                run_id,
                status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                error=f"{type(exc).__name__}: {exc}",
            )
        except Exception:  # e.g. the disk is full: the run then reads interrupted (its process is gone)
            pass
        raise
    cal_json, demos_json = _cal_json(done.calibration), _demos_json(done.demos)
    existing = store.find_prompt(project.id, task_row["id"], done.prompt, cal_json, demos_json)
    prompt_id = (
        existing["id"]
        if existing
        else project.add_prompt(
            task_row,
            done.prompt,
            origin=optimizer.origin,
            parent_id=initial_id,
            run_id=run_id,
            step=done.steps,
            calibration=cal_json,
            demos=demos_json,
        )
    )
    keep_candidates(project, task_row, run_id, initial_id, prompt_id, done.top)
    seconds = time.perf_counter() - t_start
    store.update_run(
        run_id,
        status="done",
        finished=time.time(),
        best_prompt_id=prompt_id,
        timings={
            "seconds": seconds,
            "optimize_seconds": optimize_seconds,
            "top": done.top,
            "train_accuracy": done.train_accuracy,
            "dev_accuracy": done.dev_accuracy,
            "selection": done.selection,
            "stop_reason": done.stop_reason,
            "usage": done.usage,
        },
    )
    return OptimizeResult(
        run_id,
        "done",
        prompt_id,
        done.prompt,
        initial_id,
        done.train_accuracy,
        done.dev_accuracy,
        done.steps,
        seconds,
        selection=done.selection,
        stop_reason=done.stop_reason,
        calibration=done.calibration,
        demos=done.demos,
    )


def _cal_json(calibration: dict | None) -> str | None:
    """A calibration as the library stores it (one canonical JSON text: part of the version's identity)."""
    if not calibration:
        return None
    from .calibration import Calibration

    cal = Calibration.from_json(calibration)
    return cal.to_json() if cal else None


def _demos_json(demos) -> str | None:
    from .layout import demos_to_json

    return demos_to_json(tuple((str(i), str(a)) for i, a in demos or ()))


CANDIDATE_TAG = "dev-compared"


def keep_candidates(project, task_row, run_id: int, initial_id: int, chosen_id: int, top: list[dict]) -> None:
    """Every prompt the final dev test compared goes to the library, tagged ``dev-compared`` with its dev
    result in the note, so a user can still take one the test did not adopt; its id is written into ``top``
    (what `runs show` lists)."""
    store = project.store
    for row in top:
        if row.get("initial"):
            row["prompt_id"] = initial_id
            continue
        if row.get("dev_accuracy") is None or "wins" not in row:
            continue
        cal_json, demos_json = _cal_json(row.get("calibration")), _demos_json(row.get("demos"))
        existing = store.find_prompt(project.id, task_row["id"], row["prompt"], cal_json, demos_json)
        note = (
            f"Run {run_id} dev test"
            + (" (with its label calibration)" if row.get("calibration") else "")
            + (f" (with {len(row['demos'])} demonstrations)" if row.get("demos") else "")
            + f": {100 * row['dev_accuracy']:.1f}% on dev, {row['wins']} fixed and "
            f"{row['losses']} broken against the starting prompt (one-sided p={row['p_value']:.4f}, level "
            f"{row['level']:.4f}): "
            + (
                "adopted"
                if row.get("chosen")
                else "passed, not the best on dev"
                if row.get("passed")
                else "not adopted"
            )
        )
        if existing:
            pid = existing["id"]
            if pid not in (initial_id, chosen_id) and not existing["note"]:
                store.update_prompt_meta(pid, add_tags=[CANDIDATE_TAG], note=note)
            else:
                store.update_prompt_meta(pid, add_tags=[CANDIDATE_TAG])
        else:
            pid = project.add_prompt(
                task_row,
                row["prompt"],
                origin="candidate",
                parent_id=initial_id,
                run_id=run_id,
                tags=[CANDIDATE_TAG],
                note=note,
                calibration=cal_json,
                demos=demos_json,
            )
        row["prompt_id"] = pid
