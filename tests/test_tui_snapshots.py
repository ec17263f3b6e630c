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
    return create_app(project, Backends(load_torch_model=lambda model_id, precision='auto': None))


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
