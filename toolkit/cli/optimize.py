"""gradprompt optimize, and the run printers and loaders that runs resume shares."""

from __future__ import annotations

import threading
import time

import click
from rich.markup import escape

from .. import defaults
from ..baselines import RUN_METHODS
from ..errors import ConfigError
from ..layout import CHAIN_CAP
from ..render import StepPrinter, _pct
from . import COUNT, SEED, SIZE, _project, cli, console, err_console


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
            "--steps",
            type=COUNT,
            default=defaults.STEPS,
            show_default=True,
            help="Optimization steps (one token position each).",
        ),
        click.option(
            "--train-size",
            type=COUNT,
            default=defaults.TRAIN_SIZE,
            show_default=True,
            help="Training examples the prompt is scored on (the training rows beyond them are the pool of "
            "demonstrations).",
        ),
        click.option(
            "--dev-size",
            type=SIZE,
            default=defaults.DEV_SIZE,
            show_default=True,
            help="Dev examples of the paired test that picks the final prompt (all dev rows up to this many).",
        ),
        click.option(
            "--max-new-tokens",
            type=COUNT,
            default=CHAIN_CAP,
            show_default=True,
            help="Reasoning chain cap, tokens (reasoning mode).",
        ),
        click.option("--batch-size", type=COUNT, default=16, show_default=True),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option(
            "--dev-every",
            type=SIZE,
            default=0,
            show_default=True,
            help="Also score the current prompt on the dev split every N steps (0: only at the end).",
        ),
        click.option(
            "--width",
            type=SIZE,
            default=0,
            show_default=True,
            help="Candidates scored in full per step, by gradient rank (0: automatic: 16 in direct mode, 4 "
            "with reasoning, or what fits two sweeps of the prompt in --budget; widened when the "
            "gradient's ranking disagrees with the true scores).",
        ),
        click.option(
            "--probe",
            type=SIZE,
            default=4,
            show_default=True,
            help="Random extra candidates scored in full per step to measure how well the gradient ranks.",
        ),
        click.option(
            "--search",
            type=click.Choice(["all", "instruction", "demonstrations", "calibration"]),
            default="all",
            show_default=True,
            help="Which parts of the prompt to search. all: the instruction (gradient steps), demonstrations (sets "
            "of training rows beyond --train-size, shown as earlier chat turns) and, on label tasks, the label "
            "decision (a calibration fitted on the training rows), all compared in the final dev test; "
            "instruction: the gradient search alone; demonstrations or calibration: no steps, that part alone.",
        ),
        click.option(
            "--calibrate",
            type=click.Choice(["batch", "contextual", "none"]),
            default="batch",
            show_default=True,
            help="The calibration the label decision is searched with (batch: label prior from the model's answers "
            "on training inputs; contextual: from content-free inputs).",
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
    search="all",
    calibrate="batch",
):
    from ..engine.config import GreaterConfig

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
        search=search,
        calibrate=calibrate,
    )


