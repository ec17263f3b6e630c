"""The terminal UI driven through Textual's Pilot, with the tiny model as the fast backend."""

import json
from pathlib import Path

import pytest
from conftest import stored_evaluation
from textual.widgets import Static

from tui.app import Backends, DiffScreen, ErrorDialog, TextDialog, create_app


def tiny_backends(tiny_tm, calls):
    def load(model_id, precision="auto"):
        calls.append(model_id)
        return tiny_tm

    return Backends(load_torch_model=load)


def write_task(tmp_path, n=12):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "goal,target\n"
        + "".join(
            f"review {i} was {'great' if i % 2 else 'awful'},{'positive' if i % 2 else 'negative'}\n" for i in range(n)
        )
    )
    return path


async def fill(pilot, app, values: dict):
    for name, value in values.items():
        field = app.screen.query_one(f"#field-{name}")
        field.value = value
    await pilot.pause()
    await pilot.click("#ok")


async def select_prompt(pilot, app, prompt_id):
    await pilot.press("2")
    table = app.query_one("#prompts-table")
    table.focus()
    table.move_cursor(row=table.get_row_index(str(prompt_id)))


async def import_task(pilot, app, path):
    """Import a task through the TUI's import dialog and wait for it."""
    await pilot.press("i")
    await fill(pilot, app, {"path": str(path)})
    await app.workers.wait_for_complete()
    await pilot.pause()


async def wait_for(pilot, condition, limit=600):
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.slow  # a Pilot session of several screens
async def test_import_task_and_broken_file(project, tiny_tm, tmp_path):
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("i")
        await fill(pilot, app, {"path": str(write_task(tmp_path))})
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#tasks-table").row_count == 1
        bad = tmp_path / "bad.csv"
        bad.write_text("goal,target\nx,yes\n,no\n")
        await pilot.press("i")
        await fill(pilot, app, {"path": str(bad)})
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "row 2: column 'goal' is empty" in str(app.screen.query_one("#error-text").render())
    assert [t["name"] for t in project.store.list_tasks(project.id)] == ["reviews"]


@pytest.mark.slow  # a run stopped and resumed on the tiny model
async def test_run_watch_stop_resume(project, tiny_tm, tmp_path):
    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    calls = []
    app = create_app(project, tiny_backends(tiny_tm, calls))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await fill(pilot, app, {"steps": "400", "train": "4", "dev_every": "2"})  # far more than the test waits for
        steps = app.query_one("#live-steps")
        await wait_for(pilot, lambda: steps.row_count >= 2)
        assert steps.get_row_at(0)[4] == "" and steps.get_row_at(1)[4].endswith("%")  # dev acc every 2nd step
        assert "dev acc" in str(app.query_one("#live-status").render())
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        run = project.store.list_runs(project.id)[0]
        assert run["status"] == "stopped" and 1 <= run["n_steps"] < 400
        assert "stopped" in str(app.query_one("#live-status").render())
        first = run["n_steps"]
        await pilot.press("3")
        await pilot.press("r")
        await wait_for(pilot, lambda: project.store.list_runs(project.id)[0]["n_steps"] > first)
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        run = project.store.list_runs(project.id)[0]
        assert run["status"] == "stopped" and run["n_steps"] > first
        stored = project.store.steps(run["id"])
        assert [s["step"] for s in stored] == list(range(run["n_steps"]))
        assert [s["dev_accuracy"] is not None for s in stored] == [s["step"] % 2 == 1 for s in stored]
        assert calls == ["smollm2-135m", "smollm2-135m"]
        assert "score" in str(app.query_one("#live-plot").render())


@pytest.mark.slow  # a run on the tiny model
async def test_a_live_step_refreshes_only_the_runs_and_the_live_tab(project, tiny_tm, tmp_path):
    """Issue 11: every live step used to refresh every tab and re-query the whole store."""
    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        counts = {"all": 0, "runs": 0}
        refresh_all, refresh_runs = app.refresh_all, app.refresh_runs

        def counted_all():
            counts["all"] += 1
            refresh_all()

        def counted_runs(names=None):
            counts["runs"] += 1
            refresh_runs(names)

        app.refresh_all, app.refresh_runs = counted_all, counted_runs
        await pilot.press("n")
        await fill(pilot, app, {"steps": "400", "train": "4"})
        steps = app.query_one("#live-steps")
        await wait_for(pilot, lambda: steps.row_count >= 3)
        seen_all, seen_steps = counts["all"], steps.row_count
        assert counts["runs"] >= seen_steps  # the step counts stay current
        assert seen_all <= 2  # the start of the run, not one per step
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#runs-table").get_row_at(0)[3] == "stopped"


