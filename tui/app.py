"""gradprompt's terminal UI (Textual). Built only on toolkit's public API: no SQL, no model code here.

Every blocking job (model load, optimization, import, export) runs in a thread worker and reports through
Messages; failures land in one handler that shows a readable dialog. ``create_app`` takes the project and
the backends, so tests can pass a fast model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from toolkit.errors import ConfigError, GradpromptError
from toolkit.layout import CHAIN_CAP
from toolkit.store import row_tags

from .dialogs import DiffScreen, ErrorDialog, InputDialog, TextDialog, choice_widget, seconds, whole  # noqa: F401
from .forms import IMPORT_FIELDS, read_task_file_from_form, run_config_from_form  # noqa: F401
from .render import clip, escape_markup, heatmap, highlight_token, keep_cursor, sparkline  # noqa: F401


def _load_llama(model_id: str):
    from toolkit.llamacpp import LlamaCppModel
    from toolkit.models import get_model

    return LlamaCppModel(get_model(model_id))


@dataclass
class Backends:
    """What the UI calls for heavy work. ``load_torch_model(model_id, precision)`` returns a loaded torch model;
    ``load_llama_model(model_id)`` a loaded llama.cpp model (for evaluations)."""

    load_torch_model: Callable[[str, str], object]
    load_llama_model: Callable[[str], object] = _load_llama


def default_backends() -> Backends:
    def load(model_id: str, precision: str = "auto"):
        from toolkit.engine.torch_backend import load_torch_model
        from toolkit.models import get_model

        return load_torch_model(get_model(model_id), precision=precision)

    return Backends(load_torch_model=load)


# ---------------------------------------------------------------------------------------------- messages


class StepArrived(Message):
    def __init__(self, run_id: int | None, record: dict) -> None:
        self.run_id, self.record = run_id, record
        super().__init__()


class RunFinished(Message):
    def __init__(self, result) -> None:
        self.result = result
        super().__init__()


class JobFailed(Message):
    def __init__(self, title: str, text: str) -> None:
        self.title, self.text = title, text
        super().__init__()


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
  m        add a model: a local GGUF file or Hugging Face folder (hashed, then verified at every load)
  enter    on a task: its answer spec, label counts and examples
           on a prompt: its text, lineage and scores per model and quantization
           on an evaluation (Results tab): its settings, confusion and every example's output
  /        search prompts (full text, prefix words); escape leaves the search box
  ctrl+p   command palette (every action above, by name)
  ?        this help                  q   quit
"""


# ---------------------------------------------------------------------------------------------- app


