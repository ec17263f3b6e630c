"""gradprompt prompts, export and history: the prompt library, exports and the history database."""

from __future__ import annotations

import time

import click
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from ..calibration import row_decision
from ..layout import demo_lines
from ..render import _pct
from ..store import row_tags
from . import ID, Table, _clip, _print_json_list, _project, cli, console, err_console, visible

# ---------------------------------------------------------------------------------------------- prompts


@cli.group()
def prompts():
    """The prompt library: every version, its lineage and scores."""


@prompts.command("list")
@click.option("--task", help="Only this task's prompts.")
@click.option("--search", help="Full-text search.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
@click.pass_context
def prompts_list(ctx, task, search, as_json):
    """Prompt versions in this project."""
    project = _project(ctx)
    task_id = project.store.task(project.id, task)["id"] if task else None
    if as_json:
        names = {t["id"]: t["name"] for t in project.store.list_tasks(project.id)}
        _print_json_list(
            [
                {
                    "id": p["id"],
                    "task": names.get(p["task_id"]),
                    "origin": p["origin"],
                    "parent_id": p["parent_id"],
                    "tags": list(row_tags(p)),
                    "best_test_accuracy": project.store.best_test_accuracy(p["id"]),
                    "text": p["text"],
                }
                for p in project.store.list_prompts(project.id, task_id, search)
            ]
        )
        return
    table = Table("id", "task", "origin", "parent", "tags", "best test acc", "text")
    names = {t["id"]: t["name"] for t in project.store.list_tasks(project.id)}
    for p in project.store.list_prompts(project.id, task_id, search):
        table.add_row(
            str(p["id"]),
            names.get(p["task_id"], "-"),
            p["origin"],
            str(p["parent_id"] or ""),
            Text(", ".join(row_tags(p))),
            _pct(project.store.best_test_accuracy(p["id"])),
            _clip(p["text"], 70)
            + (f" [+ {len(demo_lines(p['demos']))} demos]" if p.get("demos") else "")
            + (" [+ calibration]" if p.get("calibration") else ""),
        )
    console.print(table)


@prompts.command("show")
@click.argument("prompt_id", type=ID)
@click.pass_context
def prompts_show(ctx, prompt_id):
    """One prompt, its lineage and its evaluations."""
    project = _project(ctx)
    row = project.store.prompt(prompt_id)
    console.print(f"[bold]Prompt {prompt_id}[/] ({row['origin']})")
    console.print(visible(row["text"]), highlight=False, markup=False)
    decision = row_decision(row)
    if decision:
        console.print(f"Label decision: {decision}", highlight=False, markup=False)
    demos = demo_lines(row.get("demos"))
    if demos:
        console.print(f"Demonstrations ({len(demos)}, shown before the input as earlier chat turns):")
        for line in demos:
            console.print("  " + visible(line), highlight=False, markup=False)
    chain = project.store.lineage(prompt_id)
    if len(chain) > 1:
        console.print("Lineage: " + " <- ".join(f"{p['id']} ({p['origin']})" for p in chain))
    tags = row_tags(row)
    if tags:
        console.print("Tags: " + visible(", ".join(tags)), highlight=False, markup=False)
    if row["note"]:
        console.print("Note: " + visible(row["note"]), highlight=False, markup=False)
    table = Table("eval", "split", "model", "backend", "mode", "accuracy", "95% CI", "n")
    for e in project.store.evaluations(prompt_id=prompt_id):
        table.add_row(
            str(e["id"]),
            e["split"],
            e["model_id"],
            e["backend"],
            e["mode"],
            _pct(e["accuracy"]),
            f"{_pct(e['ci_low'])}-{_pct(e['ci_high'])}",
            str(e["n"]),
        )
    console.print(table)


@prompts.command("diff")
@click.argument("a", type=ID)
@click.argument("b", type=ID)
@click.option("--inline", is_flag=True, help="One inline word diff instead of two token-level columns.")
@click.pass_context
def prompts_diff(ctx, a, b, inline):
    """Diff two prompt versions: side by side, token by token (removed red, added green, changed yellow)."""
    project = _project(ctx)

    from ..diff import diff_markup, diff_stats, side_by_side_text

    ra, rb = project.store.prompt(a), project.store.prompt(b)
    ta, tb = ra["text"], rb["text"]
    if ra["task_id"] != rb["task_id"]:
        names = {t["id"]: t["name"] for t in project.store.list_tasks(project.id)}
        err_console.print(
            f"[yellow]Warning:[/] prompt {a} belongs to task {escape(str(names.get(ra['task_id'], '-')))} "
            f"and prompt {b} to task {escape(str(names.get(rb['task_id'], '-')))}: the diff shows their "
            "text, but scores of different tasks do not compare.",
            highlight=False,
        )
    if inline:
        console.print(f"--- {a}\n+++ {b}")
        console.print(diff_markup(ta, tb), highlight=False)
        return
    left, right = side_by_side_text(ta, tb)
    table = RichTable(f"prompt {a} ({ra['origin']})", f"prompt {b} ({rb['origin']})", show_lines=False, expand=True)
    table.add_row(left, right)
    console.print(table, highlight=False)
    st = diff_stats(ta, tb)
    console.print(f"{st['removed']} token(s) removed, {st['added']} added, {st['unchanged']} unchanged")
    da, db = row_decision(ra), row_decision(rb)
    if da != db:
        console.print(f"Label decision: {a}: {da or 'none'}; {b}: {db or 'none'}", highlight=False, markup=False)
    from ..effects import describe_effect, diff_effect

    effects = diff_effect(project.store, a, b)
    if effects:
        console.print("Effect, where both were evaluated the same way:")
        for row in effects:
            console.print("  " + describe_effect(row), highlight=False)
    else:
        console.print(f"[dim]No evaluation of both prompts with the same settings yet: gradprompt compare {a} {b}[/]")


@prompts.command("tag")
@click.argument("prompt_id", type=ID)
@click.option("--add", "add", multiple=True, help="Tag to add (repeatable).")
@click.option("--remove", "remove", multiple=True, help="Tag to remove (repeatable).")
@click.option("--note", default=None, help="Replace the note ('' clears it).")
@click.pass_context
def prompts_tag(ctx, prompt_id, add, remove, note):
    """Tag a prompt version or change its note (the text itself never changes)."""
    project = _project(ctx)
    row = project.store.update_prompt_meta(prompt_id, add_tags=add, remove_tags=remove, note=note)
    tags = ", ".join(row_tags(row)) or "-"
    console.print(
        f"Prompt {prompt_id}: tags {tags}" + (f"; note: {escape(row['note'])}" if row["note"] else ""), highlight=False
    )


@prompts.command("add")
@click.argument("task")
@click.argument("text")
@click.option("--parent", type=ID, help="The prompt this one was edited from.")
@click.option("--note", default="")
@click.pass_context
def prompts_add(ctx, task, text, parent, note):
    """Add a prompt by hand (a new version; nothing is overwritten)."""
    project = _project(ctx)
    task_row = project.store.task(project.id, task)
    pid = project.add_prompt(task_row, text, origin="edit" if parent else "manual", parent_id=parent, note=note)
    console.print(f"Added prompt {pid}")


@cli.command("export")
@click.argument("prompt_id", type=ID)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "llamacpp", "llm", "promptfoo"]),
    default="text",
    show_default=True,
    help="text; json (full metadata); llamacpp (requests for llama-cpp-python's server and llama-server, and a "
    "llama-completion line, that give gradprompt's answers); llm (a template for `llm -t`: the same user turn, "
    "free reply); promptfoo (a config sending gradprompt's request to llama-cpp-python's server, graded as "
    "gradprompt grades, on the test examples gradprompt evaluated).",
)
@click.option("--model", "model_id", help="Model for the llamacpp bundle (default: the project's default model).")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="A file, or a folder (existing, or ending in /) to write the default file name into. "
    "Default: exports/ in the project.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file given with -o.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="promptfoo: at most this many test cases (default: every test example of the prompt's latest test "
    "evaluation, else the whole test split).",
)
@click.option(
    "--server",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="promptfoo: the address of the llama-cpp-python server the config sends requests to.",
)
@click.pass_context
def export_cmd(ctx, prompt_id, fmt, model_id, output, force, limit, server):
    """Write a prompt to a file you can use elsewhere.

    The llamacpp and promptfoo exports target a llama.cpp server on 127.0.0.1:8080, started with
    `python -m llama_cpp.server --model MODEL.gguf --port 8080` (pip install 'llama-cpp-python[server]'); they
    send the whole rendered text, as gradprompt's evaluation tokenizes it, and give its answers."""
    from ..export import export_prompt

    project = _project(ctx)
    path = export_prompt(project, prompt_id, fmt, output, model_id=model_id, force=force, limit=limit, server=server)
    console.print(f"Wrote {path}")