@pytest.mark.slow  # a Pilot session of several screens
async def test_diff_and_export(project, tiny_tm, tmp_path):
    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    task = project.store.find_task(project.id, "reviews")
    a = project.add_prompt(task, "think step by step", origin="manual")
    b = project.add_prompt(task, "think slowly step by step", origin="edit", parent_id=a)
    examples = project.store.examples(task["id"], "test")
    for pid, ok in ((a, False), (b, True)):  # b fixes every example a got wrong
        stored_evaluation(project.store, pid, task, examples, [ok] * len(examples))
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await pilot.press("d")
        await fill(pilot, app, {"a": str(a), "b": str(b)})
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)
        left = str(app.screen.query_one("#diff-left", Static).render())
        right = str(app.screen.query_one("#diff-right", Static).render())
        assert left == "think step by step" and right == "think slowly step by step"
        added = [s for s in app.screen.query_one("#diff-right", Static).render().spans if "green" in str(s.style)]
        assert len(added) == 1  # exactly the inserted token is highlighted
        assert "1 added" in str(app.screen.query_one("#diff-stats", Static).render())
        effect = str(app.screen.query_one("#diff-effect", Static).render())
        assert f"0.0% -> 100.0% (+100.0), {len(examples)} fixed, 0 broken" in effect
        await pilot.press("escape")
        await pilot.press("t")  # tags and note (metadata; the text never changes)
        await fill(pilot, app, {"tags": "best, reviewed", "note": "kept"})
        await pilot.pause()
        row = project.store.prompt(int(app.selected("#prompts-table")))
        assert json.loads(row["tags"]) == ["best", "reviewed"] and row["note"] == "kept"
        await pilot.press("t")
        await fill(pilot, app, {"tags": "bad tag"})
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        await pilot.press("escape")
        await pilot.press("e")
        await fill(pilot, app, {"format": "json"})
        await app.workers.wait_for_complete()
    assert list(project.exports_dir.glob("reviews-prompt-*.json"))


@pytest.mark.slow  # the real default model
async def test_real_default_model_through_the_ui(project, tmp_path):
    """End to end with the real SmolLM2 backend and a tiny budget."""
    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    app = create_app(project)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await fill(pilot, app, {"steps": "1", "train": "2"})
        await app.workers.wait_for_complete()
        await pilot.pause()
    run = project.store.list_runs(project.id)[0]
    assert run["status"] == "done" and run["n_steps"] == 1 and run["model_id"] == "smollm2-135m"


@pytest.mark.slow  # a Pilot session of several screens
async def test_create_and_switch_project_and_results(project, tiny_tm, tmp_path):
    from toolkit.store import Store  # noqa: F401  (the UI itself never touches the store's SQL)

    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("0")
        await pilot.press("c")
        await fill(pilot, app, {"path": str(tmp_path / "second"), "name": "second"})
        await pilot.pause()
        assert app.project.name == "second" and (tmp_path / "second" / "gradprompt.toml").exists()
        paths = [row.value for row in app.query_one("#projects-table").rows]
        assert str(tmp_path / "second") in paths and str(project.path) in paths
        await pilot.press("6")
        assert "No evaluations yet" in str(app.query_one("#heatmap").render())


@pytest.mark.slow  # a Pilot session of several screens
async def test_results_heatmap_and_flipped_examples(project, tiny_tm, tmp_path):
    from toolkit.tasks import read_task_file

    store = project.store
    store.add_task(project.id, read_task_file(write_task(tmp_path)))
    task = store.find_task(project.id, "reviews")
    examples = store.examples(task["id"], limit=3)
    evals = []
    for pid, pattern in (
        (project.add_prompt(task, "a", origin="manual"), [1, 0, 1]),
        (project.add_prompt(task, "b", origin="manual"), [1, 1, 0]),
    ):
        ev = stored_evaluation(store, pid, task, examples, pattern, ci=(0.1, 0.9))
        evals.append(ev)
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("6")
        assert app.query_one("#evals-table").row_count == 2
        assert "66.7" in str(app.query_one("#heatmap").render())
        await pilot.press("f")
        await fill(pilot, app, {"a": str(evals[0]), "b": str(evals[1])})
        await pilot.pause()
        assert isinstance(app.screen, TextDialog)
        assert "2 examples flipped" in app.screen.text and "fixed" in app.screen.text and "broken" in app.screen.text


