"""gradprompt tasks: import, list, show and check tasks."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.text import Text

from ..errors import GradpromptError
from ..layout import CHAIN_CAP
from . import COUNT, SEED, Table, _clip, _print_json_list, _project, cli, console


@cli.group()
def tasks():
    """Import and inspect tasks (examples with gold answers)."""


def _print_task_summary(task) -> None:
    sizes = task.split_sizes()
    console.print(
        f"Task [bold]{task.name}[/]: {len(task.examples)} examples "
        f"(train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']})"
    )
    labels = task.spec.labels
    shown = ", ".join(labels[:12]) + (f", ... ({len(labels) - 12} more)" if len(labels) > 12 else "")
    console.print(
        f"Answer: {task.spec.kind}" + (f", {len(labels)} labels: {escape(shown)}" if labels else ""), highlight=False
    )
    if task.options.get("decision"):
        console.print(f"[dim]Why: {escape(task.options['decision'])}[/]", highlight=False)
    if task.spec.kind == "label":
        counts = list(task.label_counts().items())
        console.print(
            "Label balance: "
            + escape(", ".join(f"{k} {v}" for k, v in counts[:12]))
            + (f", ... ({len(counts) - 12} more)" if len(counts) > 12 else ""),
            highlight=False,
        )
    console.print(f"Extractor: {task.spec.extractor!r}")
    for warning in task.options.get("warnings", []):
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)


@tasks.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--name", help="Task name (default: from the file name).")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "json"]), help="Default: from the suffix.")
@click.option("--input-column", help="Column with the input (default: input, goal, question, text...).")
@click.option("--target-column", help="Column with the answer (default: final_target, answer, target, label...).")
@click.option("--input-template", help="Combine columns into the input, e.g. '{question}\\nOptions: {choices}'.")
@click.option("--answer-regex", help="Pull the answer out of a longer target, e.g. '####\\s*(.+)$' (group 1).")
@click.option("--answer-type", type=click.Choice(["label", "number", "text"]), help="Default: detected from the data.")
@click.option("--extractor", help="Text that asks for the final answer (default: derived from the answer type).")
@click.option(
    "--max-labels", type=COUNT, default=20, show_default=True, help="Most distinct answers a label set may have."
)
@click.option("--split", default="0.4,0.2,0.4", show_default=True, help="train,dev,test fractions (seeded, stable).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split.")
@click.option("--dev-file", type=click.Path(dir_okay=False), help="Take the dev split from this file.")
@click.option("--test-file", type=click.Path(dir_okay=False), help="Take the test split from this file.")
@click.option("--replace", is_flag=True, help="Overwrite a task of the same name (and its runs).")
@click.option("--dry-run", is_flag=True, help="Check and summarize the file; store nothing.")
@click.pass_context
def tasks_import(
    ctx,
    file,
    name,
    fmt,
    input_column,
    target_column,
    input_template,
    answer_regex,
    answer_type,
    extractor,
    max_labels,
    split,
    seed,
    dev_file,
    test_file,
    replace,
    dry_run,
):
    """Import FILE (CSV, TSV, JSONL or JSON) as a task. Nothing is stored unless the whole file is valid.

    BIG-Bench-Hard files (goal, target, final_target) import with no flags.
    """
    from ..errors import DatasetError
    from ..tasks import ImportOptions, parse_split, read_task_file

    try:
        fractions = parse_split(split)
    except DatasetError:
        raise DatasetError(
            f"--split {split!r}: give three fractions for train, dev and test, e.g. 0.4,0.2,0.4."
        ) from None
    opts = ImportOptions(
        input_column=input_column,
        target_column=target_column,
        input_template=input_template,
        answer_regex=answer_regex,
        answer_kind=answer_type,
        extractor=extractor,
        split=fractions,
        seed=seed,
        max_labels=max_labels,
        format=fmt,
    )
    task = read_task_file(file, name=name, options=opts, dev_file=dev_file, test_file=test_file)
    project = None if dry_run else _project(ctx)
    if project is not None and not replace:  # refuse before the summary, not after it
        project.store.check_new_task_name(project.id, task.name)
    if project is not None:  # stored before anything is printed: output cut short (`| head`) loses nothing
        project.store.add_task(project.id, task, replace=replace)
    _print_task_summary(task)
    if project is None:
        console.print("[dim]Dry run: nothing stored.[/]")
        return
    console.print(f"Stored in project {project.name} ({project.history_path})")
    console.print(
        f"Next: gradprompt tasks check {task.name}   (the answer format on a few examples), then "
        f"gradprompt optimize {task.name} --dry-run",
        highlight=False,
    )


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
@click.pass_context
def tasks_list(ctx, as_json):
    """Tasks in this project."""
    project = _project(ctx)
    if as_json:
        _print_json_list(
            [
                {k: t[k] for k in ("id", "name", "answer_kind", "source")} | {"splits": dict(t["splits"])}
                for t in project.store.list_tasks(project.id)
            ]
        )
        return
    table = Table("id", "name", "answer", "train", "dev", "test", "source", keep=("id", "name"))
    for t in project.store.list_tasks(project.id):
        s = t["splits"]
        table.add_row(
            str(t["id"]),
            t["name"],
            t["answer_kind"],
            str(s.get("train", 0)),
            str(s.get("dev", 0)),
            str(s.get("test", 0)),
            t["source"],
        )
    console.print(table)


@tasks.command("show")
@click.argument("task")
@click.option("--rows", type=COUNT, default=5, show_default=True, help="Examples to show.")
@click.pass_context
def tasks_show(ctx, task, rows):
    """A task's answer spec and first examples."""
    project = _project(ctx)
    row = project.store.task(project.id, task)
    spec = project.store.task_spec(row)
    console.print(f"[bold]{row['name']}[/] ({spec.kind}{': ' + escape(', '.join(spec.labels)) if spec.labels else ''})")
    console.print(f"Extractor: {spec.extractor!r}")
    table = Table("split", "input", "answer")
    for ex in project.store.examples(row["id"], limit=rows):
        table.add_row(ex["split"], _clip(ex["input"], 100), Text(ex["answer"]))
    console.print(table)


