"""The ``gradprompt`` command line. Renders progress with rich; all work happens in toolkit functions.

This package holds the root group, the console and the helpers every command shares; the commands live in one
module per noun (models, tasks, optimize, evals, prompts, runs), imported at the end so that they register on
the root group. Rendering that the core shares (the demo) lives in :mod:`toolkit.render`, never here."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from .. import __version__
from ..errors import GradpromptError
from ..render import StepPrinter, _pct, _print_eval, eval_progress  # noqa: F401  (shared with the demo)

# Integer options and arguments, each with the range it can take (a number out of range is refused by click
# with the option's name, never passed on to SQLite or torch, whose integers overflow past 2**63 / 2**64).
ID = click.IntRange(1, 2**63 - 1)  # a stored row's id
COUNT = click.IntRange(1, 10**9)  # how many: examples, steps, tokens, rows
SIZE = click.IntRange(0, 10**9)  # how many, where 0 means none or automatic (see the option's help)
SEED = click.IntRange(0, 2**32 - 1)  # a random seed (what every library it reaches accepts)
GPU_LAYERS = click.IntRange(-1, 10**6)  # llama.cpp layers on the GPU; -1: all

# Columns a user copies into the next command (ids, task names) never wrap or get cut with an ellipsis.
HANDLES = ("id", "eval", "evaluation", "#", "step")


def Table(*headers: str, keep: tuple[str, ...] = HANDLES, **kw) -> RichTable:
    table = RichTable(**kw)
    for header in headers:
        table.add_column(header, no_wrap=header in keep)
    return table


PIPE_STOPPED = (
    "Output stopped: the program reading it closed the pipe (as `| head` does). What the command stored is kept."
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """`gradprompt ... | head`: the reader has gone. Rich would exit 1 without a word; say why on stderr and
        exit as a writer the pipe stopped does (141 = 128 + SIGPIPE)."""
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        try:
            sys.stderr.write(PIPE_STOPPED + "\n")
        except OSError:
            pass
        raise SystemExit(141)


class InvocationConsole:
    """A Rich console made afresh for each invocation of the command line (the root group renews it), so
    nothing of one invocation - terminal width, colour, a capture - leaks into the next, and ``COLUMNS`` set for
    one invocation is read then. Everything else is the console's own."""

    def __init__(self, **kw):
        object.__setattr__(self, "_kw", kw)
        object.__setattr__(self, "_console", _Console(**kw))

    def renew(self) -> None:
        object.__setattr__(self, "_console", _Console(**self._kw))

    def __getattr__(self, name):
        return getattr(self._console, name)

    def __setattr__(self, name, value):
        setattr(self._console, name, value)


console = InvocationConsole()


def _print_json_list(rows: list[dict]) -> None:
    """A list command's rows as one JSON array on stdout (no markup, no wrapping), for scripts."""
    click.echo(json.dumps(rows, ensure_ascii=False, default=str))


err_console = InvocationConsole(stderr=True, soft_wrap=True)  # paths in errors must not be broken


class GradpromptGroup(click.Group):
    """Turns domain errors into a readable message on stderr and exit code 1."""

    def parse_args(self, ctx, args):
        # bytes that are not UTF-8 reach Python as lone surrogates ("\udcff"): refused here, by position, before
        # any command stores them (SQLite and the library files hold UTF-8 text only)
        for i, arg in enumerate(args, 1):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError as exc:
                raw = arg.encode("utf-8", "surrogateescape") if "\udc80" <= arg[exc.start] <= "\udcff" else b""
                raise click.UsageError(
                    f"Argument {i} is not valid UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at character "
                    f"{exc.start + 1}): {arg.encode('utf-8', 'backslashreplace').decode()[:80]}. Give text in UTF-8 "
                    "(check the terminal's or the script's encoding).",
                    ctx,
                ) from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GradpromptError as exc:
            err_console.print(f"[bold red]{exc.title}:[/] {escape(str(exc))}")
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/]")
            sys.exit(130)
        except BrokenPipeError:  # a plain write (click.echo) to a pipe whose reader has gone
            console.on_broken_pipe()
        except (MemoryError, OSError, RuntimeError, sqlite3.Error) as exc:
            message = resource_error(exc)
            if message is None and isinstance(exc, OSError) and exc.strerror and exc.filename:
                # a file the command reads or writes: read-only, a folder where a file should be, a name too long
                message = (
                    f"File problem: {exc.strerror}: {exc.filename}. Nothing else was changed; fix the path (or "
                    "its permissions) and run the command again."
                )
            if message is None and isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
                from ..project import history_problem

                obj = ctx.find_object(dict) or {}
                project = obj.get("project")
                path = project.history_path if project is not None else "the history database"
                message = "History database problem: " + history_problem(Path(path), exc)
            if message is None:
                raise
            err_console.print(message, markup=False, highlight=False)
            sys.exit(1)