@pytest.mark.slow  # a Pilot session of several screens
async def test_import_with_column_mapping_and_prompt_details(project, tiny_tm, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(f'{{"q": "question {i}", "sol": "work #### {i % 3}"}}\n' for i in range(12)))
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("i")
        for name, value in {
            "path": str(path),
            "input_column": "q",
            "target_column": "sol",
            "answer_regex": r"####\s*(\d+)",
        }.items():
            app.screen.query_one(f"#field-{name}").value = value
        await pilot.pause()
        preview = str(app.screen.query_one("#preview").render())
        assert "columns: q, sol" in preview and "answer: number" in preview
        await pilot.click("#ok")
        await app.workers.wait_for_complete()
        await pilot.pause()
        task = project.store.find_task(project.id, "qa")
        assert task and task["answer_kind"] == "number"
        assert {e["answer"] for e in project.store.examples(task["id"])} == {"0", "1", "2"}
        a = project.add_prompt(task, "solve it", origin="manual")
        project.add_prompt(task, "solve it carefully", origin="edit", parent_id=a)
        app.refresh_all()
        await pilot.press("2")
        table = app.query_one("#prompts-table")
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TextDialog)
        assert "lineage: 2 (edit) <- 1 (manual)" in app.screen.text


@pytest.mark.slow  # every palette action
async def test_command_palette_runs_gradprompt_actions(project, tiny_tm, tmp_path):
    from textual.command import CommandList, CommandPalette

    from tui.app import InputDialog

    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"import a task")
        await wait_for(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, limit=50)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InputDialog), limit=50)
        assert "Import" in app.screen.form_title
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to models")
        await wait_for(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, limit=50)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "models", limit=50)


@pytest.mark.slow  # writes and reads GGUF files
async def test_models_tab_shows_files_and_adds_a_local_gguf(project, tiny_tm, tmp_path, monkeypatch):
    from textual.widgets import DataTable

    from toolkit.models import get_model

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "home"))  # the added model stays in this test
    gguf = get_model().gguf_path()
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("5")
        table = app.query_one("#models-table", DataTable)
        row = table.get_row("smollm2-135m")
        assert row[3] == gguf.name and row[4].endswith("MB") and row[5] == get_model().gguf_sha256[:12]
        await pilot.press("m")
        await fill(pilot, app, {"id": "my-smol", "gguf": str(gguf), "name": "My SmolLM2"})
        await app.workers.wait_for_complete()
        await pilot.pause()
        row = table.get_row("my-smol")
        assert row[1] == "My SmolLM2" and row[5] == get_model().gguf_sha256[:12]
        assert get_model("my-smol").gguf_sha256 == get_model().gguf_sha256
        not_gguf = tmp_path / "notes.txt"
        not_gguf.write_text("hello")
        await pilot.press("m")
        await fill(pilot, app, {"id": "broken", "gguf": str(not_gguf)})
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog), limit=50)
        assert "not a GGUF file" in str(app.screen.query_one("#error-text").render())
        await pilot.press("escape")
        import gguf as gguf_py  # a GGUF with no chat template: added with a template file, no warning

        bare = tmp_path / "bare.gguf"
        import numpy as np

        writer = gguf_py.GGUFWriter(str(bare), "llama")
        writer.add_tensor("t", np.zeros((4, 4), dtype=np.float32))  # a complete file: models add checks that
        writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
        writer.close()
        template = tmp_path / "t.jinja"
        template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
        await pilot.press("m")
        await fill(pilot, app, {"id": "bare", "gguf": str(bare), "template": str(template)})
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert get_model("bare").template_for("") == template.read_text()
        assert not any("no chat template" in n.message for n in app._notifications)
        await pilot.press("m")
        await fill(pilot, app, {"id": "bare2", "gguf": str(bare)})
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: any("no chat template" in n.message for n in app._notifications), limit=50)


