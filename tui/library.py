"""The TUI's project, task and prompt-library actions: create and open projects, import and check tasks, show,
add, tag, diff and export prompts, flipped examples and evaluation details. A mixin of the App."""

from __future__ import annotations

from rich.markup import escape
from textual import work
from textual.widgets import Input

from toolkit.calibration import row_decision
from toolkit.errors import ConfigError, GradpromptError
from toolkit.layout import CHAIN_CAP, demo_lines
from toolkit.store import row_tags

from .dialogs import DiffScreen, ErrorDialog, InputDialog, TextDialog, whole
from .forms import IMPORT_FIELDS, read_task_file_from_form
from .host import AppHost
from .render import clip, escape_markup


class LibraryActions(AppHost):
    """Actions of the App (a mixin: it uses the App's project, store, widgets and workers)."""

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
        from toolkit.defaults import DEFAULT_INITIAL_PROMPT

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

    def action_show_evaluation(self) -> None:
        """The selected evaluation: score, settings, confusion and every example's output."""
        from rich.markup import escape

        from toolkit.effects import evaluation_details

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
        decision = row_decision(row)
        if decision:
            lines.append(f"label decision: {escape_markup(decision)}")
        demos = demo_lines(row.get("demos"), 70)
        if demos:
            lines.append(f"demonstrations ({len(demos)}, earlier chat turns):")
            lines += ["  " + escape_markup(line) for line in demos]
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
            from toolkit.effects import describe_effect, diff_effect

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

        from toolkit.export import FORMATS

        self.push_screen(InputDialog(f"Export prompt {prompt_id}", [("format", "Format", "text", list(FORMATS))]), done)

    @work(thread=True, group="export")
    def export_prompt(self, prompt_id: int, fmt: str) -> None:
        from toolkit.export import export_prompt

        try:
            path = export_prompt(self.project, prompt_id, fmt)
        except BaseException as exc:
            self.report(exc)
            return
        self.call_from_thread(self.notify, f"Exported to {path}")