@cli.command("optimize")
@click.argument("task")
@_greater_options
@click.option("--initial-prompt", default=None, help="Starting prompt (default: the paper's).")
@click.option(
    "--method",
    type=click.Choice(list(RUN_METHODS)),
    default="greater",
    show_default=True,
    help="greater: gradients (torch). ape, opro: the model writes instructions (llama.cpp); "
    "cot: 'Let's think step by step.'; initial: the starting prompt as given; kshot: the start with random "
    "training rows as demonstrations; kshot-dev: the best of random demonstration sets on dev (llama.cpp).",
)
@click.option(
    "--budget", type=float, help="Wall-clock seconds for the search (default: none for greater, 120 for ape/opro)."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the time and memory plan (and what fits at each precision) and stop."
)
@click.option(
    "--ignore-memory",
    is_flag=True,
    help="Start even when the plan says the run does not fit in the memory free now.",
)
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
    search,
    calibrate,
    rank,
    initial_prompt,
    method,
    budget,
    dry_run,
    ignore_memory,
):
    """Optimize a prompt for TASK (GReaTer by default). Every step is stored; Ctrl-C stops, `runs resume` continues."""
    from ..defaults import DEFAULT_INITIAL_PROMPT
    from ..models import get_model
    from ..optimize import is_greater, start_run
    from ..plan import available_memory_mb, estimate, fit_problem, plans_by_precision

    project = _project(ctx)
    if budget is not None and not (budget > 0 and budget != float("inf")):
        raise ConfigError(f"--budget {budget:g}: give a positive number of seconds (or leave it out).")
    if initial_prompt is not None and not initial_prompt.strip():
        raise ConfigError("--initial-prompt is empty: give the prompt to start from, or leave the option out.")
    task_row = project.store.task(project.id, task)
    info = get_model(model_id or project.default_model)
    bcfg = gcfg = None
    if not is_greater(method):
        from ..baselines import BaselineConfig

        bcfg = BaselineConfig.for_run(
            method, budget_s=budget, max_steps=steps, n_train=train_size, n_dev=dev_size, seed=seed
        )
        if dry_run:
            console.print(
                f"{method}: at most {bcfg.budget_s:.0f} s of proposing and scoring with llama.cpp, then "
                f"dev selection on {dev_size} examples."
            )
            return
        printer = BaselinePrinter()
    else:
        from ..errors import require

        require(
            "torch",
            "transformers",
            what="GReaTer (`gradprompt optimize`; --method ape, opro, cot or initial run on llama.cpp alone)",
        )
        gcfg = _config(
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
            search,
            calibrate,
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
            f"      {plan.describe_step()}, ~{plan.total_seconds / 60:.1f} min in all, "
            f"peak memory ~{plan.peak_memory_mb / 1024:.1f} GB ({plan.notes})"
        )
        plans = plans_by_precision(
            info, inputs, gcfg, device=dev_for_plan, initial_prompt=initial_prompt or DEFAULT_INITIAL_PROMPT
        )
        free = available_memory_mb(dev_for_plan)
        problem = fit_problem(plan, plans, free)
        if dry_run:
            print_fits(plans, free, "By precision")
            if problem:
                console.print(f"[yellow]Does not fit:[/] {escape(problem)}", highlight=False)
            return
        if problem and not ignore_memory:
            raise ConfigError(
                f"Not started: {problem} (--ignore-memory starts it anyway.)", title="The run does not fit"
            )
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


def print_fits(plans, free_mb: float | None, heading: str = "by precision") -> None:
    """Each precision's peak memory and time per step against the memory free now."""
    where = f"{free_mb / 1024:.1f} GB free now" if free_mb is not None else "free memory unknown"
    console.print(f"{heading} ({plans[0].device}, {where}):", highlight=False, markup=False)
    for p in plans:
        fits = "" if free_mb is None else ("fits" if p.peak_memory_mb <= 0.9 * free_mb else "does not fit")
        console.print(
            f"  {p.precision:5} ~{p.peak_memory_mb / 1024:5.1f} GB peak, ~{p.seconds_per_step:.0f} s per step  {fits}",
            highlight=False,
            markup=False,
        )


def _load_torch(info, precision: str = "auto", device: str = "auto"):
    """Load a model for torch with a spinner (the load can take minutes on a loaded machine)."""
    from ..evaluation import load_model

    with console.status("Loading the model for torch..."):
        return load_model("torch", info, precision=precision, device=device)


def _stopped_hint(project) -> None:
    """After Ctrl-C: which run stopped, what is kept, and the command that continues it."""
    from .. import owner

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
    if getattr(result, "calibration", None):
        from ..calibration import Calibration

        cal = Calibration.from_json(result.calibration)
        console.print(f"Label decision: {escape(cal.describe()) if cal else '-'}", highlight=False)
    if getattr(result, "demos", None):
        from ..layout import demo_lines, demos_to_json

        lines = demo_lines(demos_to_json(tuple(tuple(d) for d in result.demos)), 80)
        console.print(f"Demonstrations ({len(lines)}, shown before the input as earlier chat turns):")
        for line in lines:
            console.print("  " + escape(line), highlight=False)
    console.print(
        f"Train accuracy {_pct(result.train_accuracy)}, dev accuracy {_pct(result.dev_accuracy)} ({scorer} scoring)"
    )
    selection = getattr(result, "selection", None)
    if selection:
        verdict = "[green]Chosen on dev[/]" if selection.get("significant") else "[yellow]Kept the starting prompt[/]"
        console.print(f"{verdict}: {escape(selection['reason'])}.", highlight=False)


# ---------------------------------------------------------------------------------------------- eval