@pytest.mark.slow  # a Pilot session of several screens
async def test_models_tab_lists_models_found_on_the_machine_and_enter_adds_one(project, tiny_tm, tmp_path, monkeypatch):
    from test_discover import ollama_model, tiny_gguf
    from textual.widgets import DataTable

    from toolkit.models import get_model

    monkeypatch.setenv("GRADPROMPT_HOME", str(tmp_path / "gp"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("OLLAMA_MODELS", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    blob = ollama_model(tmp_path / ".ollama" / "models", "tiny", "1b", tiny_gguf(tmp_path / "t.gguf", ftype=7))
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("5")
        table = app.query_one("#models-table", DataTable)
        row = table.get_row("found:ollama:tiny:1b")
        assert row[0] == "ollama:tiny:1b" and row[2] == "Q8_0" and row[3] == blob.name
        table.move_cursor(row=table.get_row_index("found:ollama:tiny:1b"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.query("#field-from"), limit=50)
        assert app.screen.query_one("#field-id").value == "tiny-1b"
        await fill(pilot, app, {})
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert get_model("tiny-1b").origin == "ollama:tiny:1b"
        assert Path(get_model("tiny-1b").gguf_path_str) == blob.resolve()
        assert table.get_row("tiny-1b")[6] == "ollama:tiny:1b"
        assert "found:ollama:tiny:1b" not in [k.value for k in table.rows]  # added: listed once, as a model


async def test_enter_on_an_evaluation_shows_its_examples(project, tiny_tm, tmp_path):
    from toolkit.tasks import read_task_file

    store = project.store
    store.add_task(project.id, read_task_file(write_task(tmp_path)))
    task = store.find_task(project.id, "reviews")
    examples = store.examples(task["id"], "test")
    pid = project.add_prompt(task, "Is it [positive]?", origin="manual")
    ev = store.create_evaluation(
        prompt_id=pid,
        task_id=task["id"],
        split="test",
        model_id="m",
        model_sha256="abc",
        backend="llamacpp",
        quantization="Q4_1",
        mode="reasoning",
        settings={"mode": "reasoning", "max_new_tokens": 32},
        n=len(examples),
    )
    for i, ex in enumerate(examples):
        ok = i != 0
        store.add_result(ev, ex["id"], f"k{i}", f"chain {i} [thinking] then", ex["answer"] if ok else "bogus", ok, 0.1)
    n = len(examples)
    store.finish_evaluation(ev, n=n, correct=n - 1, accuracy=(n - 1) / n, ci_low=0.2, ci_high=0.99)
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.press("6")
        app.query_one("#evals-table").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TextDialog)
        text = app.screen.text
        assert f"accuracy {n - 1}/{n}" in text and "max_new_tokens=32" in text
        assert "Is it \\[positive]?" in text  # markup in user text is escaped, not interpreted
        assert text.count("[red]wrong") == 1 and text.count("[green]ok") == n - 1 and "predicted: [b]bogus[/b]" in text
        wrong = text.splitlines()[[i for i, line in enumerate(text.splitlines()) if "[red]wrong" in line][0] :]
        assert "gold: [b]" in wrong[0] and wrong[1].strip().startswith("input: ")  # verdict and answers, then input
        assert all(" ".join(ex["input"].split())[:40] in text for ex in examples)
        assert "chain 0 \\[thinking] then" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TextDialog)


async def test_evaluate_the_selected_prompt_with_llama_cpp(project, tiny_tm, llama, tmp_path):
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Is this review positive or negative?", origin="manual")
    loaded = []
    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: loaded.append(model_id) or llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 34)) as pilot:
        await select_prompt(pilot, app, pid)
        await pilot.press("v")
        assert app.screen.query_one("#field-task").value == task["name"]
        await fill(pilot, app, {"limit": "three"})
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        assert "Only the first N: 'three' is not a whole number" in app.screen.text
        await pilot.press("escape")
        await pilot.press("v")
        await fill(pilot, app, {"limit": "3"})
        await wait_for(pilot, lambda: any(e["status"] == "done" for e in project.store.evaluations(prompt_id=pid)))
        await wait_for(pilot, lambda: app.query_one("#evals-table").row_count == 1)
        ev = project.store.evaluations(prompt_id=pid)[0]
        assert ev["n"] == 3 and ev["backend"] == "llamacpp" and loaded == [project.default_model]
        assert len(project.store.results(ev["id"])) == 3
        await pilot.press("v")  # again: the loaded model is reused and every example comes from the cache
        await fill(pilot, app, {"limit": "3"})
        await wait_for(
            pilot,
            lambda: (
                len(project.store.evaluations(prompt_id=pid)) == 2
                and project.store.evaluations(prompt_id=pid)[1]["status"] == "done"
            ),
        )
        again = project.store.evaluations(prompt_id=pid)[1]
        assert loaded == [project.default_model] and again["timings"]["cached"] == 3


async def test_the_evaluate_dialog_runs_a_second_attempt(project, tiny_tm, llama, tmp_path):
    """Issue 16's TUI action: the evaluate dialog's strategy choice; both attempts land in the Results tab."""
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    pid = project.add_prompt(task, "Is this review positive or negative?", origin="manual")
    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 40)) as pilot:
        await select_prompt(pilot, app, pid)
        await pilot.press("v")
        await fill(pilot, app, {"limit": "3", "strategy": "second-attempt"})
        await wait_for(pilot, lambda: len(project.store.evaluations(prompt_id=pid)) == 2)
        await wait_for(pilot, lambda: all(e["status"] == "done" for e in project.store.evaluations(prompt_id=pid)))
        modes = [e["mode"] for e in project.store.evaluations(prompt_id=pid)]
        assert modes == ["direct", "direct+second-attempt"]
        second = project.store.evaluations(prompt_id=pid)[1]
        assert second["n"] == 3 and all("\nsecond: " in r["output"] for r in project.store.results(second["id"]))
        await wait_for(pilot, lambda: app.query_one("#evals-table").row_count == 2)