def resource_error(exc: BaseException) -> str | None:
    """A plain message for running out of memory or disk, or None for any other error."""
    after = (
        "Nothing finished is lost: the history keeps every stored step and result (SQLite rolls back the "
        "unfinished write); `gradprompt runs list` shows an interrupted run and `gradprompt runs resume N` "
        "continues it."
    )
    text = str(exc)
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        return (
            "Out of memory: " + (text or "the model or a batch did not fit") + ". Close other programs, or use "
            "less: --precision 8bit or 4bit (GPU), a smaller --batch-size or --train-size, or a smaller model. " + after
        )
    if (isinstance(exc, sqlite3.Error) and ("full" in text or "disk I/O" in text)) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    ):
        return (
            "Disk full: " + text + ". Free some space on the disk that holds the project (and "
            "GRADPROMPT_HOME, where model weights are cached), then run the command again. " + after
        )
    return None


def _project(ctx):
    from ..project import ENV_PROJECT, find_project_dir, open_project

    obj = ctx.ensure_object(dict)
    if "project" not in obj:
        implicit = not obj.get("project_path") and not os.environ.get(ENV_PROJECT) and find_project_dir() is None
        obj["project"] = open_project(obj.get("project_path"))
        if implicit:  # never silently: say which project a command reads and writes
            err_console.print(
                f"[dim]Using the default project ({obj['project'].path}): no project in this "
                "folder. `gradprompt init DIR` makes one; --project DIR picks one.[/]",
                highlight=False,
            )
    return obj["project"]


@click.group(cls=GradpromptGroup, invoke_without_command=True)
@click.option(
    "--project",
    "project_path",
    type=click.Path(file_okay=False),
    envvar="GRADPROMPT_PROJECT",
    help="Project folder (default: the project containing the current folder, else a default project).",
)
@click.version_option(__version__, prog_name="gradprompt")
@click.pass_context
def cli(ctx, project_path):
    """gradprompt: optimize prompts for small local models, offline.

    Gradient prompt optimization (GReaTer) with torch, evaluation with llama.cpp, history in SQLite.
    With no command in a terminal, opens the terminal UI.

    \b
    Start here:
      gradprompt demo                 the whole path on the embedded default model (a few minutes)
      gradprompt tasks import FILE    add your own task (CSV, TSV, JSONL, JSON)
      gradprompt tasks check TASK     try its answer format on a few examples
      gradprompt optimize TASK        optimize a prompt for it
      gradprompt eval PROMPT_ID       score a prompt with llama.cpp
      gradprompt compare A B          both prompts on torch fp32/8bit/4bit and the GGUF
      gradprompt evals show EVAL_ID   every example's output
    """
    console.renew()
    err_console.renew()
    ctx.ensure_object(dict)["project_path"] = project_path
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            ctx.invoke(tui)
        else:
            click.echo(ctx.get_help())


def main() -> None:
    cli(prog_name="gradprompt")


# ---------------------------------------------------------------------------------------------- init


@cli.command()
@click.argument("path", type=click.Path(file_okay=False), default=".")
@click.option("--name", help="Project name (default: the folder name).")
@click.option("--model", "default_model", help="Default model id for this project.")
def init(path, name, default_model):
    """Create a project in PATH (default: the current folder)."""
    from ..project import init_project

    project = init_project(path, name=name, default_model=default_model)
    console.print(f"Created project [bold]{project.name}[/] in {project.path}")


def _confusion_table(confusion: dict, title: str | None = None, labels=()) -> RichTable:
    """Gold labels by predicted ones; every label of the task is a column, also one the model never answered
    (a column of zeros is what label bias looks like)."""
    predicted = sorted({p for row in confusion.values() for p in row} | set(labels) | set(confusion))
    table = Table("gold \\ predicted", *predicted, title=title)
    for gold, row in sorted(confusion.items()):
        table.add_row(Text(gold), *[str(row.get(p, 0)) for p in predicted])
    return table


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]}


def visible(text: str) -> str:
    """User text for the terminal with its control characters written as escapes (``\\x1b``): an escape
    sequence in a prompt or a note must not recolour, move or clear the user's terminal. Newlines and tabs stay."""
    return str(text).translate(_CONTROL)


def _clip(text: str, n: int) -> Text:
    """User text for a table cell: one line, at most ``n`` characters, never read as Rich markup."""
    text = " ".join(visible(text).split())
    return Text(text if len(text) <= n else text[: n - 3] + "...")


@cli.command()
@click.pass_context
def tui(ctx):
    """Open the terminal UI: projects, tasks, the prompt library, live runs, models and results."""
    # found through the gradprompt.ui entry point, so the core never imports the TUI
    from importlib.metadata import entry_points

    from ..errors import require

    require("textual", what="The terminal UI")
    found = list(entry_points(group="gradprompt.ui"))
    if not found:
        raise GradpromptError(
            "The terminal UI is not part of this version yet; use the commands above.", title="No terminal UI"
        )
    found[0].load()(_project(ctx))


# The commands, one module per noun; importing them registers them on ``cli``.
from . import compare, evals, models, optimize, prompts, runs, tasks  # noqa: E402,F401
