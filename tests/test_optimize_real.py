"""Runs of the real optimizer through the history: short runs on the default model (SmolLM2-135M, fp32, CPU) in
each mode, and a stop and resume on the tiny model."""

import threading

import pytest

from toolkit.demo import ensure_demo_task
from toolkit.engine.greater import GreaterConfig
from toolkit.optimize import optimize, resume


@pytest.mark.parametrize("mode", ["direct", "reasoning"])
def test_short_real_run_is_stored(project, real_tm, mode):
    task = ensure_demo_task(project)
    import io

    from rich.console import Console

    from toolkit.render import StepPrinter

    cfg = GreaterConfig(mode=mode, steps=2, n_train=3, n_dev=3, max_new_tokens=8, topk=20, topq=3, dev_every=1)
    out = Console(file=io.StringIO(), width=120)
    result = optimize(project, task["name"], config=cfg, torch_model=real_tm, on_step=StepPrinter(2, out))
    assert result.status == "done" and result.steps == 2
    run = project.store.run(result.run_id)
    assert run["config"]["greater"]["mode"] == mode and run["model_sha256"] == real_tm.sha256
    assert run["versions"]["torch"] and run["seed"] == 0
    steps = project.store.steps(result.run_id)
    assert len(steps) == 2 and all(s["timings"]["gradient"] > 0 for s in steps)
    assert all(0 <= s["dev_accuracy"] <= 1 for s in steps)  # dev_every=1: a dev score at every step
    assert out.file.getvalue().count("dev acc") == 2
    assert project.store.prompt(result.prompt_id)["text"] == result.prompt


def test_stop_and_resume_a_run_of_the_real_optimizer(project, tiny_tm):
    """The GReaTer engine itself (not a fake optimizer) stopped after a step and resumed to its end; the tiny
    random-weight model is enough for the lifecycle (the real model's runs are above)."""
    task = ensure_demo_task(project)
    cfg = GreaterConfig(steps=3, n_train=3, n_dev=3, topk=20, topq=3)
    stop = threading.Event()
    first = optimize(project, task["name"], config=cfg, torch_model=tiny_tm, on_step=lambda r: stop.set(), stop=stop)
    assert first.status == "stopped" and project.store.run(first.run_id)["status"] == "stopped"
    done = resume(project, first.run_id, torch_model=tiny_tm)
    assert done.status == "done" and done.run_id == first.run_id
    assert [s["step"] for s in project.store.steps(first.run_id)] == [0, 1, 2]
