"""The run lifecycle (toolkit.lifecycle.drive) through the optimizer seam: a fake optimizer, a real history.

Every method (GReaTer and each baseline) is driven by the same function; these tests need no model: each step is
stored as it completes, a stop leaves a resumable run, a failure is recorded and re-raised, Ctrl-C reads as
stopped, and a finished run puts its final prompt in the library (row and file)."""

import threading

import pytest

from toolkit.lifecycle import Finished, drive
from toolkit.tasks import read_task_file


class FakeOptimizer:
    """Steps that rewrite the prompt one word at a time; ``fail_at``: the step that raises ``error``."""

    origin = "run"

    def __init__(self, steps=4, fail_at=None, error=None, stop_after=None):
        self.steps, self.fail_at, self.stop_after = steps, fail_at, stop_after
        self.error = error or RuntimeError("the model went away")
        self.concluded = False

    def run(self, state, stop=None):
        while state["step"] < self.steps:
            if stop is not None and stop.is_set():
                return
            n = state["step"] + 1
            if n == self.fail_at:
                raise self.error
            prompt = state["prompt"] + f" w{n}"
            state = {"step": n, "prompt": prompt}
            yield {
                "step": n,
                "position": n,
                "prompt_before": prompt.rsplit(" ", 1)[0],
                "prompt_after": prompt,
                "prompt_ids": list(range(n)),
                "chosen_token": f"w{n}",
                "candidates": [],
                "train_score": 1.0 / n,
                "train_accuracy": n / 10,
                "state": state,
                "timings": {"step": 0.01},
                "accepted": True,
            }
            if self.stop_after == n and stop is not None:
                stop.set()

    def current_prompt(self, state):
        return state["prompt"]

    def conclude(self, state):
        self.concluded = True
        return Finished(prompt=state["prompt"], train_accuracy=0.9, dev_accuracy=0.8, steps=state["step"])


def _run(project, tmp_path):
    path = tmp_path / "yn.csv"
    path.write_text("input,target\n" + "".join(f"q{i},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    task = project.store.task_by_id(project.store.add_task(project.id, read_task_file(path, name="yn")))
    start = project.add_prompt(task, "Answer.", origin="initial")
    run_id = project.store.create_run(
        project_id=project.id,
        task_id=task["id"],
        method="fake",
        model_id="fake",
        model_sha256="x",
        config={},
        seed=0,
        versions={},
        initial_prompt_id=start,
    )
    return task, start, run_id


def test_a_finished_run_stores_every_step_and_its_prompt(project, tmp_path):
    task, start, run_id = _run(project, tmp_path)
    seen = []
    result = drive(project, task, run_id, FakeOptimizer(), {"step": 0, "prompt": "Answer."}, start, seen.append, None)
    assert (
        result.status == "done" and result.prompt == "Answer. w1 w2 w3 w4" and [r["step"] for r in seen] == [1, 2, 3, 4]
    )
    assert [s["step"] for s in project.store.steps(run_id)] == [1, 2, 3, 4]
    run = project.store.run(run_id)
    assert run["status"] == "done" and run["best_prompt_id"] == result.prompt_id
    row = project.store.prompt(result.prompt_id)
    assert row["parent_id"] == start and row["run_id"] == run_id and row["origin"] == "run"
    assert (project.path / "prompts" / "yn" / f"{row['id']:04d}.txt").is_file()  # both or neither


def test_a_stop_leaves_a_resumable_run_and_nothing_concluded(project, tmp_path):
    task, start, run_id = _run(project, tmp_path)
    stop = threading.Event()
    fake = FakeOptimizer(stop_after=2)
    result = drive(project, task, run_id, fake, {"step": 0, "prompt": "Answer."}, start, None, stop)
    assert result.status == "stopped" and result.prompt_id is None and not fake.concluded
    assert project.store.run(run_id)["status"] == "stopped"
    steps = project.store.steps(run_id)
    assert [s["step"] for s in steps] == [1, 2] and steps[-1]["state"] == {"step": 2, "prompt": "Answer. w1 w2"}
    # resuming is driving again from the stored state: the run ends as if it had never stopped
    result = drive(project, task, run_id, FakeOptimizer(), steps[-1]["state"], start, None, threading.Event())
    assert result.status == "done" and result.prompt == "Answer. w1 w2 w3 w4"
    assert [s["step"] for s in project.store.steps(run_id)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "error,status", [(RuntimeError("the model went away"), "failed"), (KeyboardInterrupt(), "stopped")]
)
def test_a_failure_is_recorded_with_the_steps_before_it(project, tmp_path, error, status):
    task, start, run_id = _run(project, tmp_path)
    with pytest.raises(type(error)):
        drive(
            project, task, run_id, FakeOptimizer(fail_at=3, error=error), {"step": 0, "prompt": "A."}, start, None, None
        )
    run = project.store.run(run_id)
    assert run["status"] == status and type(error).__name__ in run["error"]
    assert [s["step"] for s in project.store.steps(run_id)] == [1, 2]  # what was done is kept
    assert [p["id"] for p in project.store.list_prompts(project.id, task["id"])] == [start]  # no final prompt
