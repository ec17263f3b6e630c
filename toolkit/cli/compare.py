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
@click.option(
    "--front",
    is_flag=True,
    help="Which model and quantization to deploy on: each GGUF's measured file size, peak memory, speed and "
    "accuracy with llama.cpp, the paired test against the model's most precise variant, and the size/accuracy "
    "front (a Markdown table and a PNG chart in reports/).",
)
@click.option(
    "--model",
    "front_models",
    multiple=True,
    help="--front: a model and its quantized variants (repeat; default: every installed model with a GGUF).",
)
@click.option(
    "--quantize",
    "front_quantize",
    help="--front: make these variants of each model first if missing (comma-separated, e.g. Q8_0,Q4_K_M,Q4_0).",
)
@click.pass_context
def compare_cmd(
    ctx, prompt_ids, runtimes, task, split, limit, mode, max_new_tokens, front, front_models, front_quantize
):
    """Score prompts across runtimes and quantizations, and show where an improvement does not survive."""
    from ..compare import compare_prompts
    from ..evaluate import EvalSettings

    project = _project(ctx)
    if front:
        _front(project, list(prompt_ids), front_models, front_quantize, task, split, limit, mode, max_new_tokens)
        return
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


def _front(project, prompt_ids, model_ids, quantize, task, split, limit, mode, max_new_tokens):
    import json
    import time
    from pathlib import Path

    from ..errors import ConfigError
    from ..evaluate import EvalSettings
    from ..front import base_model, markdown, measure_front, write_chart
    from ..models import get_model, list_models

    if model_ids:
        bases = [get_model(m) for m in model_ids]
    else:
        bases = [m for m in list_models() if m.installed and (m.gguf_path_str or m.gguf_package)]
    if quantize:
        from ..quantize import make_variants

        types = [t.strip() for t in quantize.split(",") if t.strip()]
        with console.status("Quantizing..."):
            for b in {base_model(b) for b in bases}:
                make_variants(b, types)
    wanted = {base_model(b) for b in bases}
    variants = [
        m.id for m in list_models() if m.installed and (m.gguf_path_str or m.gguf_package) and base_model(m) in wanted
    ]
    if not variants:
        raise ConfigError("No installed model with a GGUF to compare: add one, or name it with --model.")
    with console.status("Measuring...") as status:
        rows = measure_front(
            project,
            prompt_ids,
            variants,
            task=task,
            split=split,
            limit=limit,
            settings=EvalSettings(mode=mode, max_new_tokens=max_new_tokens),
            progress=lambda text: status.update(text),
        )
    table = markdown(rows, f"Size, memory, speed and accuracy on {split} per (model, quantization)")
    out = Path(project.path) / "reports"
    out.mkdir(exist_ok=True)
    stem = out / f"front-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps([r.to_dict() for r in rows], indent=1), encoding="utf-8")
    chart = write_chart(rows, stem.with_suffix(".png"))
    console.print(table, markup=False, highlight=False, soft_wrap=True)  # a Markdown table: never wrapped
    console.print(
        f"Report: {stem.with_suffix('.md')}\nChart: {chart or 'not written (no matplotlib in this install)'}\n"
        "Front: no other variant is both no larger and no less accurate. Per-example outputs of a row: "
        "gradprompt evals show EVAL_ID.",
        markup=False,
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------- evals
