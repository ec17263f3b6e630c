"""gradprompt runs, bench and demo: stored runs, resuming them, benchmarks and the demo."""

from __future__ import annotations

import json
import threading
import time

import click
from rich.markup import escape
from rich.text import Text

from .. import defaults
from ..bench import ALL_METHODS, DEFAULT_METHODS
from ..errors import ConfigError
from ..render import StepPrinter, _pct
from . import COUNT, ID, SEED, SIZE, Table, _clip, _print_json_list, _project, cli, console
from .optimize import BaselinePrinter, _load_torch, _print_run_result, _stopped_hint


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
@click.argument("run_id", type=ID)
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
        ("search", "search"),
        ("calibrate", "calibration"),
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
    compared = [r for r in timings.get("top") or [] if "wins" in r or r.get("initial")]
    if compared:
        console.print(
            "Compared on dev (every one is in the library, tagged dev-compared; take one with `gradprompt eval ID`):"
        )
        ctable = Table("prompt", "dev acc", "fixed", "broken", "p", "level", "", "text")
        for r in compared:
            verdict = (
                "start"
                if r.get("initial")
                else "adopted"
                if r.get("chosen")
                else "passed"
                if r.get("passed")
                else "not adopted"
            )
            ctable.add_row(
                str(r.get("prompt_id") or "-"),
                _pct(r.get("dev_accuracy")),
                str(r.get("wins", "")),
                str(r.get("losses", "")),
                f"{r['p_value']:.4f}" if r.get("p_value") is not None else "",
                f"{r['level']:.4f}" if r.get("level") is not None else "",
                verdict,
                _clip(r["prompt"], 50)
                + (f" [+ {len(r['demos'])} demos]" if r.get("demos") else "")
                + (" [+ calibration]" if r.get("calibration") else ""),
            )
        console.print(ctable)
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
@click.argument("run_id", type=ID)
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
    from ..optimize import is_greater, resume_run

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