class GradpromptApp(App):
    TITLE = "gradprompt"
    CSS = """
    #live-prompt { height: auto; padding: 1; border: round $accent; }
    #live-status { height: auto; padding: 0 1; }
    #tasks-empty { height: auto; padding: 1 2; color: $text-muted; }
    #live-plot { height: auto; padding: 0 1; color: $success; }
    DataTable { height: 1fr; }
    """
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
        self.refresh_all()
        self.set_interval(1.0, self.poll_live)  # the Live tab follows runs of other processes too

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

    # -- data ------------------------------------------------------------------------------------

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
            "the shipped sentiment task and a first optimization. ? lists every key."
        )
        self.refresh_prompts()
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
        self.refresh_projects(tasks, store.list_prompts(pid), store.list_runs(pid))
        self.refresh_results(names)
        self.refresh_models()

    def refresh_models(self, force: bool = False) -> None:
        models = self.query_one("#models-table", DataTable)
        if models.row_count and not force:
            return
        from toolkit.models import list_models

        models.clear()
        for m in list_models():
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
                m.source,
                m.licence,
                key=m.id,
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

    def action_show_task(self) -> None:
        """The selected task: answer spec, label counts per split, and its first examples of each split."""
        from collections import Counter

        task = self.selected_task()
        if task is None:
            return
        store = self.project.store
        spec = store.task_spec(task)
        lines = [
            f"[b]{escape(task['name'])}[/b]  {spec.kind}"
            + (f": {escape(', '.join(spec.labels))}" if spec.labels else ""),
            f"extractor: {escape(repr(spec.extractor))}",
            f"source: {escape(task['source'] or '-')}",
            "",
        ]
        for split in ("train", "dev", "test"):
            examples = store.examples(task["id"], split)
            counts = Counter(e["answer"] for e in examples)
            lines.append(
                f"[b]{split}[/b] {len(examples)} examples"
                + (
                    ": " + escape(", ".join(f"{a} {n}" for a, n in counts.most_common(8)))
                    if spec.kind == "label"
                    else ""
                )
            )
            for e in examples[:5]:
                lines.append(
                    f"  answer: [b]{escape(clip(e['answer'], 40))}[/b]   input: {escape(clip(e['input'], 90))}"
                )
            lines.append("")
        lines.append("k checks the answer format on a few examples with llama.cpp.")
        self.push_screen(TextDialog(f"Task {task['name']}", "\n".join(lines)))

    def action_check_task(self) -> None:
        from toolkit.optimize import DEFAULT_INITIAL_PROMPT

        task = self.selected_task()
        if task is None:
            return

        def done(values: dict | None) -> None:
            if values:
                self.check_task(task["name"], values)

        self.push_screen(
            InputDialog(
                f"Check the answer format of {task['name']}",
                [
                    ("prompt", "Prompt", DEFAULT_INITIAL_PROMPT),
                    ("model", "Model (GGUF)", self.project.default_model),
                    ("n", "Training examples", "8"),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("max_new_tokens", "Reasoning chain cap", str(CHAIN_CAP)),
                ],
            ),
            done,
        )

    @work(thread=True, group="eval", exclusive=True)
    def check_task(self, task_name: str, values: dict) -> None:
        """`gradprompt tasks check` in a worker: what the model sees, its answers, and any warnings."""
        from toolkit.evaluate import EvalSettings, check_answer_format

        store = self.project.store
        try:
            task = store.task(self.project.id, task_name)
            n = whole(values, "n", "Training examples", 8, 1)
            cap = whole(values, "max_new_tokens", "Reasoning chain cap", CHAIN_CAP, 1)
            examples = store.examples(task["id"], "train", limit=n)
            if not examples:
                raise ConfigError(f"Task {task_name!r} has no training examples to try.")
            model_id = values["model"].strip()
            model = self._llama_model(model_id)
            self._status(f"checking {task_name} on {len(examples)} examples...")
            res = check_answer_format(
                model,
                store.task_spec(task),
                examples,
                values["prompt"],
                EvalSettings(mode=values.get("mode") or "direct", max_new_tokens=cap),
            )
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        self._status("")
        right = sum(r["correct"] for r in res["rows"])
        lines = ["[dim]What the model sees for the first example (the answer follows):[/dim]", escape(res["seen"]), ""]
        for r in res["rows"]:
            mark = "[green]ok[/]   " if r["correct"] else "[red]wrong[/]"
            lines.append(
                f"{mark} gold: [b]{escape(r['answer'])}[/b]   predicted: [b]{escape(str(r['predicted']))}[/b]"
                f"   input: {escape(clip(r['input'], 60))}"
            )
        lines += ["", f"{right}/{len(res['rows'])} right with this prompt."]
        lines += [f"[yellow]Warning:[/] {escape(w)}" for w in res["warnings"]] or [
            "[green]The answers parse as expected.[/]"
        ]
        self.call_from_thread(self.push_screen, TextDialog(f"Check of {task_name}", "\n".join(lines)))

    @on(DataTable.RowSelected, "#prompts-table")
    def _prompt_selected(self) -> None:
        self.action_show_prompt()

    @on(DataTable.RowSelected, "#evals-table")
    def _evaluation_selected(self) -> None:
        self.action_show_evaluation()

    def action_show_evaluation(self) -> None:
        """The selected evaluation: score, settings, confusion and every example's output."""
        from rich.markup import escape

        from toolkit.evaluate import evaluation_details

        ev_id = self.selected("#evals-table")
        if ev_id is None:
            self.push_screen(ErrorDialog("No evaluation", "Run `gradprompt eval` or `gradprompt compare` first."))
            return
        d = evaluation_details(self.project.store, int(ev_id))
        e = d["evaluation"]
        lines = [
            f"prompt {e['prompt_id']}: {escape(d['prompt']['text'])}",
            f"{escape(d['task']['name'])} ({e['split']}), {escape(e['model_id'])} via {e['backend']} "
            f"{escape(e['quantization'] or '')}, {e['mode']}; model sha256 {(e['model_sha256'] or '')[:12]}",
            f"accuracy {d['correct']}/{d['scored']}"
            + (
                f" = {100 * e['accuracy']:.1f}% (95% CI {100 * e['ci_low']:.1f}-{100 * e['ci_high']:.1f}%)"
                if e["accuracy"] is not None
                else ""
            ),
            "[dim]" + escape(", ".join(f"{k}={v}" for k, v in sorted(e["settings"].items()))) + "[/dim]",
            "",
        ]
        if d["kind"] == "label":
            for gold, row in sorted(d["confusion"].items()):
                lines.append(f"gold {escape(gold)}: " + ", ".join(f"{escape(p)} {n}" for p, n in sorted(row.items())))
            lines.append("")
        for r in d["examples"]:  # one block per example: the verdict and both answers first, then the input
            mark = "[green]ok[/]   " if r["correct"] else "[red]wrong[/]"
            lines.append(
                f"{mark} example #{r['idx']}   gold: [b]{escape(r['answer'])}[/b]   "
                f"predicted: [b]{escape(str(r['predicted']))}[/b]"
            )
            lines.append(f"       input: {escape(clip(r['input'], 100))}")
            if r["output"] and r["output"] != r["predicted"]:
                lines.append(f"       output: [dim]{escape(clip(r['output'], 200))}[/dim]")
        self.push_screen(TextDialog(f"Evaluation {ev_id}", "\n".join(lines)))

    @on(Input.Changed, "#prompt-search")
    def _search(self, event: Input.Changed) -> None:
        self.refresh_prompts(event.value.strip())

    # -- errors ------------------------------------------------------------------------------------

    def on_job_failed(self, message: JobFailed) -> None:
        self.push_screen(ErrorDialog(message.title, message.text))

    def report(self, exc: BaseException) -> None:
        """Called from worker threads: route any failure to the one error dialog."""
        if isinstance(exc, GradpromptError):
            self.post_message(JobFailed(exc.title, str(exc)))
        else:
            self.post_message(JobFailed("Unexpected error", f"{type(exc).__name__}: {exc}"))

    # -- actions -------------------------------------------------------------------------------------

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
        if not isinstance(self.focused, DataTable) or self.focused.id != self.MAIN_TABLES.get(event.pane.id, "")[1:]:
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

    def action_create_project(self) -> None:
        from toolkit.project import init_project

        def done(values: dict | None) -> None:
            if not values or not values["path"].strip():
                return
            try:
                project = init_project(values["path"].strip(), name=values["name"].strip() or None)
            except GradpromptError as exc:
                self.push_screen(ErrorDialog(exc.title, str(exc)))
                return
            self.switch_project(project)

        self.push_screen(
            InputDialog("Create a project", [("path", "Folder", ""), ("name", "Name (optional)", "")]), done
        )

    def action_open_project(self) -> None:
        from toolkit.project import open_project

        path = self.selected("#projects-table")
        if path is None:
            self.notify("Select a project in the Projects tab first.", severity="warning")
            return
        try:
            self.switch_project(open_project(path))
        except GradpromptError as exc:
            self.push_screen(ErrorDialog(exc.title, str(exc)))

    def action_flipped(self) -> None:
        from rich.markup import escape

        def done(values: dict | None) -> None:
            if not values:
                return
            try:
                rows = self.project.store.flipped(
                    whole(values, "a", "First evaluation"), whole(values, "b", "Second evaluation")
                )
            except (ValueError, ConfigError):
                self.push_screen(ErrorDialog("Cannot compare", "Give two evaluation ids from the Results tab."))
                return
            lines = [f"{len(rows)} examples flipped between evaluation {values['a']} and {values['b']}:", ""]
            for r in rows:
                mark = "[green]fixed[/]" if r["b"]["correct"] else "[red]broken[/]"
                lines.append(
                    f"{mark}  gold {escape(r['example']['answer'])}: {escape(str(r['a']['predicted']))} -> "
                    f"{escape(str(r['b']['predicted']))}  {escape(clip(r['example']['input'], 70))}"
                )
            self.push_screen(TextDialog("Flipped examples", "\n".join(lines)))

        current = self.selected("#evals-table") or ""
        self.push_screen(
            InputDialog("Examples that flipped", [("a", "From evaluation id", current), ("b", "To evaluation id", "")]),
            done,
        )

    def action_import_task(self) -> None:
        from toolkit.tasks import read_rows

        def preview(values: dict) -> str:
            if not values["path"].strip():
                return "Give a CSV, TSV, JSONL or JSON file."
            task = read_task_file_from_form(values)
            columns, _ = read_rows(
                values["path"].strip(), None if values.get("format", "auto") == "auto" else values["format"]
            )
            sizes = task.split_sizes()
            lines = [
                f"columns: {', '.join(columns)}  (input: {task.options['input_column'] or 'template'}, "
                f"answer: {task.options['target_column']})",
                f"{len(task.examples)} examples: train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']}",
                f"answer: {task.spec.kind} "
                + (
                    ", ".join(f"{k} ({v})" for k, v in task.label_counts().items()) if task.spec.kind == "label" else ""
                ),
            ]
            lines += [f"  {e.input[:50]!r} -> {e.answer}" for e in task.examples[:3]]
            return escape_markup("\n".join(lines))

        def done(values: dict | None) -> None:
            if values:
                self.import_task(values)

        self.push_screen(InputDialog("Import a task", IMPORT_FIELDS, preview), done)

    @work(thread=True, exclusive=True, group="import")
    def import_task(self, values: dict) -> None:
        try:
            task = read_task_file_from_form(values)
            self.project.store.add_task(self.project.id, task)
        except BaseException as exc:
            self.report(exc)
            return
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(self.notify, f"Imported task {task.name} ({len(task.examples)} examples)")

    def action_show_prompt(self) -> None:
        prompt_id = self.selected("#prompts-table")
        if prompt_id is None:
            return
        store = self.project.store
        row = store.prompt(int(prompt_id))
        lines = [escape_markup(row["text"]), ""]
        chain = store.lineage(int(prompt_id))
        lines.append(
            "lineage: "
            + " <- ".join(
                f"{p['id']} ({p['origin']}{', run ' + str(p['run_id']) if p['run_id'] else ''})" for p in chain
            )
        )
        tags = row_tags(row)
        if tags:
            lines.append("tags: " + escape_markup(", ".join(tags)))
        if row["note"]:
            lines.append(f"note: {escape_markup(row['note'])}")
        lines += ["", "[b]scores[/b] (split, model, backend, quantization: accuracy, 95% CI, n)"]
        for e in store.evaluations(prompt_id=int(prompt_id)):
            if e["status"] == "done":
                lines.append(
                    f"  {e['split']:<5} {e['model_id']:<20} {e['backend']:<9} {e['quantization']:<6} "
                    f"{100 * e['accuracy']:5.1f}%  {100 * e['ci_low']:.0f}-{100 * e['ci_high']:.0f}%  n={e['n']}"
                )
        self.push_screen(TextDialog(f"Prompt {prompt_id}", "\n".join(lines)))

    def action_add_prompt(self) -> None:
        def done(values: dict | None) -> None:
            if not values:
                return
            try:
                task = self.project.store.task(self.project.id, values["task"])
                parent = int(values["parent"]) if values["parent"].strip() else None
                self.project.add_prompt(task, values["text"], origin="edit" if parent else "manual", parent_id=parent)
            except GradpromptError as exc:
                self.push_screen(ErrorDialog(exc.title, str(exc)))
                return
            self.refresh_all()

        parent = self.selected("#prompts-table") or ""
        text = self.project.store.prompt(int(parent))["text"] if parent else ""
        task = ""
        if parent:
            tid = self.project.store.prompt(int(parent))["task_id"]
            task = str(tid) if tid is not None else ""
        self.push_screen(
            InputDialog(
                "Add a prompt version",
                [("task", "Task", task), ("text", "Text", text), ("parent", "Parent prompt id", parent)],
            ),
            done,
        )

    def action_tag_prompt(self) -> None:
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return
        row = self.project.store.prompt(int(prompt_id))

        def done(values: dict | None) -> None:
            if not values:
                return
            try:
                self.project.store.update_prompt_meta(
                    int(prompt_id), tags=[t for t in values["tags"].split(",") if t.strip()], note=values["note"]
                )
            except GradpromptError as exc:
                self.push_screen(ErrorDialog(exc.title, str(exc)))
                return
            self.refresh_prompts(self.query_one("#prompt-search", Input).value.strip())

        self.push_screen(
            InputDialog(
                f"Tags and note of prompt {prompt_id}",
                [
                    ("tags", "Tags (comma separated)", ", ".join(row_tags(row))),
                    ("note", "Note", row["note"] or ""),
                ],
            ),
            done,
        )

    def action_evaluate(self) -> None:
        """Score the selected prompt with llama.cpp (in a worker; the result lands in the Results tab)."""
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return
        prompt = self.project.store.prompt(int(prompt_id))
        task = next(
            (t["name"] for t in self.project.store.list_tasks(self.project.id) if t["id"] == prompt["task_id"]), ""
        )

        def done(values: dict | None) -> None:
            if values:
                self.evaluate(int(prompt_id), values)

        self.push_screen(
            InputDialog(
                f"Evaluate prompt {prompt_id} with llama.cpp",
                [
                    ("task", "Task", task),
                    ("model", "Model (GGUF)", self.project.default_model),
                    ("split", "Split", "test", ["test", "dev", "train"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("max_new_tokens", "Reasoning chain cap", str(CHAIN_CAP)),
                    ("limit", "Only the first N (blank: all)", ""),
                ],
            ),
            done,
        )

    @staticmethod
    def _eval_form(values: dict) -> tuple[str, str, int, int | None]:
        """(split, mode, chain cap, limit) from an evaluation form, or a ConfigError saying what is wrong."""
        from toolkit.errors import ConfigError

        split, mode = values["split"].strip(), values["mode"].strip()
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"Split {split!r}: use train, dev or test.")
        if mode not in ("direct", "reasoning"):
            raise ConfigError(f"Mode {mode!r}: use direct or reasoning.")
        limit = whole(values, "limit", "Only the first N", 0, 1)
        return split, mode, whole(values, "max_new_tokens", "Reasoning chain cap", CHAIN_CAP, 1), limit or None

    def _llama_model(self, model_id: str):
        """The llama.cpp model of the evaluation workers (group "eval", one at a time), loaded once per id (call
        from a worker thread)."""
        if model_id not in self._llama:
            self.call_from_thread(self.notify, f"Loading {model_id} for llama.cpp...")
            self._llama[model_id] = self.backends.load_llama_model(model_id)
        return self._llama[model_id]

    def _status(self, text: str) -> None:
        """Progress of a worker, in the title bar (callable from the worker's thread)."""
        text = text or f"project {self.project.name}"  # a finished job gives the header its project back
        try:
            self.call_from_thread(setattr, self, "sub_title", text)
        except RuntimeError:  # called on the app's own thread
            self.sub_title = text

    @work(thread=True, group="eval", exclusive=True)
    def evaluate(self, prompt_id: int, values: dict) -> None:
        from toolkit.evaluate import EvalSettings, evaluate_prompt

        store = self.project.store
        try:
            split, mode, cap, limit = self._eval_form(values)
            task_row = store.task(self.project.id, values["task"].strip())
            model_id = values["model"].strip()
            model = self._llama_model(model_id)
            report = evaluate_prompt(
                store,
                model=model,
                task_row=task_row,
                prompt_row=store.prompt(prompt_id),
                split=split,
                limit=limit,
                settings=EvalSettings(mode=mode, max_new_tokens=cap),
                progress=lambda done, total: self._status(f"evaluating prompt {prompt_id}: {done}/{total}"),
            )
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        lo, hi = report.ci
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(
            self.notify,
            f"Prompt {prompt_id}: {100 * report.accuracy:.1f}% "
            f"({report.correct}/{report.n}, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%), "
            f"evaluation {report.evaluation_id}; {report.cached} from the cache. "
            "Enter on it in the Results tab shows every example.",
            timeout=12,
        )

    def action_compare(self) -> None:
        """Score prompts across runtimes and quantizations (the quantization-gap matrix) in a worker."""
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return
        chain = self.project.store.lineage(int(prompt_id))
        ids = [chain[-1]["id"], chain[0]["id"]] if len(chain) > 1 else [chain[0]["id"]]
        m = self.project.default_model
        runtimes = f"torch:{m}:fp32, llamacpp:{m}, torch:{m}:8bit, torch:{m}:4bit"

        def done(values: dict | None) -> None:
            if values:
                self.compare(values)

        self.push_screen(
            InputDialog(
                "Compare prompts across runtimes and quantizations",
                [
                    ("prompts", "Prompt ids", ", ".join(map(str, ids))),
                    ("runtimes", "Runtimes", runtimes),
                    ("split", "Split", "test", ["test", "dev", "train"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("max_new_tokens", "Reasoning chain cap", str(CHAIN_CAP)),
                    ("limit", "Only the first N (blank: all)", ""),
                ],
            ),
            done,
        )

    @work(thread=True, group="eval", exclusive=True)
    def compare(self, values: dict) -> None:
        from toolkit.compare import compare_prompts
        from toolkit.errors import ConfigError
        from toolkit.evaluate import EvalSettings

        def load(kind: str, model_id: str, precision: str):
            if kind == "llamacpp":
                return self.backends.load_llama_model(model_id)
            return self.backends.load_torch_model(model_id, precision)

        try:
            split, mode, cap, limit = self._eval_form(values)
            try:
                prompt_ids = [int(x) for x in values["prompts"].replace(",", " ").split()]
            except ValueError:
                raise ConfigError("Prompt ids must be whole numbers.") from None
            runtimes = [r.strip() for r in values["runtimes"].split(",") if r.strip()]
            if not prompt_ids or not runtimes:
                raise ConfigError("Give at least one prompt id and one runtime.")
            res = compare_prompts(
                self.project,
                prompt_ids,
                runtimes,
                split=split,
                limit=limit,
                settings=EvalSettings(mode=mode, max_new_tokens=cap),
                load=load,
                progress=lambda text: self._status(f"compare: {text}"),
            )
        except BaseException as exc:
            self._status("")
            self.report(exc)
            return
        lost = [f"prompt {pid} on {rt}" for pid, rt in res.lost_improvements()]
        self._status("")
        self.call_from_thread(self.refresh_all)
        self.call_from_thread(self.show_results)
        n = len(res.cells)
        text = (
            (
                f"{n} cells scored. The gain over prompt {prompt_ids[0]} on {runtimes[0]} does not survive: "
                + "; ".join(lost)
            )
            if lost
            else f"{n} cells scored; see the heat map."
        )
        self.call_from_thread(self.notify, text, severity="warning" if lost else "information", timeout=15)

    def action_add_model(self) -> None:
        def done(values: dict | None) -> None:
            if values:
                self.add_model(values)

        self.push_screen(
            InputDialog(
                "Add a local model (GGUF file and/or Hugging Face folder)",
                [
                    ("id", "Model id", ""),
                    ("gguf", "GGUF file", ""),
                    ("hf", "HF folder", ""),
                    ("name", "Name", ""),
                    ("licence", "Licence", ""),
                    ("template", "Chat template file", ""),
                ],
            ),
            done,
        )

    @work(thread=True, group="models")
    def add_model(self, values: dict) -> None:
        from toolkit.errors import ConfigError
        from toolkit.models import add_model, gguf_chat_template

        try:  # hashing a large GGUF takes a while: off the UI thread
            template = None
            if values.get("template", "").strip():
                try:
                    template = Path(values["template"].strip()).expanduser().read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(f"Cannot read the chat template file: {exc}") from None
            gguf = values["gguf"].strip() or None
            info = add_model(
                values["id"].strip(),
                gguf=gguf,
                hf=values["hf"].strip() or None,
                name=values["name"].strip() or None,
                licence=values["licence"].strip(),
                chat_template=template,
            )
            bare = gguf is not None and template is None and not gguf_chat_template(gguf)
        except BaseException as exc:
            self.report(exc)
            return
        self.call_from_thread(self.refresh_models, True)
        self.call_from_thread(self.notify, f"Added model {info.id} ({info.source})")
        if bare:
            self.call_from_thread(
                self.notify,
                "That GGUF carries no chat template: prompts are laid out as plain "
                "'User: ... Assistant:' text. Add it again with a chat template file if the model "
                "expects its own turn format.",
                severity="warning",
                timeout=15,
            )

    def action_diff(self) -> None:
        def done(values: dict | None) -> None:
            if not values:
                return
            try:
                a = self.project.store.prompt(whole(values, "a", "First prompt id"))
                b = self.project.store.prompt(whole(values, "b", "Second prompt id"))
            except (GradpromptError, ValueError) as exc:
                self.push_screen(ErrorDialog("Cannot diff", str(exc)))
                return
            from toolkit.evaluate import describe_effect, diff_effect

            effects = [describe_effect(row) for row in diff_effect(self.project.store, a["id"], b["id"])]
            self.push_screen(DiffScreen(a, b, effects))

        current = self.selected("#prompts-table") or ""
        self.push_screen(
            InputDialog("Diff two prompts", [("a", "From prompt id", current), ("b", "To prompt id", "")]), done
        )

    def action_export(self) -> None:
        prompt_id = self.selected_prompt()
        if prompt_id is None:
            return

        def done(values: dict | None) -> None:
            if values:
                self.export_prompt(int(prompt_id), values["format"].strip() or "text")

        self.push_screen(InputDialog(f"Export prompt {prompt_id}", [("format", "Format", "text")]), done)

    @work(thread=True, group="export")
    def export_prompt(self, prompt_id: int, fmt: str) -> None:
        from toolkit.export import export_prompt

        try:
            path = export_prompt(self.project, prompt_id, fmt)
        except BaseException as exc:
            self.report(exc)
            return
        self.call_from_thread(self.notify, f"Exported to {path}")

    def action_new_run(self) -> None:
        tasks = self.project.store.list_tasks(self.project.id)
        if not tasks:
            self.notify("Import a task first (press i).", severity="warning")
            return
        selected = self.selected("#tasks-table")
        task = next((t["name"] for t in tasks if str(t["id"]) == selected), tasks[0]["name"])

        def estimate(values: dict) -> str:
            from toolkit.models import get_model
            from toolkit.plan import estimate as plan_estimate

            kind, config = run_config_from_form(values)
            task_row = self.project.store.task(self.project.id, values["task"].strip())
            if kind == "baseline":
                return (
                    f"Plan: {config.method} writes and scores prompts with llama.cpp for at most "
                    f"{config.budget_s:.0f} s ({config.max_steps} rounds), then compares the best on "
                    f"{config.n_dev} dev examples."
                )
            inputs = [e["input"] for e in self.project.store.examples(task_row["id"], "train", limit=config.n_train)]
            precision = values.get("precision", "auto").strip()
            plan = plan_estimate(
                get_model(values["model"].strip()),
                inputs,
                config,
                precision="fp32" if precision in ("", "auto") else precision,
            )
            total = plan.total_seconds if not config.time_budget_s else min(plan.total_seconds, config.time_budget_s)
            return (
                f"Plan: ~{plan.seconds_per_step:.0f} s per step, ~{total / 60:.1f} min in all, "
                f"peak memory ~{plan.peak_memory_mb / 1024:.1f} GB ({plan.params_millions:.0f}M parameters, "
                f"{plan.n_train} examples of ~{plan.mean_tokens:.0f} tokens)"
            )

        def done(values: dict | None) -> None:
            if values:
                try:
                    self.start_run(values)
                except (GradpromptError, ValueError) as exc:
                    self.push_screen(ErrorDialog("Cannot start the run", str(exc)))

        self.push_screen(
            InputDialog(
                "New optimization run",
                [
                    ("task", "Task", task),
                    ("model", "Model", self.project.default_model),
                    ("method", "Method", "greater", ["greater", "ape", "opro", "cot", "initial"]),
                    ("precision", "Precision (torch)", "auto", ["auto", "fp32", "bf16", "fp16", "8bit", "4bit"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("steps", "Steps", "20"),
                    ("budget", "Time budget, seconds (optional)", ""),
                    ("train", "Training examples", "16"),
                    ("dev", "Dev examples", "32"),
                    ("chain_cap", "Reasoning chain cap (tokens)", str(CHAIN_CAP)),
                    ("dev_every", "Dev score every N steps (0: at the end)", "0"),
                    ("seed", "Seed", "0"),
                ],
                estimate,
            ),
            done,
        )

    def start_run(self, values: dict) -> None:
        kind, config = run_config_from_form(values)
        self.project.store.task(self.project.id, values["task"].strip())  # fail early on a bad name
        self.live_total_steps = config.steps if kind == "greater" else config.max_steps
        self.live_scores = []
        self.live_dev = None
        self.query_one("#live-steps", DataTable).clear()
        self.action_tab("live")
        self.query_one("#live-status", Static).update("Loading the model...")
        self.stop_event = threading.Event()
        self.run_optimization(
            values["task"].strip(),
            values["model"].strip(),
            values.get("method") or "greater",
            config,
            None,
            values.get("precision") or "auto",
        )

    def action_resume_run(self) -> None:
        run_id = self.selected("#runs-table")
        if run_id is None:
            self.notify("Select a run in the Runs tab first.", severity="warning")
            return
        try:  # a finished run, or one another process is running, is refused with the reason
            run = self.project.store.check_resumable(int(run_id))
        except ConfigError as exc:
            self.notify(str(exc), severity="warning")
            return
        past = self.project.store.steps(int(run_id))
        self.live_scores, self.live_dev = [], None
        settings = run["config"].get("greater") or run["config"].get("baseline") or {}
        self.live_total_steps = settings.get("steps") or settings.get("max_steps")
        self.query_one("#live-steps", DataTable).clear()
        for record in past:  # the whole run, not only the steps still to come
            self._show_step(record)
        self.action_tab("live")
        self.stop_event = threading.Event()
        self.run_optimization(
            None, run["model_id"], run["method"], None, int(run_id), run["config"].get("precision", "auto")
        )

    def action_stop_run(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
            self.query_one("#live-status", Static).update("Stopping after the current phase...")

    @work(thread=True, exclusive=True, group="run")
    def run_optimization(
        self, task: str | None, model_id: str, method: str, config, resume_id: int | None, precision: str = "auto"
    ) -> None:
        """Any method, new or resumed, through the core's one entry point (greater: torch; the rest: llama.cpp)."""
        from toolkit.optimize import is_greater, resume_run, start_run

        stop = self.stop_event
        loaders = {
            "load_torch": lambda info, precision, device: self.backends.load_torch_model(info.id, precision),
            "load_llama": lambda info: self.backends.load_llama_model(info.id),
        }  # its own (not the eval's)

        def on_step(record: dict) -> None:
            self.post_message(StepArrived(resume_id, record))

        try:
            if resume_id is not None:
                result = resume_run(self.project, resume_id, on_step=on_step, stop=stop, **loaders)
            else:
                greater = is_greater(method)
                result = start_run(
                    self.project,
                    task,
                    method,
                    model_id=model_id,
                    greater=config if greater else None,
                    baseline=None if greater else config,
                    precision=precision,
                    on_step=on_step,
                    stop=stop,
                    **loaders,
                )
        except BaseException as exc:
            self.report(exc)
            self.call_from_thread(self.refresh_all)
            return
        self.post_message(RunFinished(result))

    # -- the Live tab follows any running run of the project (started here, in a terminal, or resumed) ----------

    def poll_live(self) -> None:
        """Every second: when no run of this app is going, show the newest running run of the project, whole,
        and add its steps as another process stores them."""
        if self._own_run_active():
            return
        store = self.project.store
        try:
            runs = store.list_runs(self.project.id)
        except Exception:  # the database is busy or being replaced: try again next tick
            return
        watched = next((r for r in runs if r["id"] == self.watched_run), None)
        running = [r for r in runs if r["status"] == "running"]
        if watched is not None and watched["status"] != "running":
            self.query_one("#live-status", Static).update(
                f"Run {watched['id']} ({watched['method']}) {watched['status']} after {watched['n_steps']} steps."
                + (
                    " r in the Runs tab resumes it."
                    if watched["status"] in ("interrupted", "stopped", "failed")
                    else ""
                )
            )
            self.watched_run = None
            self.refresh_all()
        if not running:
            return
        run = running[-1]
        if run["id"] != self.watched_run:
            self.watched_run, self.watched_steps = run["id"], 0
            self.live_scores, self.live_dev = [], None
            settings = store.run(run["id"])["config"]
            settings = settings.get("greater") or settings.get("baseline") or {}
            self.live_total_steps = settings.get("steps") or settings.get("max_steps")
            self.query_one("#live-steps", DataTable).clear()
        steps = store.steps(run["id"])
        for record in steps[self.watched_steps :]:
            self._show_step(record, run_id=run["id"])
        self.watched_steps = len(steps)

    def _own_run_active(self) -> bool:
        return any(w.group == "run" and not w.is_finished for w in self.workers)

    def on_step_arrived(self, message: StepArrived) -> None:
        self._show_step(message.record)
        self.refresh_all()

    def _show_step(self, r: dict, run_id: int | None = None) -> None:
        self.live_scores.append(r["train_score"])
        if r.get("dev_accuracy") is not None:
            self.live_dev = r["dev_accuracy"]
        step_s = sum(r["timings"].values())
        total = self.live_total_steps or (r["step"] + 1)
        eta = max(0, total - r["step"] - 1) * step_s
        dev = "" if self.live_dev is None else f"dev acc {100 * self.live_dev:.1f}%  "
        status = (
            (f"run {run_id} (watching)  " if run_id is not None else "")
            + f"step {r['step'] + 1}/{total}  position {r['position']}  train acc {100 * r['train_accuracy']:.1f}%  "
            f"{dev}score {r['train_score']:.3f}  step {step_s:.1f}s  ETA {eta:.0f}s\n"
            + "  ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items())
        )
        self.query_one("#live-status", Static).update(status)
        self.query_one("#live-prompt", Static).update(
            highlight_token(r["prompt_after"], r["chosen_token"], r["accepted"])
        )
        self.query_one("#live-plot", Static).update("score " + sparkline(self.live_scores))
        self.query_one("#live-steps", DataTable).add_row(
            str(r["step"] + 1),
            str(r["position"]),
            repr(r["chosen_token"]),
            f"{100 * r['train_accuracy']:.1f}%",
            "" if r.get("dev_accuracy") is None else f"{100 * r['dev_accuracy']:.1f}%",
            f"{r['train_score']:.3f}",
            f"{sum(r['timings'].values()):.1f}",
        )

    def on_run_finished(self, message: RunFinished) -> None:
        res = message.result
        text = f"Run {res.run_id} {res.status} after {res.steps} steps."
        if res.status == "done":
            text += f" Prompt {res.prompt_id}; dev accuracy " + (
                "-" if res.dev_accuracy is None else f"{100 * res.dev_accuracy:.1f}%"
            )
        self.query_one("#live-status", Static).update(text)
        self.refresh_all()
        self.notify(text)


def create_app(project, backends: Backends | None = None) -> GradpromptApp:
    return GradpromptApp(project, backends)


def run(project) -> None:
    """Entry point for `gradprompt tui` (registered as the ``gradprompt.ui`` entry point)."""
    create_app(project).run()
