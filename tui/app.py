"""gradprompt's terminal UI (Textual). Built only on toolkit's public API: no SQL, no model code here.

Every blocking job (model load, optimization, import, export) runs in a thread worker and reports through
Messages; failures land in one handler that shows a readable dialog. ``create_app`` takes the project and
the backends, so tests can pass a fast model. The App composes the tabs, refreshes them and routes keys; its
actions live in mixins by subject: :mod:`.library` (projects, tasks, prompts), :mod:`.evaluations`
(evaluate, compare, models) and :mod:`.live` (runs); dialogs in :mod:`.dialogs`, styles in ``app.tcss``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from toolkit.errors import GradpromptError
from toolkit.store import row_tags

from .dialogs import DiffScreen, ErrorDialog, InputDialog, TextDialog, choice_widget, seconds, whole  # noqa: F401
from .evaluations import EvaluationActions
from .library import LibraryActions
from .live import LiveRuns
from .messages import Backends, JobFailed, RunFinished, StepArrived, default_backends  # noqa: F401
from .render import clip, escape_markup, heatmap, highlight_token, keep_cursor, sparkline  # noqa: F401

HELP = """[b]Keys[/b]
  0-6      switch tab (Projects, Tasks, Prompts, Runs, Live, Models, Results)
  c / o    create a project / open the selected recent project
  f        examples that flipped between two evaluations (Results tab)
  i        import a task from a file (with a preview; dev/test files, answer type, split...)
  k        check the selected task's answer format on a few examples with llama.cpp (Tasks tab)
  n        start an optimization run
  s        stop the live run          r   resume the selected run
  d        diff two prompts (side by side, token level)
  t        tag the selected prompt / edit its note       e   export the selected prompt
  a        add a prompt by hand (a new version; nothing is overwritten)
  v        evaluate the selected prompt with llama.cpp (results in the Results tab)
  x        compare the selected prompt and its origin across runtimes and quantizations
  b        combine several evaluations' answers (Results tab): the model reads them, or a trained reranker
  m        add a model: a local GGUF file or Hugging Face folder (hashed, then verified at every load)
           enter on a found model (Models tab: Ollama, LM Studio, the HF cache) adds it, nothing copied
  enter    on a task: its answer spec, label counts and examples
           on a prompt: its text, lineage and scores per model and quantization
           on an evaluation (Results tab): its settings, confusion and every example's output
  /        search prompts (full text, prefix words); escape leaves the search box
  ctrl+p   command palette (every action above, by name)
  ?        this help                  q   quit
