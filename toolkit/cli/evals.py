"""gradprompt eval, compare and evals: scoring prompts and reading stored evaluations."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.text import Text

from ..calibration import DEFAULT_ROWS
from ..layout import CHAIN_CAP
from ..render import _pct, _print_eval, eval_progress
from . import COUNT, GPU_LAYERS, ID, SIZE, Table, _clip, _confusion_table, _print_json_list, _project, cli, console
from .optimize import _load_torch


@cli.command("eval")
@click.argument("prompt_ids", nargs=-1, type=ID, required=True)
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
    type=GPU_LAYERS,
    default=None,
    help="llama.cpp layers offloaded to a GPU (default: all when llama.cpp was built with GPU support, "
    "else 0; -1 means all).",
)
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option(
    "--max-new-tokens", type=COUNT, default=CHAIN_CAP, show_default=True, help="Reasoning chain cap (tokens)."
)
@click.option("--limit", type=COUNT, help="Only the first N examples of the split.")
@click.option(
    "--logic-of-thought",
    is_flag=True,
    help="Logic-of-Thought: append statements derived by rules (contraposition, transitivity) from the input's "
    "premises (truth-teller puzzles, categorical arguments, if-then sentences); no extra model call. Stored as "
    "mode 'direct+logic-of-thought'; compare it with the plain evaluation using `gradprompt evals flipped A B`.",
)
@click.option(
    "--second-attempt",
    is_flag=True,
    help="Second attempt (SCoRe's prompting form): after its answer the model sees the question, its answer and a "
    "correction instruction, and answers again. Reports both attempts, the wrong->right and right->wrong flips, a "
    "paired test and the calls (2 per input). Stored as mode 'direct+second-attempt'; the first attempt is the "
    "plain evaluation.",
)
@click.option(
    "--correction",
    default=None,
    help="The correction instruction of --second-attempt (default: SCoRe's; kept in the prompt library, tagged "
    "'correction').",
)
@click.option(
    "--calibrate",
    type=click.Choice(["none", "contextual", "batch"]),
    default=None,
    help="Label tasks: correct the model's bias towards some labels before scoring. batch: the label prior from "
    "the model's answers on training inputs; contextual: from content-free inputs ('N/A', '', '[MASK]'). Fitted "
    "on training rows only, stored as a new prompt version (origin 'calibrated') that every later evaluation and "
    "export of it uses; none: score the uncalibrated version.",
)
@click.option(
    "--calibrate-rows",
    type=COUNT,
    default=DEFAULT_ROWS,
    show_default=True,
    help="Training rows the batch calibration is fitted on (the first N of the train split).",
)
@click.option("--show-confusion", is_flag=True, help="Print the per-label confusion table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per prompt (JSON Lines) for scripts.")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Split the evaluation into shards scored on a Ray cluster (llama.cpp): auto (the cluster this machine "
    "belongs to), local (a one-machine cluster, to try it), or the head node's HOST:PORT. Answers are stored here "
    "as each shard finishes. Needs `pip install 'gradprompt[cluster]'` and the model on every worker.",
)
@click.option(
    "--shard-size",
    type=SIZE,
    default=0,
    show_default=True,
    help="With --ray: examples per shard (0: about four shards per CPU of the cluster).",
)
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
    second_attempt,
    correction,
    calibrate,
    calibrate_rows,
    show_confusion,
    as_json,
    ray_address,
    shard_size,
):
    """Score prompts on a task split (llama.cpp on the CPU by default). Results are cached per example, so a
    repeated or interrupted evaluation only runs what it has not seen."""
    from ..evaluate import EvalSettings
    from ..evaluation import evaluate_prompt, load_model
    from ..models import get_model

    project = _project(ctx)
    info = get_model(model_id or project.default_model)
    settings = EvalSettings(mode=mode, max_new_tokens=max_new_tokens)
    if logic_of_thought:
        from ..logic import RULES_VERSION

        if backend != "llamacpp":
            raise click.UsageError("--logic-of-thought runs on the llama.cpp backend (leave out --backend torch).")
        settings = EvalSettings(
            mode=mode, max_new_tokens=max_new_tokens, strategy="logic-of-thought", strategy_args=RULES_VERSION
        )
    if (second_attempt or correction) and (backend != "llamacpp" or logic_of_thought):
        raise click.UsageError(
            "--second-attempt runs on the llama.cpp backend, on its own (leave out --backend torch and "
            "--logic-of-thought)."
        )
    if correction is not None and not second_attempt:
        raise click.UsageError("--correction is the instruction of --second-attempt; add --second-attempt.")
    if calibrate not in (None, "none") and (backend != "llamacpp" or logic_of_thought or second_attempt):
        raise click.UsageError(
            "--calibrate runs on the llama.cpp backend, on its own (leave out --backend torch, --logic-of-thought "
            "and --second-attempt)."
        )
    if ray_address is not None and (backend != "llamacpp" or logic_of_thought or second_attempt):
        raise click.UsageError(
            "--ray shards plain llama.cpp evaluations (leave out --backend torch, --logic-of-thought and "
            "--second-attempt, or --ray)."
        )
    if shard_size and ray_address is None:
        raise click.UsageError("--shard-size sets the shards of --ray; add --ray ADDRESS.")
    if backend == "torch":
        model = _load_torch(info, precision)  # with a spinner: minutes on a loaded machine
    else:
        model = load_model("llamacpp", info, gpu_layers=gpu_layers)
    for pid in prompt_ids:
        prompt_row = project.store.prompt(pid)
        task_row = project.store.task(project.id, task or prompt_row["task_id"])
        if calibrate is not None:
            from ..calibrate import calibrated_version

            with console.status(f"Calibrating prompt {pid} on training rows...") as status:
                prompt_row = calibrated_version(
                    project,
                    model,
                    task_row,
                    prompt_row,
                    calibrate,
                    rows=calibrate_rows,
                    settings=settings,
                    progress=eval_progress(status, f"Calibrating prompt {pid}"),
                )
            if not as_json:
                console.print(
                    f"Prompt {pid} {'calibrated' if prompt_row.get('calibration') else 'uncalibrated'}: version "
                    f"{prompt_row['id']}"
                    + (f" ({escape(prompt_row['note'])})" if prompt_row.get("calibration") else ""),
                    highlight=False,
                )
            pid = prompt_row["id"]
        if second_attempt:
            _second_attempt(project, model, info, task_row, prompt_row, split, settings, limit, correction, as_json)
            continue
        with console.status(f"Evaluating prompt {pid}...") as status:
            progress = eval_progress(status, f"Evaluating prompt {pid}")
            report = evaluate_prompt(
                project.store,
                model=model,
                task_row=task_row,
                prompt_row=prompt_row,
                split=split,
                settings=settings,
                limit=limit,
                progress=progress,
                cluster=ray_address,
                shard_size=shard_size,
            )
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "evaluation_id": report.evaluation_id,
                        "prompt_id": pid,
                        "prompt": report.prompt,
                        "calibration": json.loads(prompt_row["calibration"]) if prompt_row.get("calibration") else None,
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
        from ..memorization import warning_for

        memorized = warning_for(project.store, task_row["id"], split, info.id)
        if memorized:
            console.print(f"[yellow]{escape(memorized)}[/]", highlight=False)
        if show_confusion and report.confusion:
            console.print(_confusion_table(report.confusion, labels=project.store.task_spec(task_row).labels))


@cli.group()
def evals():
    """Stored evaluations: every score with its model, settings, timings and per-example outputs."""


@evals.command("list")
@click.option("--prompt", "prompt_id", type=ID, help="Only this prompt's evaluations.")
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
@click.argument("evaluation_id", type=ID)
@click.option("--errors", is_flag=True, help="Only the examples the prompt got wrong.")
@click.option("--limit", type=COUNT, help="Show at most N examples.")
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object (full texts) for scripts.")
@click.pass_context
def evals_show(ctx, evaluation_id, errors, limit, as_json):
    """One evaluation: its score, settings, per-label confusion and per-example outputs."""
    from ..effects import evaluation_details
    from ..stats import wilson_interval

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
        labels = project.store.task_spec(d["task"]).labels
        console.print(_confusion_table(d["confusion"], title="Per-label confusion", labels=labels))
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
@click.argument("a", type=ID)
@click.argument("b", type=ID)
@click.pass_context
def evals_flipped(ctx, a, b):
    """Examples scored in both evaluations A and B whose result differs (fixed or broken going from A to B)."""
    project = _project(ctx)
    project.store.evaluation(a), project.store.evaluation(b)  # clear errors for unknown ids
    rows = project.store.flipped(a, b)
    fixed = sum(1 for r in rows if r["b"]["correct"])
    from ..stats import mcnemar_two_sided

    p = mcnemar_two_sided(fixed, len(rows) - fixed)
    verdict = "a significant difference" if p < 0.05 else "no significant difference (treat it as none)"
    console.print(
        f"{len(rows)} example(s) differ between evaluation {a} and {b}: {fixed} fixed, {len(rows) - fixed} broken "
        f"(exact two-sided McNemar p = {p:.3g}: {verdict})"
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
@click.argument("evaluation_ids", nargs=-1, type=ID, required=True)
@click.pass_context
def evals_vote(ctx, evaluation_ids):
    """Majority vote of several evaluations' answers (prompt versions or runtimes) against each alone, on the
    examples all of them scored - a combiner measured on the same data, from the cache, no model calls."""
    from ..effects import vote

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


@evals.command("combine")
@click.argument("evaluation_ids", nargs=-1, type=ID, required=True)
@click.option(
    "--instruction",
    default=None,
    help="The corrector's instruction (default: LMCor's prompting form; kept in the library, tagged 'combiner').",
)
@click.option(
    "--trained",
    is_flag=True,
    help="The trained form: a reranker over the prompts' label scores, trained with torch on the task's training "
    "split and saved as safetensors under combiners/ in the project (reused when it exists). Label tasks, direct mode.",
)
@click.option("--retrain", is_flag=True, help="With --trained: train again even if the file exists.")
@click.option(
    "--train-size", type=click.IntRange(min=2), help="With --trained: the first N training examples (default: all)."
)
@click.option("--model", "model_id", help="The corrector model (default: the project's default model).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.pass_context
def evals_combine(ctx, evaluation_ids, instruction, trained, retrain, train_size, model_id, as_json):
    """Combine several evaluations' answers (LMCor). By default the model is the corrector (the prompting form):
    for each example it reads the input and the candidate answers and answers once more (one model call per
    input on top of the candidates' own). With --trained, a small reranker trained on the training split picks
    the label from the prompts' label scores (one call per prompt and input, as a vote). Either is compared with
    each candidate alone, their majority vote and the any-right ceiling on the same examples, with a paired test
    against the best candidate."""
    from ..evaluation import load_model
    from ..models import get_model
    from ..strategies import DEFAULT_COMBINE, combine, combine_markdown

    project = _project(ctx)
    info = get_model(model_id or project.default_model)
    model = load_model("llamacpp", info)
    with console.status("Combining...") as status:
        if trained:
            from ..combiner import trained_combine, trained_combine_markdown

            report = trained_combine(
                project,
                model=model,
                folder=project.path / "combiners",
                evaluation_ids=list(evaluation_ids),
                train_size=train_size,
                retrain=retrain,
                progress=eval_progress(status, "Trained combine (training examples, then the evaluation's)"),
            )
            render, what = trained_combine_markdown, "the reranker's probabilities"
        else:
            report = combine(
                project,
                model=model,
                evaluation_ids=list(evaluation_ids),
                instruction=instruction or DEFAULT_COMBINE,
                progress=eval_progress(status, "Combining"),
            )
            render, what = combine_markdown, "the answer"
    task = project.store.task_by_id(project.store.evaluation(evaluation_ids[0])["task_id"])["name"]
    if as_json:
        click.echo(json.dumps({"task": task, **report.to_dict()}))
        return
    click.echo(render(report, task=task, model=info.id))
    console.print(
        f"[dim]Every example's candidates and {what}: gradprompt evals show {report.combined.evaluation_id}[/]"
    )


def _second_attempt(project, model, info, task_row, prompt_row, split, settings, limit, correction, as_json) -> None:
    from ..strategies import DEFAULT_CORRECTION, second_attempt, second_attempt_markdown

    with console.status(f"Second attempt on prompt {prompt_row['id']}...") as status:
        report = second_attempt(
            project,
            model=model,
            task_row=task_row,
            prompt_row=prompt_row,
            split=split,
            settings=settings,
            limit=limit,
            correction=correction or DEFAULT_CORRECTION,
            progress=eval_progress(status, f"Second attempt on prompt {prompt_row['id']}"),
        )
    if as_json:
        click.echo(json.dumps({"prompt_id": prompt_row["id"], "task": task_row["name"], **report.to_dict()}))
        return
    click.echo(second_attempt_markdown(report, prompt=prompt_row["text"], task=task_row["name"], model=info.id))
    console.print(
        f"[dim]Both turns of every example: gradprompt evals show {report.second.evaluation_id}; the flips: "
        f"gradprompt evals flipped {report.first.evaluation_id} {report.second.evaluation_id}[/]"
    )