async def test_the_combine_action_trains_a_reranker_and_shows_its_report(project, tiny_tm, llama, tmp_path):
    """Issue 16's combine in the TUI: `b` on the Results tab, the trained form; the evaluation lands in the
    Results tab, the safetensors file in the project, and the report opens."""
    from toolkit.demo import ensure_demo_task
    from toolkit.evaluation import evaluate_prompt

    task = ensure_demo_task(project)
    ids = []
    for text in ("Classify the sentiment.", "Answer the question.", "Is the review positive or negative?"):
        pid = project.add_prompt(task, text, origin="manual")
        ids.append(
            evaluate_prompt(
                project.store, model=llama, task_row=task, prompt_row=project.store.prompt(pid), limit=4
            ).evaluation_id
        )
    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("6")
        await pilot.press("b")
        await fill(pilot, app, {"ids": " ".join(map(str, ids)), "form": "trained reranker"})
        await wait_for(
            pilot,
            lambda: any(
                e["mode"] == "direct+trained-combine" and e["status"] == "done"
                for e in project.store.evaluations(task_id=task["id"])
            ),
            limit=1200,
        )
        await wait_for(pilot, lambda: "Trained combine" in getattr(app.screen, "text", ""))
        assert "majority vote" in app.screen.text and "any candidate right" in app.screen.text
        assert len(list((project.path / "combiners").glob("*.safetensors"))) == 1


async def test_compare_the_selected_prompt_across_runtimes(project, tiny_tm, llama, real_tm):
    from toolkit.demo import ensure_demo_task

    task = ensure_demo_task(project)
    a = project.add_prompt(task, "Positive or negative?", origin="manual")
    b = project.add_prompt(task, "Is this review positive or negative?", origin="edit", parent_id=a)
    loads = []
    backends = tiny_backends(tiny_tm, loads)
    backends.load_torch_model = lambda model_id, precision="auto": loads.append((model_id, precision)) or real_tm
    backends.load_llama_model = lambda model_id: loads.append(model_id) or llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 34)) as pilot:
        await select_prompt(pilot, app, b)
        await pilot.press("x")
        assert app.screen.query_one("#field-prompts").value == f"{a}, {b}"  # its origin first
        m = project.default_model
        await fill(pilot, app, {"runtimes": f"torch:{m}:fp32, llamacpp:{m}", "limit": "3"})
        await wait_for(pilot, lambda: len([e for e in project.store.evaluations() if e["status"] == "done"]) == 4)
        await wait_for(pilot, lambda: app.query_one("#evals-table").row_count == 4)
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "results")
        assert loads == [(m, "fp32"), m]  # one model at a time, each loaded once
        assert {(e["prompt_id"], e["backend"]) for e in project.store.evaluations()} == {
            (a, "torch"),
            (b, "torch"),
            (a, "llamacpp"),
            (b, "llamacpp"),
        }
        await pilot.press("2")
        await pilot.press("x")
        await fill(pilot, app, {"runtimes": "gpu:what"})
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        assert "llamacpp:MODEL or torch:MODEL:PRECISION" in app.screen.text


@pytest.mark.slow  # every tab
async def test_an_empty_project_says_what_to_do_and_tabs_follow_the_keys(project, tiny_tm, tmp_path):
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        hint = app.query_one("#tasks-empty", Static)
        assert hint.display and "Press i to import" in str(hint.render()) and "gradprompt demo" in str(hint.render())
        tabs = [str(t.label) for t in app.query("Tab")]
        assert tabs == ["Projects", "Tasks", "Prompts", "Runs", "Live", "Models", "Results"]
        for key, pane in zip("0123456", ["projects", "tasks", "prompts", "runs", "live", "models", "results"]):
            await pilot.press(key)
            assert app.query_one("#tabs").active == pane
        await pilot.press("1")
        await import_task(pilot, app, write_task(tmp_path))
        assert not app.query_one("#tasks-empty", Static).display


async def test_empty_or_bad_number_fields_are_named_not_python_errors(project, tiny_tm, tmp_path):
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 40)) as pilot:
        await import_task(pilot, app, write_task(tmp_path))
        await pilot.press("n")
        await pilot.pause()
        assert app.screen.query_one("#field-steps").value == "20"  # the CLI's defaults
        assert app.screen.query_one("#field-dev_every").value == "0"
        app.screen.query_one("#field-steps").value = ""
        await pilot.pause()
        preview = str(app.screen.query_one("#preview").render())
        assert "Steps: give a whole number" in preview and "invalid literal" not in preview
        app.screen.query_one("#field-steps").value = "ten"
        await pilot.pause()
        await pilot.click("#ok")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        text = str(app.screen.query_one("#error-text").render())
        assert "Steps: 'ten' is not a whole number" in text and "invalid literal" not in text