"""


# ---------------------------------------------------------------------------------------------- app


class GradpromptApp(LibraryActions, EvaluationActions, LiveRuns, App):
    TITLE = "gradprompt"
    CSS_PATH = "app.tcss"  # the App's styles
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("i", "import_task", "Import"),
        Binding("n", "new_run", "New run"),
        Binding("s", "stop_run", "Stop"),
        Binding("r", "resume_run", "Resume"),
        Binding("d", "diff", "Diff"),
        Binding("e", "export", "Export"),
        Binding("a", "add_prompt", "Add prompt"),
        Binding("v", "evaluate", "Evaluate"),
        Binding("x", "compare", "Compare", show=False),
        Binding("t", "tag_prompt", "Tag", show=False),
        Binding("m", "add_model", "Add model", show=False),
        Binding("c", "create_project", "New project", show=False),
        Binding("o", "open_project", "Open project", show=False),
        Binding("f", "flipped", "Flipped", show=False),
        Binding("b", "combine", "Combine", show=False),
        Binding("k", "check_task", "Check task", show=False),
        Binding("0", "tab('projects')", "Projects", show=False),
        Binding("1", "tab('tasks')", "Tasks", show=False),
        Binding("2", "tab('prompts')", "Prompts", show=False),
        Binding("3", "tab('runs')", "Runs", show=False),
        Binding("4", "tab('live')", "Live", show=False),
        Binding("5", "tab('models')", "Models", show=False),
        Binding("6", "tab('results')", "Results", show=False),
        Binding("slash", "search", "Search", show=False),
        Binding("escape", "leave_input", "Leave the field", show=False),
    ]
    # the table that holds the keyboard in each tab: switching tabs, closing a dialog or leaving an input puts the
    # focus back there, so the keys always do what the footer says (an input would take them as text)
    MAIN_TABLES = {
        "projects": "#projects-table",
        "tasks": "#tasks-table",
        "prompts": "#prompts-table",
        "runs": "#runs-table",
        "live": "#live-steps",
        "models": "#models-table",
        "results": "#evals-table",
    }

    def __init__(self, project, backends: Backends | None = None):
        super().__init__()
        self.project = project
        self.backends = backends or default_backends()
        self.stop_event: threading.Event | None = None
        self.live_scores: list[float] = []
        self.live_run_id: int | None = None
        self.live_total_steps: int | None = None
        self.live_dev: float | None = None  # the latest dev accuracy of the live run
        self.watched_run: int | None = None  # a run of another process shown in the Live tab
        self.watched_steps = 0
        self._llama: dict = {}  # llama.cpp models loaded for evaluations, by model id

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="tasks", id="tabs"):
            with TabPane("Projects", id="projects"):
                yield Static("", id="project-summary")
                yield DataTable(id="projects-table", cursor_type="row")
            with TabPane("Tasks", id="tasks"):
                yield Static("", id="tasks-empty")
                yield DataTable(id="tasks-table", cursor_type="row")
            with TabPane("Prompts", id="prompts"):
                yield Input(placeholder="search prompts (full text)", id="prompt-search")
                yield DataTable(id="prompts-table", cursor_type="row")
            with TabPane("Runs", id="runs"):
                yield DataTable(id="runs-table", cursor_type="row")
            with TabPane("Live", id="live"):
                yield Static("No run yet. Press n to start one.", id="live-status")
                yield Static("", id="live-prompt")
                yield Static("", id="live-plot")
                yield DataTable(id="live-steps", cursor_type="row")
            with TabPane("Models", id="models"):  # the order of the keys 0-6 and of the help
                yield DataTable(id="models-table", cursor_type="row")
            with TabPane("Results", id="results"):
                yield Static("", id="heatmap")
                yield DataTable(id="evals-table", cursor_type="row")
                yield Static("", id="front-title")
                yield DataTable(id="front-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"project {self.project.name}"
        self.query_one("#tasks-table", DataTable).add_columns("id", "name", "answer", "labels", "train", "dev", "test")
        self.query_one("#prompts-table", DataTable).add_columns(
            "id", "task", "origin", "parent", "tags", "best test", "text"
        )
        self.query_one("#runs-table", DataTable).add_columns("id", "task", "model", "status", "steps", "best prompt")
        self.query_one("#live-steps", DataTable).add_columns(
            "step", "pos", "token", "train acc", "dev acc", "score", "s"
        )
        self.query_one("#models-table", DataTable).add_columns(
            "id", "name", "quant", "file", "size", "sha256", "source", "licence"
        )
        self.query_one("#projects-table", DataTable).add_columns("name", "path")
        self.query_one("#evals-table", DataTable).add_columns(
            "eval", "prompt", "task", "model", "backend", "quant", "split", "accuracy", "95% CI", "n"
        )
        from toolkit.front import FRONT_COLUMNS

        self.query_one("#front-table", DataTable).add_columns(*FRONT_COLUMNS)
        self.refresh_all()
        self.set_interval(1.0, self.poll_live)  # the Live tab follows runs of other processes too
        self._data_version = None
        self.set_interval(2.0, self.poll_history)  # every tab shows rows another process (the CLI) adds

    def get_system_commands(self, screen):
        """The command palette (ctrl+p): Textual's own commands plus every gradprompt action."""
        from functools import partial

        from textual.app import SystemCommand

        yield from super().get_system_commands(screen)
        commands = [
            ("Import a task", "Read a CSV/TSV/JSONL/JSON file into a task, with a preview", self.action_import_task),
            ("Show the selected task", "Its answer spec, label counts and examples", self.action_show_task),
            ("Check the selected task", "Its answer format on a few examples, with llama.cpp", self.action_check_task),
            ("New optimization run", "Start a GReaTer run with a time and memory estimate", self.action_new_run),
            ("Stop the live run", "Stop after the current phase (resume later)", self.action_stop_run),
            ("Resume the selected run", "Continue a stopped run where it stopped", self.action_resume_run),
            ("Diff two prompts", "Side-by-side, token-level diff of two prompt versions", self.action_diff),
            ("Tag the selected prompt", "Edit the tags and note of a prompt version", self.action_tag_prompt),
            ("Add a prompt version", "Write a prompt by hand (a new version)", self.action_add_prompt),
            ("Export the selected prompt", "text, json, llamacpp, llm or promptfoo", self.action_export),
            ("Add a model", "Register a local GGUF file or Hugging Face folder", self.action_add_model),
            (
                "Evaluate the selected prompt",
                "Score it with llama.cpp on a task split (cached per example)",
                self.action_evaluate,
            ),
            (
                "Compare across runtimes",
                "The selected prompt and its origin on torch fp32/8bit/4bit and llama.cpp",
                self.action_compare,
            ),
            ("Flipped examples", "Examples whose result differs between two evaluations", self.action_flipped),
            (
                "Evaluation details",
                "The selected evaluation's settings and per-example outputs (Results tab)",
                self.action_show_evaluation,
            ),
            ("Create a project", "A new project folder", self.action_create_project),
            ("Open the selected recent project", "Switch project", self.action_open_project),
        ]
        for title, help_text, callback in commands:
            yield SystemCommand(title, help_text, callback)
        for tab in ("projects", "tasks", "prompts", "runs", "live", "models", "results"):
            yield SystemCommand(f"Go to {tab.capitalize()}", f"Show the {tab} tab", partial(self.action_tab, tab))

    def poll_history(self) -> None:
        """Refresh every tab when another connection has committed to the history since the last look (SQLite's
        data_version: one cheap query, unchanged by this connection's own writes)."""
        try:
            version = self.project.store.db.execute("PRAGMA data_version").fetchone()[0]
        except Exception:  # a project being switched or closed: the next tick looks again
            return
        if self._data_version is not None and version != self._data_version:
            self.refresh_all()
        self._data_version = version

    def refresh_all(self) -> None:
        store, pid = self.project.store, self.project.id
        tasks = store.list_tasks(pid)
        names = {t["id"]: t["name"] for t in tasks}
        table = self.query_one("#tasks-table", DataTable)
        with keep_cursor(table):
            for t in tasks:
                spec = store.task_spec(t)
                s = t["splits"]
                table.add_row(
                    str(t["id"]),
                    t["name"],
                    spec.kind,
                    clip(", ".join(spec.labels), 30),
                    str(s.get("train", 0)),
                    str(s.get("dev", 0)),
                    str(s.get("test", 0)),
                    key=str(t["id"]),
                )
        empty = self.query_one("#tasks-empty", Static)
        empty.display = not tasks
        empty.update(
            ""
            if tasks
            else f"Project {self.project.name} has no tasks yet. Press i to import one from a CSV, TSV, JSONL or "
            "JSON file (a column of inputs and one of answers), or run `gradprompt demo` in a terminal for "
            "a shipped task and a first optimization. ? lists every key."
        )
        self.refresh_prompts()
        self.refresh_runs(names)
        self.refresh_projects(tasks, store.list_prompts(pid), store.list_runs(pid))
        self.refresh_results(names)
        self.refresh_models()

    def refresh_runs(self, names: dict | None = None) -> None:
        """The Runs tab alone (what a live step changes besides the Live tab: its run's step count)."""
        store, pid = self.project.store, self.project.id
        if names is None:
            names = {t["id"]: t["name"] for t in store.list_tasks(pid)}
        runs = self.query_one("#runs-table", DataTable)
        with keep_cursor(runs):
            for r in store.list_runs(pid):
                runs.add_row(
                    str(r["id"]),
                    names.get(r["task_id"], "-"),
                    r["model_id"],
                    r["status"],
                    str(r["n_steps"]),
                    str(r["best_prompt_id"] or ""),
                    key=str(r["id"]),
                )

    def refresh_models(self, force: bool = False) -> None:
        models = self.query_one("#models-table", DataTable)
        if models.row_count and not force:
            return
        from toolkit.models import list_models

        models.clear()
        registered = list_models()
        for m in registered:
            d = m.to_dict()
            size = f"{d['size_bytes'] / 2**20:.0f} MB" if d["size_bytes"] else "-"
            file = Path(d["gguf_path"]).name if d["gguf_path"] else (m.gguf_file or ("HF folder" if m.hf_path else "-"))
            models.add_row(
                m.id + (" *" if m.default else ""),
                m.name,
                m.quantization or "-",
                file,
                size,
                (m.gguf_sha256 or "-")[:12],
                m.shown_source,
                m.licence,
                key=m.id,
            )
        self._found_models(models, registered)

    def _found_models(self, models: DataTable, registered) -> None:
        """Below the registered models, the ones found on this machine (Ollama, LM Studio, the Hugging Face
        cache) and not added yet: enter on one adds it."""
        from toolkit.discover import find_models

        try:
            found = find_models()
        except (OSError, GradpromptError):  # a store that cannot be read hides nothing else
            return
        known = {m.gguf_path_str for m in registered} | {m.hf_path for m in registered} | {m.origin for m in registered}
        for f in found:
            if not f.supported or f.path in known or f.ref in known:
                continue
            size = f"{f.size_bytes / 2**20:.0f} MB" if f.size_bytes else "-"
            models.add_row(
                f.ref,
                "[dim]found: enter adds it[/dim]",
                f.quantization or "-",
                Path(f.path).name,
                size,
                (f.sha256 or "-")[:12],
                f.source,
                "",
                key="found:" + f.ref,
            )

    def refresh_projects(self, tasks, prompts, runs) -> None:
        from toolkit.project import recent_projects

        self.query_one("#project-summary", Static).update(
            f"[b]{self.project.name}[/b]  {self.project.path}\n{len(tasks)} tasks, {len(prompts)} prompts, "
            f"{len(runs)} runs; default model {self.project.default_model}.  c: new project, o: open the selected one"
        )
        table = self.query_one("#projects-table", DataTable)
        with keep_cursor(table):
            for item in recent_projects():
                table.add_row(item["name"], item["path"], key=item["path"])

    def refresh_results(self, task_names: dict) -> None:
        evals = [e for e in self.project.store.evaluations() if e["status"] == "done"]
        table = self.query_one("#evals-table", DataTable)
        with keep_cursor(table):
            for e in evals:
                table.add_row(
                    str(e["id"]),
                    str(e["prompt_id"]),
                    task_names.get(e["task_id"], "-"),
                    e["model_id"],
                    e["backend"],
                    e["quantization"],
                    e["split"],
                    f"{100 * e['accuracy']:.1f}%",
                    f"{100 * e['ci_low']:.0f}-{100 * e['ci_high']:.0f}%",
                    str(e["n"]),
                    key=str(e["id"]),
                )
        self.query_one("#heatmap", Static).update(heatmap(evals))
        self.refresh_front()

    def refresh_front(self) -> None:
        """The newest `compare --front` report: size, memory, speed and accuracy per (model, quantization)."""
        from toolkit.front import cells, latest_report

        found = latest_report(self.project.path)
        table = self.query_one("#front-table", DataTable)
        title = self.query_one("#front-title", Static)
        table.display = found is not None
        if found is None:
            title.update(
                "Which model and quantization to deploy on: run `gradprompt compare PROMPT_ID --front` (its table "
                "shows here)."
            )
            return
        path, rows = found
        title.update(
            escape_markup(
                f"Model and quantization front ({path.name}): front = no other variant is both no larger and no "
                "less accurate"
            )
        )
        with keep_cursor(table):
            for i, r in enumerate(rows):
                table.add_row(*cells(r), key=str(i))

    def refresh_prompts(self, search: str | None = None) -> None:
        store, pid = self.project.store, self.project.id
        names = {t["id"]: t["name"] for t in store.list_tasks(pid)}
        table = self.query_one("#prompts-table", DataTable)
        if search is None:  # a refresh keeps the search the user typed
            search = self.query_one("#prompt-search", Input).value.strip()
        try:
            rows = store.list_prompts(pid, search=search or None)
        except Exception:  # an incomplete full-text query while typing
            rows = []
        with keep_cursor(table):
            for p in rows:
                best = store.best_test_accuracy(p["id"])
                tags = ", ".join(row_tags(p))
                table.add_row(
                    str(p["id"]),
                    names.get(p["task_id"], "-"),
                    p["origin"],
                    str(p["parent_id"] or ""),
                    clip(tags, 20),
                    "-" if best is None else f"{100 * best:.1f}%",
                    clip(p["text"], 60),
                    key=str(p["id"]),
                )

    def selected_prompt(self) -> str | None:
        """The prompt selected in the Prompts tab, or None (and a hint) when there is none."""
        prompt_id = self.selected("#prompts-table")
        if prompt_id is None:
            self.notify("Select a prompt in the Prompts tab first.", severity="warning")
        return prompt_id

    def selected(self, table_id: str) -> str | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowSelected, "#tasks-table")
    def _task_selected(self) -> None:
        self.action_show_task()

    def selected_task(self) -> dict | None:
        task_id = self.selected("#tasks-table")
        if task_id is None:
            self.notify("Select a task in the Tasks tab first (or import one: i).", severity="warning")
            return None
        return self.project.store.task(self.project.id, int(task_id))

    @on(DataTable.RowSelected, "#prompts-table")
    def _prompt_selected(self) -> None:
        self.action_show_prompt()

    @on(DataTable.RowSelected, "#models-table")
    def _model_selected(self) -> None:
        key = self.selected("#models-table") or ""
        if key.startswith("found:"):
            self.action_add_model(key.removeprefix("found:"))

    @on(DataTable.RowSelected, "#evals-table")
    def _evaluation_selected(self) -> None:
        self.action_show_evaluation()

    @on(Input.Changed, "#prompt-search")
    def _search(self, event: Input.Changed) -> None:
        self.refresh_prompts(event.value.strip())

    def on_job_failed(self, message: JobFailed) -> None:
        self.push_screen(ErrorDialog(message.title, message.text))

    def report(self, exc: BaseException) -> None:
        """Called from worker threads: route any failure to the one error dialog."""
        if isinstance(exc, GradpromptError):
            self.post_message(JobFailed(exc.title, str(exc)))
        else:
            self.post_message(JobFailed("Unexpected error", f"{type(exc).__name__}: {exc}"))

    def action_tab(self, tab: str) -> None:
        """Show a tab with its table focused (a focused widget elsewhere would pull its own tab back)."""
        self.query_one("#tabs", TabbedContent).active = tab
        self.focus_table(tab)

    def focus_table(self, tab: str | None = None) -> None:
        tab = tab or self.query_one("#tabs", TabbedContent).active
        if tab in self.MAIN_TABLES:
            self.query_one(self.MAIN_TABLES[tab], DataTable).focus()

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if (
            not isinstance(self.focused, DataTable)
            or self.focused.id != self.MAIN_TABLES.get(event.pane.id or "", "")[1:]
        ):
            self.focus_table(event.pane.id)

    def action_search(self) -> None:
        self.action_tab("prompts")
        self.query_one("#prompt-search", Input).focus()

    def action_leave_input(self) -> None:
        """Escape in an input (the prompt search) gives the keys back to the tab's table."""
        if isinstance(self.focused, Input):
            self.focus_table()

    def show_results(self) -> None:
        self.action_tab("results")

    def action_help(self) -> None:
        self.push_screen(TextDialog("Help", HELP))

    def switch_project(self, project) -> None:
        if self.stop_event is not None and not self.stop_event.is_set() and self.workers:
            self.notify("A run is going on in this project; stop it first (s).", severity="warning")
            return
        self.project = project
        self.sub_title = f"project {project.name}"
        self.refresh_all()
        self.notify(f"Opened project {project.name}")


def create_app(project, backends: Backends | None = None) -> GradpromptApp:
    return GradpromptApp(project, backends)


def run(project) -> None:
    """Entry point for `gradprompt tui` (registered as the ``gradprompt.ui`` entry point)."""
    create_app(project).run()