@cli.command("bench")
@click.option("--task", "tasks", multiple=True, help="Task in this project; repeat.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(list(ALL_METHODS)),
    help="Repeat; default: " + ", ".join(DEFAULT_METHODS) + ". greater searches the instruction and the label "
    "decision; greater-instruction the instruction alone; greater-random is the ablation: the same search with a "
    "random ranking instead of the gradient; calibration, demonstrations: the start with a label calibration, or "
    "with the best demonstration sets, no search steps; kshot: the start with random training rows as "
    "demonstrations; kshot-dev: the best of random demonstration sets on dev (DSPy's random search).",
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
    "--reference-prompt",
    default=None,
    help="A hand-written prompt (what a user would write) scored as it is: a column 'reference' beside the "
    "methods, tested against the start like them.",
)
@click.option(
    "--width",
    type=SIZE,
    default=0,
    show_default=True,
    help="GReaTer candidates scored per step (0: automatic and adaptive; N: fixed, for the ablation).",
)
@click.option("--model", "model_id", help="Model id (default: the project's default model).")
@click.option(
    "--budget",
    type=float,
    default=defaults.BENCH_BUDGET_S,
    show_default=True,
    help="Seconds per method and task (the whole search, its final dev test included).",
)
@click.option("--train-size", type=COUNT, default=defaults.TRAIN_SIZE, show_default=True)
@click.option("--dev-size", type=SIZE, default=defaults.DEV_SIZE, show_default=True)
@click.option("--test-size", type=COUNT, default=defaults.TEST_SIZE, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--resume", "resume_id", type=ID, help="Continue an interrupted bench.")
@click.option("--report", "report_id", type=ID, help="Only (re)write the report of a bench.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: reports/ in the project).")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run each (task, method) cell as a task on a Ray cluster: auto (the cluster this machine belongs to), "
    "local (a one-machine cluster, to try it), or the head node's HOST:PORT. Only this process writes the "
    "history, as each cell finishes. Needs `pip install 'gradprompt[cluster]'` and the model on every worker.",
)
@click.option(
    "--cell-cpus",
    type=COUNT,
    default=1,
    show_default=True,
    help="With --ray: CPUs per cell (llama.cpp and torch threads). The budget is wall-clock seconds, so a cell "
    "with fewer CPUs than a local run searches less in the same budget: compare benches run alike.",
)
@click.pass_context
def bench_cmd(
    ctx,
    tasks,
    methods,
    mode,
    initial_prompt,
    reference_prompt,
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
    ray_address,
    cell_cpus,
):
    """Compare methods on tasks with an equal budget; final prompts chosen on dev and scored on test (llama.cpp).

    Writes a Markdown table and a PNG chart; everything is kept in the history, and --resume continues.
    """
    if cell_cpus != 1 and ray_address is None:
        raise click.UsageError("--cell-cpus sets the CPUs of each cell on a Ray cluster; add --ray ADDRESS.")
    if resume_id is None and report_id is None and not (budget > 0 and budget != float("inf")):
        raise ConfigError(f"--budget {budget:g}: give a positive number of seconds per method and task.")
    from ..bench import DEFAULT_METHODS, BenchConfig, run_bench, write_report

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
                reference_prompt=reference_prompt,
                width=width,
            )
        stop = threading.Event()
        try:
            with console.status("Bench...") as status:
                t0 = time.monotonic()

                def progress(text: str) -> None:
                    if console.is_terminal:
                        status.update(f"Bench: {text}")
                    else:  # a log file: a plain line per stage, as it happens
                        console.print(f"[{time.monotonic() - t0:6.0f} s] bench: {text}", highlight=False, markup=False)

                bench_id, _ = run_bench(
                    project,
                    config,
                    bench_id=resume_id,
                    progress=progress,
                    stop=stop,
                    cluster=ray_address,
                    cell_cpus=cell_cpus,
                )
        except KeyboardInterrupt:
            stop.set()
            raise
    else:
        bench_id = report_id
    md, png = write_report(project, bench_id, out)
    console.print(md.read_text(), highlight=False, markup=False)
    console.print(f"Report: {md}\nChart: {png or 'not written (no matplotlib in this install)'}")
    if project.store.bench(bench_id)["status"] == "failed":
        raise ConfigError(
            f"Some cells of bench {bench_id} failed (their errors are above); the others are stored. Fix the cause "
            f"and run `gradprompt bench --resume {bench_id}` (with --ray as before) to run only what is missing.",
            title="Bench incomplete",
        )


# ---------------------------------------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--budget",
    type=float,
    default=defaults.BUDGET_S,
    show_default=True,
    help="Seconds of search, the final choice included (0: use --steps).",
)
@click.option("--steps", type=COUNT, default=1000, show_default=True, help="At most this many optimization steps.")
@click.option("--train-size", type=COUNT, default=defaults.TRAIN_SIZE, show_default=True)
@click.option(
    "--dev-size",
    type=SIZE,
    default=defaults.DEV_SIZE,
    show_default=True,
    help="Dev examples of the paired test that decides whether the new prompt replaces the starting one.",
)
@click.option(
    "--test-size", type=COUNT, default=defaults.TEST_SIZE, show_default=True, help="Test examples scored by llama.cpp."
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--initial-prompt", default=None, help="Starting prompt (default: the paper's).")
@click.option(
    "--task",
    "which",
    type=click.Choice(["topic", "sentiment"]),
    default="topic",
    show_default=True,
    help="The shipped task: topic (news headlines, 4 labels; the default model answers 'business' for most of "
    "them) or sentiment (movie reviews, 2 labels; its start is already good).",
)
@click.pass_context
def demo(ctx, budget, steps, train_size, dev_size, test_size, seed, initial_prompt, which):
    """The whole path on the embedded default model, on the CPU, in a few minutes.

    Imports a shipped task (news-headline topics by default), runs the whole-prompt search (instruction steps
    with gradients in torch, demonstrations, a label calibration; a paired test on dev decides), scores the
    starting and the chosen prompt on the held-out test split with llama.cpp, and exports the result.
    """
    from ..demo import run_demo

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
        task=which,
    )