@pytest.mark.slow  # a run in another process
async def test_the_live_tab_follows_a_run_of_another_process_whole(project, tiny_tm, tmp_path):
    """A run started elsewhere (here: written straight into the history, as a CLI process would) shows in the
    Live tab with all its steps, new steps arrive as they are stored, and its end is reported."""
    store = project.store
    rid = store.create_run(
        project_id=project.id,
        task_id=None,
        method="greater",
        model_id="m",
        model_sha256="x",
        config={"greater": {"steps": 5}},
        seed=0,
        versions={},
        initial_prompt_id=None,
    )

    def step(i):
        store.add_step(
            rid,
            {
                "step": i,
                "position": i,
                "prompt_before": "a",
                "prompt_after": f"Answer {i}.",
                "prompt_ids": [1],
                "chosen_token": f" {i}",
                "accepted": 1,
                "candidates": [],
                "train_score": 0.5 - i / 10,
                "train_accuracy": 0.5 + i / 10,
                "state": {},
                "timings": {"scoring": 1.0},
            },
        )

    step(0)
    step(1)
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("4")
        table = app.query_one("#live-steps")
        await wait_for(pilot, lambda: table.row_count == 2, limit=50)
        assert f"run {rid} (watching)" in str(app.query_one("#live-status").render())
        step(2)
        await wait_for(pilot, lambda: table.row_count == 3, limit=50)
        assert "step 3/5" in str(app.query_one("#live-status").render())
        store.update_run(rid, status="done")
        await wait_for(pilot, lambda: "done after 3 steps" in str(app.query_one("#live-status").render()), limit=50)


@pytest.mark.slow  # every tab and dialog
async def test_keys_stay_with_the_tables_after_dialogs_escape_and_tab_switches(project, tiny_tm, tmp_path):
    """Closing a dialog, leaving the search box with escape and switching tabs all give the keys back to the tab's
    table, so the footer's keys act (a focused input would take them as text)."""
    from textual.widgets import DataTable, Input

    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    task = project.store.find_task(project.id, "reviews")
    project.add_prompt(task, "first prompt", origin="manual")
    project.add_prompt(task, "second prompt", origin="manual")
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.press("2")
        assert isinstance(app.focused, DataTable) and app.focused.id == "prompts-table"
        for key in ("question_mark", "a", "d"):  # help, add prompt, diff: each closed with escape
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is not app.screen_stack[0]
            await pilot.press("escape")
            await pilot.pause()
            assert app.focused.id == "prompts-table", key
        assert app.query_one("#prompt-search", Input).value == ""  # nothing was typed into the search box
        await pilot.press("3")
        assert app.query_one("#tabs").active == "runs" and app.focused.id == "runs-table"
        await pilot.press("2", "slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"second")
        await wait_for(pilot, lambda: app.query_one("#prompts-table").row_count == 1, limit=50)
        await pilot.press("escape")
        assert app.focused.id == "prompts-table"
        await pilot.press("1")  # a digit is a key again, not text
        assert app.query_one("#tabs").active == "tasks" and app.focused.id == "tasks-table"
        assert app.query_one("#prompt-search", Input).value == "second"


@pytest.mark.slow  # a Pilot session of several screens
async def test_the_selected_row_survives_a_refresh(project, tiny_tm, tmp_path):
    from toolkit.tasks import read_task_file

    project.store.add_task(project.id, read_task_file(write_task(tmp_path)))
    task = project.store.find_task(project.id, "reviews")
    ids = [project.add_prompt(task, f"prompt number {i}", origin="manual") for i in range(3)]
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 34)) as pilot:
        await select_prompt(pilot, app, ids[1])
        assert app.selected("#prompts-table") == str(ids[1])
        await pilot.press("t")
        await fill(pilot, app, {"tags": "keep"})
        await pilot.pause()
        assert app.selected("#prompts-table") == str(ids[1])  # not back on row 1
        assert app.focused.id == "prompts-table"
        app.refresh_all()  # a live step refreshes everything: the cursor stays too
        await pilot.pause()
        assert app.selected("#prompts-table") == str(ids[1])
        await pilot.press("e")
        await fill(pilot, app, {"format": "json"})
        await app.workers.wait_for_complete()
    exported = list(project.exports_dir.glob("reviews-prompt-*.json"))
    assert [p.name for p in exported] == [f"reviews-prompt-{ids[1]}.json"]


@pytest.mark.slow  # every tab through the palette
async def test_the_palette_goes_to_a_tab_for_real_and_keeps_the_header(project, tiny_tm, tmp_path):
    from textual.command import CommandList

    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to results")
        await wait_for(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, limit=50)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "results", limit=50)
        await pilot.pause()
        tabs = app.query_one("#tabs")
        assert tabs.active == "results" and app.focused.id == "evals-table"
        assert tabs.query_one("Tabs").active.endswith("results")  # the underline, not only the pane
        assert app.sub_title == f"project {project.name}"
        app._status("evaluating...")
        await pilot.pause()
        app._status("")  # a finished job gives the header its project name back
        await pilot.pause()
        assert app.sub_title == f"project {project.name}"


