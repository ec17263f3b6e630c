"""What the action mixins (:mod:`.library`, :mod:`.evaluations`, :mod:`.live`) use of the App: Textual's
``App`` and what :class:`tui.app.GradpromptApp` and the other mixins define. For the type checker only: at run
time the mixins derive from ``object`` and the App puts them together."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

    from textual.app import App

    from toolkit.project import Project

    from .messages import Backends

    class AppHost(App):
        project: Project
        backends: Backends
        stop_event: threading.Event | None
        live_scores: list[float]
        live_run_id: int | None
        live_total_steps: int | None
        live_dev: float | None
        watched_run: int | None
        watched_steps: int
        _llama: dict

        # GradpromptApp
        def refresh_all(self) -> None: ...
        def refresh_runs(self, names: dict | None = None) -> None: ...
        def refresh_models(self, force: bool = False) -> None: ...
        def refresh_prompts(self, search: str | None = None) -> None: ...
        def selected_prompt(self) -> str | None: ...
        def selected(self, table_id: str) -> str | None: ...
        def selected_task(self) -> dict | None: ...
        def report(self, exc: BaseException) -> None: ...
        def action_tab(self, tab: str) -> None: ...
        def show_results(self) -> None: ...
        def switch_project(self, project) -> None: ...

        # EvaluationActions, used by the other mixins
        def _llama_model(self, model_id: str): ...
        def _status(self, text: str) -> None: ...

else:
    AppHost = object
