"""The TUI's runs: start, resume and stop an optimization, follow it (or a run of another process) live in the
Live tab. A mixin of the App."""

from __future__ import annotations

import threading

from textual import work
from textual.widgets import DataTable, Static

from toolkit import defaults
from toolkit.baselines import RUN_METHODS
from toolkit.errors import ConfigError, GradpromptError
from toolkit.layout import CHAIN_CAP

from .dialogs import ErrorDialog, InputDialog
from .forms import run_config_from_form
from .host import AppHost
from .messages import RunFinished, StepArrived
from .render import highlight_token, sparkline


class LiveRuns(AppHost):
    """Actions of the App (a mixin: it uses the App's project, store, widgets and workers)."""

    def action_new_run(self) -> None:
        tasks = self.project.store.list_tasks(self.project.id)
        if not tasks:
            self.notify("Import a task first (press i).", severity="warning")
            return
        from toolkit.defaults import DEFAULT_INITIAL_PROMPT
        from toolkit.models import list_models

        # the starting prompt: the one selected in the Prompts tab (its task too), else the paper's; editable
        start, task = DEFAULT_INITIAL_PROMPT, None
        chosen = self.selected("#prompts-table")
        if chosen is not None:
            row = self.project.store.prompt(int(chosen))
            start = row["text"]
            task = next((t["name"] for t in tasks if t["id"] == row["task_id"]), None)
        selected = self.selected("#tasks-table")
        task = task or next((t["name"] for t in tasks if str(t["id"]) == selected), tasks[0]["name"])
        models = [m.id for m in list_models() if m.installed] or [self.project.default_model]
        model = self.project.default_model if self.project.default_model in models else models[0]

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
            plan = plan_estimate(  # the estimator `gradprompt optimize --dry-run` prints, with the same inputs
                get_model(values["model"].strip()),
                inputs,
                config,
                precision="fp32" if precision in ("", "auto") else precision,
                initial_prompt=(values.get("initial") or "").strip(),
            )
            total = plan.total_seconds if not config.time_budget_s else min(plan.total_seconds, config.time_budget_s)
            return (
                f"Plan: {plan.describe_step()}, ~{total / 60:.1f} min in all, "
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
                    ("task", "Task", task, [t["name"] for t in tasks]),
                    ("model", "Model", model, models),
                    ("initial", "Starting prompt", start),
                    ("method", "Method", "greater", list(RUN_METHODS)),
                    ("precision", "Precision (torch)", "auto", ["auto", "fp32", "bf16", "fp16", "8bit", "4bit"]),
                    ("mode", "Mode", "direct", ["direct", "reasoning"]),
                    ("steps", "Steps", str(defaults.STEPS)),
                    ("budget", "Time budget, seconds (optional)", ""),
                    ("train", "Training examples", str(defaults.TRAIN_SIZE)),
                    ("dev", "Dev examples", str(defaults.DEV_SIZE)),
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
        initial = (values.get("initial") or "").strip()
        if "initial" in values and not initial:
            raise ConfigError("The starting prompt is empty: type one, or select one in the Prompts tab.")
        self.run_optimization(
            values["task"].strip(),
            values["model"].strip(),
            values.get("method") or "greater",
            config,
            None,
            values.get("precision") or "auto",
            initial_prompt=initial or None,
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
        self,
        task: str | None,
        model_id: str,
        method: str,
        config,
        resume_id: int | None,
        precision: str = "auto",
        initial_prompt: str | None = None,
    ) -> None:
        """Any method, new or resumed, through the core's one entry point (greater: torch; the rest: llama.cpp)."""
        from toolkit.optimize import is_greater, resume_run, start_run

        stop = self.stop_event

        def load_torch(info, precision, device):  # the run's own models (not the evaluations')
            return self.backends.load_torch_model(info.id, precision)

        def load_llama(info):
            return self.backends.load_llama_model(info.id)

        def on_step(record: dict) -> None:
            self.post_message(StepArrived(resume_id, record))

        try:
            if resume_id is not None:
                result = resume_run(
                    self.project, resume_id, on_step=on_step, stop=stop, load_torch=load_torch, load_llama=load_llama
                )
            else:
                assert task is not None  # a new run is started from a form that names its task
                greater = is_greater(method)
                from toolkit.defaults import DEFAULT_INITIAL_PROMPT

                result = start_run(
                    self.project,
                    task,
                    method,
                    model_id=model_id,
                    initial_prompt=initial_prompt or DEFAULT_INITIAL_PROMPT,
                    greater=config if greater else None,
                    baseline=None if greater else config,
                    precision=precision,
                    on_step=on_step,
                    stop=stop,
                    load_torch=load_torch,
                    load_llama=load_llama,
                )
        except BaseException as exc:
            self.report(exc)
            self.call_from_thread(self.refresh_all)
            return
        self.post_message(RunFinished(result))

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
        """A live step changes the Live tab and its run's step count: only those are refreshed (the whole
        project is refreshed when the run ends)."""
        self._show_step(message.record)
        self.refresh_runs()

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