@pytest.mark.slow  # a Pilot session of several screens
async def test_the_import_dialog_takes_dev_and_test_files_and_every_option(project, tiny_tm, tmp_path):
    """A task with its own dev and test files (FOLIO-style), an answer type, a template: all from the TUI."""
    from textual.widgets import Select

    from tui.app import InputDialog

    def write(name, rows):
        path = tmp_path / name
        path.write_text("premises,conclusion,label\n" + "".join(f"p{i},c{i},{lab}\n" for i, lab in rows))
        return path

    train = write("folio-train.csv", [(i, ["True", "False", "Uncertain"][i % 3]) for i in range(12)])
    dev = write("folio-dev.csv", [(i, ["True", "False", "Uncertain"][i % 3]) for i in range(100, 106)])
    test = write("folio-test.csv", [(i, ["True", "False", "Uncertain"][i % 3]) for i in range(200, 209)])
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 44)) as pilot:
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, InputDialog)
        assert isinstance(app.screen.query_one("#field-answer_type"), Select)  # closed choices are not free text
        values = {
            "path": str(train),
            "name": "folio",
            "dev_file": str(dev),
            "test_file": str(test),
            "input_template": "{premises}\\nConclusion: {conclusion}",
            "target_column": "label",
        }
        for name, value in values.items():
            app.screen.query_one(f"#field-{name}").value = value
        app.screen.query_one("#field-answer_type").value = "label"
        await pilot.pause()
        preview = str(app.screen.query_one("#preview").render())
        assert "train 12, dev 6, test 9" in preview, preview
        await pilot.click("#ok")
        await app.workers.wait_for_complete()
        await pilot.pause()
    task = project.store.find_task(project.id, "folio")
    assert task is not None and project.store.task_spec(task).labels == ("False", "True", "Uncertain")
    assert [len(project.store.examples(task["id"], s)) for s in ("train", "dev", "test")] == [12, 6, 9]
    first = project.store.examples(task["id"], "test")[0]["input"]
    assert first.startswith("p20") and "\nConclusion: c20" in first  # the template's \n is a line break


@pytest.mark.slow  # a Pilot session of several screens
async def test_the_import_dialog_names_a_bad_format_without_cli_flags(project, tiny_tm, tmp_path):
    path = tmp_path / "reviews.data"
    path.write_text("input,target\na,b\n")
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 44)) as pilot:
        await pilot.press("i")
        app.screen.query_one("#field-path").value = str(path)
        await pilot.pause()
        preview = str(app.screen.query_one("#preview").render())
        assert "cannot tell the format" in preview and "Format in the TUI" in preview
        app.screen.query_one("#field-format").value = "csv"
        await pilot.pause()
        assert "cannot tell the format" not in str(app.screen.query_one("#preview").render())


async def test_the_tasks_tab_shows_a_tasks_examples(project, tiny_tm, tmp_path):
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 40)) as pilot:
        await import_task(pilot, app, write_task(tmp_path))
        await pilot.press("1")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TextDialog)
        text = app.screen.text
        assert "reviews" in text and "negative" in text and "positive" in text
        assert "answer: [b]positive[/b]" in text and "input: review" in text
        assert "train" in text and "dev" in text and "test" in text


async def test_the_tasks_tab_checks_the_answer_format_with_llama_cpp(project, tiny_tm, llama, tmp_path):
    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 40)) as pilot:
        await import_task(pilot, app, write_task(tmp_path))
        await pilot.press("1")
        await pilot.press("k")
        await fill(pilot, app, {"n": "3"})
        await wait_for(pilot, lambda: isinstance(app.screen, TextDialog))
        text = app.screen.text
        assert "What the model sees" in text and text.count("gold: [b]") == 3 and "/3 right with this prompt" in text


async def test_a_baseline_run_from_the_new_run_dialog(project, tiny_tm, llama, tmp_path):
    """The new-run dialog starts any method; a baseline runs on llama.cpp through the same entry point as the CLI."""
    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 44)) as pilot:
        await import_task(pilot, app, write_task(tmp_path, n=20))
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#field-method").value = "initial"
        await pilot.pause()
        assert "llama.cpp" in str(app.screen.query_one("#preview").render())
        await fill(pilot, app, {"train": "4", "dev": "4"})
        await wait_for(pilot, lambda: any(r["status"] == "done" for r in project.store.list_runs(project.id)))
        run = project.store.run(project.store.list_runs(project.id)[0]["id"])
        assert run["method"] == "initial" and run["config"]["baseline"]["n_dev"] == 4
        await wait_for(pilot, lambda: "done" in str(app.query_one("#live-status").render()), limit=100)


