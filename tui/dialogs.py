"""The TUI's dialogs and form fields: error, form (free text and closed choices), text and diff screens."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from toolkit.errors import ConfigError, GradpromptError


def whole(values: dict, key: str, label: str, default: int | None = None, minimum: int | None = None) -> int:
    """A whole number from a form field, or a ConfigError that names the field (an empty field: ``default``)."""
    text = str(values.get(key, "")).strip()
    if not text:
        if default is None:
            raise ConfigError(f"{label}: give a whole number.")
        return default
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{label}: {text!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{label}: give {minimum} or more (not {number}).")
    return number


def seconds(values: dict, key: str, label: str) -> float | None:
    text = str(values.get(key, "")).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{label}: {text!r} is not a number of seconds.") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{label}: give a positive number of seconds, or leave it empty.")
    return number


# ---------------------------------------------------------------------------------------------- dialogs


def choice_widget(choices: list[str], value: str, widget_id: str) -> Select:
    """A one-line closed choice (a Select), so a form never takes a free-text value it cannot use."""
    options = [(c, c) for c in choices]
    try:
        return Select(options, value=value, allow_blank=False, id=widget_id, compact=True)
    except TypeError:  # a Textual without compact selects
        return Select(options, value=value, allow_blank=False, id=widget_id)


class ErrorDialog(ModalScreen[None]):
    DEFAULT_CSS = "ErrorDialog { align: center middle; } #box { width: 70; height: auto; border: thick $error; padding: 1 2; background: $surface; }"
    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield Label(f"[b]{self.title_text}[/b]", id="error-title")
            yield Static(self.text, id="error-text")
            yield Button("Close", id="close", variant="error")

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class InputDialog(ModalScreen[dict | None]):
    """A small form: one Input per field. Returns the values, or None when cancelled."""

    DEFAULT_CSS = """
    InputDialog { align: center middle; }
    #form { width: 96; max-width: 100%; height: auto; max-height: 100%; border: thick $accent; padding: 0 1; background: $surface; }
    .field { height: 1; margin: 0; }
    .field Label { width: 24; }
    .field Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    .field Select { width: 1fr; height: 1; }
    #preview { height: auto; max-height: 8; color: $text-muted; }
    #buttons { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[tuple], preview: Callable[[dict], str] | None = None):
        """``fields``: (name, label, value) for free text, (name, label, value, choices) for a closed choice."""
        super().__init__()
        self.form_title, self.fields, self.preview = title, fields, preview

    def compose(self) -> ComposeResult:
        label_width = max(len(label) for _, label, *_ in self.fields) + 2  # every label whole, never cut
        with Vertical(id="form"):
            yield Label(f"[b]{self.form_title}[/b]")
            for name, label, value, *choices in self.fields:
                with Horizontal(classes="field"):
                    text = Label(label, classes="field-label")
                    text.styles.width = label_width
                    yield text
                    if choices:
                        yield choice_widget(choices[0], value, f"field-{name}")
                    else:
                        yield Input(value=value, id=f"field-{name}")
            yield Static("", id="preview")
            with Horizontal(id="buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def values(self) -> dict:
        return {name: str(cast("Input | Select", self.query_one(f"#field-{name}")).value) for name, *_ in self.fields}

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        if self.preview:
            try:
                text = self.preview(self.values())
            except GradpromptError as exc:
                text = f"[red]{escape(str(exc))}[/red]"
            except Exception as exc:  # a preview must never crash the form
                text = f"[red]{escape(f'{type(exc).__name__}: {exc}')}[/red]"
            self.query_one("#preview", Static).update(text)

    @on(Button.Pressed, "#ok")
    @on(Input.Submitted)
    def _ok(self) -> None:
        self.dismiss(self.values())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class TextDialog(ModalScreen[None]):
    DEFAULT_CSS = "TextDialog { align: center middle; } #text-box { width: 90%; height: 80%; border: thick $accent; padding: 1 2; background: $surface; }"
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.box_title, self.text = title, text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="text-box"):
            yield Label(f"[b]{self.box_title}[/b]")
            yield Static(self.text, id="dialog-text")


class DiffScreen(ModalScreen[None]):
    """Two prompt versions side by side, token by token: removed on red, added on green, changed on yellow."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    #diff-box { width: 96%; height: 90%; border: thick $accent; padding: 0 1; background: $surface; }
    #diff-panes { height: 1fr; }
    .diff-pane { width: 1fr; height: 1fr; border: round $primary; padding: 0 1; }
    #diff-stats { height: 1; color: $text-muted; }
    #diff-effect { height: auto; max-height: 6; }
    """
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, a: dict, b: dict, effects: list[str] | None = None) -> None:
        super().__init__()
        self.a, self.b, self.effects = a, b, effects or []

    def compose(self) -> ComposeResult:
        from rich.markup import escape

        from toolkit.diff import diff_stats, side_by_side_text

        left, right = side_by_side_text(self.a["text"], self.b["text"])
        st = diff_stats(self.a["text"], self.b["text"])
        with Vertical(id="diff-box"):
            yield Label(f"[b]Diff: prompt {self.a['id']} -> prompt {self.b['id']}[/b]")
            with Horizontal(id="diff-panes"):
                with VerticalScroll(classes="diff-pane") as pane:
                    pane.border_title = f"{self.a['id']} ({self.a['origin']})"
                    yield Static(left, id="diff-left")
                with VerticalScroll(classes="diff-pane") as pane:
                    pane.border_title = f"{self.b['id']} ({self.b['origin']})"
                    yield Static(right, id="diff-right")
            yield Static(
                f"{st['removed']} token(s) removed, {st['added']} added, {st['unchanged']} unchanged   "
                "[on dark_red] removed [/] [black on green] added [/] [black on yellow] changed [/]   esc closes",
                id="diff-stats",
            )
            if self.effects:
                yield Static("\n".join(escape(line) for line in self.effects), id="diff-effect")
