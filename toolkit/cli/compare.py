"""gradprompt compare: prompt versions side by side across runtimes and quantizations."""

from __future__ import annotations

import click
from rich.text import Text

from ..layout import CHAIN_CAP
from ..render import _pct
from . import COUNT, ID, Table, _project, cli, console


@cli.command("compare")
@click.argument("prompt_ids", nargs=-1, type=ID, required=True)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    help="llamacpp:MODEL or torch:MODEL:PRECISION; repeat. Default: llama.cpp GGUF, torch fp32, torch 8bit "
    "and 4bit of the project's default model.",
)
@click.option("--task", help="Task (default: the first prompt's task).")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--limit", type=COUNT, help="Only the first N examples of the split.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option(
    "--max-new-tokens", type=COUNT, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens)."
)
@click.pass_context
def compare_cmd(ctx, prompt_ids, runtimes, task, split, limit, mode, max_new_tokens):
    """Score prompts across runtimes and quantizations, and show where an improvement does not survive."""
    from ..compare import compare_prompts
    from ..evaluate import EvalSettings

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

    from ..models import get_model

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