@pytest.mark.slow  # every form at two terminal sizes
async def test_form_labels_are_never_cut(project, tiny_tm, tmp_path):
    from textual.widgets import Label

    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 44)) as pilot:
        await import_task(pilot, app, write_task(tmp_path))
        for key in ("n", "i"):
            await pilot.press(key)
            await pilot.pause()
            labels = list(app.screen.query(".field-label").results(Label))
            assert labels
            for label in labels:
                text = str(label.render())
                assert label.size.width >= len(text), text
            await pilot.press("escape")


async def test_a_new_run_starts_from_the_prompt_selected_in_the_library(project, tiny_tm, llama, tmp_path):
    """Issue 28: "optimize this prompt" - the new-run form takes the prompt selected in the Prompts tab (and its
    task); task and model are picked from lists of what the project has, not typed."""
    from textual.widgets import Select

    from tui.app import InputDialog

    backends = tiny_backends(tiny_tm, [])
    backends.load_llama_model = lambda model_id: llama
    app = create_app(project, backends)
    async with app.run_test(size=(110, 44)) as pilot:
        await import_task(pilot, app, write_task(tmp_path, n=20))
        task = project.store.list_tasks(project.id)[0]
        pid = project.add_prompt(task, "Say positive or negative.", origin="manual")
        app.refresh_all()
        await pilot.pause()
        await select_prompt(pilot, app, pid)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InputDialog), limit=50)
        assert isinstance(app.screen.query_one("#field-task"), Select)
        assert isinstance(app.screen.query_one("#field-model"), Select)
        assert app.screen.query_one("#field-task").value == task["name"]
        assert app.screen.query_one("#field-initial").value == "Say positive or negative."
        app.screen.query_one("#field-method").value = "initial"
        await pilot.pause()
        await fill(pilot, app, {"train": "4", "dev": "4"})
        await wait_for(pilot, lambda: any(r["status"] == "done" for r in project.store.list_runs(project.id)))
        run = project.store.run(project.store.list_runs(project.id)[0]["id"])
        assert run["config"]["initial_prompt"] == "Say positive or negative." and run["initial_prompt_id"] == pid


@pytest.mark.slow  # another process writes the history
async def test_every_tab_shows_rows_another_process_adds(project, tiny_tm, tmp_path):
    """A prompt added by the CLI (another connection) while the TUI is open appears in the Prompts tab."""
    from toolkit.project import open_project

    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(110, 44)) as pilot:
        await import_task(pilot, app, write_task(tmp_path))
        await pilot.pause(2.5)
        rows = app.query_one("#prompts-table").row_count
        other = open_project(project.path)  # another process's connection
        task = other.store.list_tasks(other.id)[0]
        other.add_prompt(task, "Added from the command line.", origin="manual")
        other.close()
        await wait_for(pilot, lambda: app.query_one("#prompts-table").row_count == rows + 1, limit=60)


async def test_the_results_tab_shows_the_newest_front_report(project, tiny_tm):
    """`compare --front` writes reports/front-*.json; the Results tab shows the newest one that reads (issue 30)."""
    import json

    from textual.widgets import DataTable, Static

    def row(model, quant, size, acc, front, **kw):
        return {
            "model_id": model, "family_model": "m", "quantization": quant, "prompt_id": 1, "evaluation_id": 1,
            "size_bytes": size, "peak_rss_mb": 200.0, "examples_per_s": 9.5, "accuracy": acc, "ci": [acc - 0.1, acc + 0.1],
            "n": 100, "reference": "m-f16", "fixed": None, "broken": None, "p_value": None, "on_front": front, **kw,
        }  # fmt: skip

    reports = project.path / "reports"
    reports.mkdir()
    (reports / "front-20260101-000000.json").write_text(json.dumps([row("old", "Q8_0", 9e7, 0.5, True)]))
    newest = [
        row("m-q4", "Q4_0", 1e8, 0.40, True, fixed=2, broken=12, p_value=0.01),
        row("m-f16", "F16", 3e8, 0.52, True),
    ]
    (reports / "front-20260102-000000.json").write_text(json.dumps(newest))
    (reports / "front-20260103-000000.json").write_text("{not json")  # a damaged newer one is skipped
    app = create_app(project, tiny_backends(tiny_tm, []))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        table = app.query_one("#front-table", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [r[1:3] for r in rows] == [["m-f16", "F16"], ["m-q4", "Q4_0"]]  # most precise first
        assert rows[0][3:] == ["300 MB", "200 MB", "9.5", "52% (42-62)", "reference", "yes"]
        assert rows[1][7] == "+2/-12 p=0.01 (worse)"
        assert "front-20260102-000000.json" in str(app.query_one("#front-title", Static).render())
