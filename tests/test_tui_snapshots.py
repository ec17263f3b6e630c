"""Snapshot tests of the main screens at 80x24 (pytest-textual-snapshot). Update with --snapshot-update."""

import pytest

from tui.app import Backends, create_app


@pytest.fixture
def filled_project(tmp_path, monkeypatch):
    from toolkit.project import init_project

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))  # no models added by other tests
    from toolkit.tasks import read_task_file

    project = init_project(tmp_path / "snap", name="snapshots")
    path = tmp_path / "reviews.csv"
    path.write_text("goal,target\n" + "".join(f"review {i},{'positive' if i % 2 else 'negative'}\n" for i in range(20)))
    project.store.add_task(project.id, read_task_file(path))
    task = project.store.find_task(project.id, "reviews")
    a = project.add_prompt(task, "think step by step", origin="initial")
    project.add_prompt(task, "think slowly step by step", origin="edit", parent_id=a)
    yield project
    project.close()


def _app(project):
    return create_app(project, Backends(load_torch_model=lambda model_id, precision="auto": None))


@pytest.mark.parametrize("keys", [[], ["2"], ["5"], ["question_mark"]], ids=["tasks", "prompts", "models", "help"])
def test_main_screens(snap_compare, filled_project, keys):
    assert snap_compare(_app(filled_project), terminal_size=(80, 24), press=keys)


def test_diff_screen(snap_compare, filled_project):
    from tui.app import DiffScreen

    store = filled_project.store

    async def open_diff(pilot):
        pilot.app.push_screen(DiffScreen(store.prompt(1), store.prompt(2)))
        await pilot.pause()

    assert snap_compare(_app(filled_project), terminal_size=(80, 24), run_before=open_diff)


def _evaluate(project, prompt_id, pattern):
    store = project.store
    task = store.find_task(project.id, "reviews")
    examples = store.examples(task["id"], "test")
    ev = store.create_evaluation(
        prompt_id=prompt_id,
        task_id=task["id"],
        split="test",
        model_id="smollm2-135m",
        model_sha256="b179c9523d0e6a0f",
        backend="llamacpp",
        quantization="Q4_1",
        mode="direct",
        settings={"mode": "direct", "answer_tokens": 16, "limit": None},
        n=len(examples),
    )
    for ex, ok in zip(examples, pattern):
        answer = ex["answer"] if ok else {"positive": "negative", "negative": "positive"}[ex["answer"]]
        store.add_result(ev, ex["id"], f"{ev}-{ex['id']}", answer, answer, bool(ok), 0.1)
    k = sum(pattern)
    from toolkit.stats import wilson_interval

    lo, hi = wilson_interval(k, len(pattern))
    store.finish_evaluation(ev, n=len(pattern), correct=k, accuracy=k / len(pattern), ci_low=lo, ci_high=hi)
    return ev


def test_evaluation_details(snap_compare, filled_project):
    n = len(filled_project.store.examples(filled_project.store.find_task(filled_project.id, "reviews")["id"], "test"))
    _evaluate(filled_project, 1, [i % 3 != 0 for i in range(n)])

    async def open_details(pilot):
        await pilot.press("6")
        pilot.app.query_one("#evals-table").focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(_app(filled_project), terminal_size=(80, 24), run_before=open_details)


def test_diff_screen_with_its_effect(snap_compare, filled_project):
    from toolkit.effects import describe_effect, diff_effect
    from tui.app import DiffScreen

    store = filled_project.store
    n = len(store.examples(store.find_task(filled_project.id, "reviews")["id"], "test"))
    _evaluate(filled_project, 1, [i % 3 != 0 for i in range(n)])
    _evaluate(filled_project, 2, [i % 4 != 1 for i in range(n)])

    async def open_diff(pilot):
        effects = [describe_effect(row) for row in diff_effect(store, 1, 2)]
        pilot.app.push_screen(DiffScreen(store.prompt(1), store.prompt(2), effects))
        await pilot.pause()

    assert snap_compare(_app(filled_project), terminal_size=(100, 24), run_before=open_diff)