# ---------------------------------------------------------------------------------------------- runs


# ---------------------------------------------------------------------------------------------- history


@cli.group()
def history():
    """Where the history database is, its check, and backups."""


@history.command("path")
@click.pass_context
def history_path(ctx):
    """Print the path of this project's history database."""
    click.echo(str(_project(ctx).history_path))


@history.command("check")
@click.pass_context
def history_check(ctx):
    """Check the whole history database for damage (SQLite's integrity check); exit 1 if it finds any."""
    project = _project(ctx)  # opening it already ran the quick check
    problems = project.store.integrity_check()
    if problems == ["ok"]:
        console.print(f"{project.history_path}: ok (SQLite integrity check).")
        return
    from ..errors import ProjectError
    from ..project import history_problem
    from ..store import DamagedHistoryError

    raise ProjectError(
        history_problem(project.history_path, DamagedHistoryError("; ".join(problems[:5]))),
        title="History database problem",
    )


@history.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False), required=False)
@click.pass_context
def history_backup(ctx, dest):
    """Copy the history database consistently (safe during a run)."""
    project = _project(ctx)
    dest = dest or str(project.path / f"history-backup-{time.strftime('%Y%m%d-%H%M%S')}.db")
    console.print(f"Backed up to {project.store.backup(dest)}")