@tasks.command("check")
@click.argument("task")
@click.option("--prompt", "prompt_text", help="Prompt to try (default: the optimizer's starting prompt).")
@click.option("--model", "model_id", help="Model id (default: the project's default model).")
@click.option("--n", "n", type=COUNT, default=8, show_default=True, help="Training examples to try.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option(
    "--max-new-tokens", type=COUNT, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens)."
)
@click.pass_context
def tasks_check(ctx, task, prompt_text, model_id, n, mode, max_new_tokens):
    """Try the answer format on a few examples with llama.cpp before a long run: the exact text the model
    sees, its answers, and warnings when nothing parses or one label comes back for everything."""
    from ..defaults import DEFAULT_INITIAL_PROMPT
    from ..evaluate import EvalSettings, check_answer_format
    from ..evaluation import load_model

    project = _project(ctx)
    row = project.store.task(project.id, task)
    spec = project.store.task_spec(row)
    examples = project.store.examples(row["id"], "train", limit=n)
    if not examples:
        raise GradpromptError(f"Task {row['name']!r} has no training examples to try.")
    with console.status(f"llama.cpp: trying {len(examples)} examples..."):
        model = load_model("llamacpp", model_id or project.default_model)
        res = check_answer_format(
            model,
            spec,
            examples,
            prompt_text or DEFAULT_INITIAL_PROMPT,
            EvalSettings(mode=mode, max_new_tokens=max_new_tokens),
        )
    console.print(
        f"[bold]{row['name']}[/]: {spec.kind}"
        f"{' (' + ', '.join(spec.labels) + ')' if spec.labels else ''}; extractor {spec.extractor!r}"
    )
    console.print("[dim]What the model sees for the first example (the answer follows):[/]")
    console.print(res["seen"], highlight=False, markup=False)
    table = Table("input", "gold", "predicted", "ok", "output")
    for r in res["rows"]:
        table.add_row(
            _clip(r["input"], 70),
            Text(r["answer"]),
            Text(str(r["predicted"])),
            "[green]yes[/]" if r["correct"] else "[red]no[/]",
            _clip(r["output"], 70),
        )
    console.print(table)
    console.print(f"{sum(r['correct'] for r in res['rows'])}/{len(res['rows'])} right with this prompt.")
    for w in res["warnings"]:
        console.print(f"[yellow]Warning:[/] {w}", highlight=False)
    if not res["warnings"]:
        console.print("[green]The answers parse as expected.[/]")


@tasks.command("memorization")
@click.argument("task")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--model", "model_id", help="Model id (default: the project's default model).")
@click.option("--limit", type=COUNT, help="Only the first N examples of the split.")
@click.option("--json", "as_json", is_flag=True, help="Print the check as one JSON object (for scripts).")
@click.pass_context
def tasks_memorization(ctx, task, split, model_id, limit, as_json):
    """Does the model already know this split? Each example is cut in half; the model is scored on the true
    second half against another example's (a control). An example is recalled when its second half is
    reproduced token by token, well above the control. Stored; `eval` and `bench` warn on a split that looks
    memorized. A split that passes is not proven unseen (see docs/benchmarks.md)."""
    import json

    from ..evaluation import load_model
    from ..memorization import check_task

    project = _project(ctx)
    row = project.store.task(project.id, task)
    with console.status("llama.cpp: probing continuations...") as status:
        model = load_model("llamacpp", model_id or project.default_model)
        check = check_task(
            project,
            model,
            row,
            split,
            limit=limit,
            progress=lambda done, total: status.update(f"llama.cpp: probing continuations, {done}/{total}"),
        )
    s = check["summary"]
    if as_json:
        click.echo(json.dumps({"id": check["id"], "task": row["name"], "split": split, "model": model.info.id, **s}))
        return
    console.print(
        f"{row['name']} / {split} on {model.info.id}: {s['checked']} of {s['examples']} examples long enough to "
        f"check; {s['recalled']} recalled ({100 * s['share']:.1f}%); median gap "
        + (f"{s['median_gap']:+.2f}" if s["median_gap"] is not None else "-")
        + " nats/token over the control; mean "
        + (f"{s['mean_matched']:.1f}" if s["mean_matched"] is not None else "-")
        + " suffix tokens reproduced before the first miss.",
        markup=False,
        highlight=False,
    )
    if s["flagged"]:
        console.print(
            f"[yellow]Looks memorized:[/] accuracy on this split is likely optimistic (check {check['id']}).",
            highlight=False,
        )
    else:
        console.print(
            f"No sign of memorization (check {check['id']}); this does not prove the model never saw it.",
            markup=False,
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- optimize
