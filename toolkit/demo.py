"""The main job: import the demo task, optimize on the default model (torch, CPU), evaluate with llama.cpp."""

from __future__ import annotations

import time

from rich.markup import escape

from . import defaults
from .engine.config import GreaterConfig
from .layout import CHAIN_CAP
from .tasks import DEMO_TASK, SHIPPED_TASKS, ImportOptions, demo_task_files, read_task_file


def ensure_demo_task(project, which: str = "sentiment") -> dict:
    """A shipped task (``topic``, what the demo runs, or ``sentiment``), imported once into the project."""
    store = project.store
    name = SHIPPED_TASKS[which][0]
    existing = store.find_task(project.id, name)
    if existing:
        return existing
    train, test = demo_task_files(which)
    # 40 train / 60 dev rows from the 100-row train file (the test file has 100 more): the final prompt is chosen
    # by a paired test on dev, and 60 examples let a gain of ~7 with none lost count as significant (33 could
    # not tell much from noise). 16 of the training rows score candidates; the other 24 are the pool the
    # demonstrations are drawn from.
    options = ImportOptions(split=(0.4, 0.6, 0.0))
    store.add_task(project.id, read_task_file(train, name=name, options=options, test_file=test))
    return store.find_task(project.id, name)


def run_demo(
    project,
    console,
    *,
    steps: int = 1000,
    train_size: int = defaults.TRAIN_SIZE,
    dev_size: int = 60,
    test_size: int = defaults.TEST_SIZE,
    seed: int = 0,
    mode: str = "direct",
    model_id: str | None = None,
    budget_s: float | None = defaults.BUDGET_S,
    initial_prompt: str | None = None,
    task: str = DEMO_TASK,
) -> dict:
    """Run the whole path and print what it measured. Returns the numbers (also stored in the history)."""
    from .defaults import DEFAULT_INITIAL_PROMPT
    from .evaluate import EvalSettings
    from .evaluation import evaluate_prompt, load_model
    from .export import export_prompt
    from .models import get_model
    from .optimize import optimize
    from .render import StepPrinter, _print_eval, eval_progress

    t_start = time.perf_counter()
    initial_prompt = initial_prompt or DEFAULT_INITIAL_PROMPT
    info = get_model(model_id or project.default_model)
    task_row = ensure_demo_task(project, task)
    task_name, _, what = SHIPPED_TASKS[task]
    sizes = next(t["splits"] for t in project.store.list_tasks(project.id) if t["id"] == task_row["id"])
    console.print(f"[bold]gradprompt demo[/] - project {project.name} ({project.path})")
    console.print(f"Task {task_name}: {what}, splits {sizes}; model {info.id} ({info.name})")
    with console.status("Loading the model for torch (the first time converts the GGUF, ~20 s)..."):
        tm = load_model("torch", info)
    limit = f"{budget_s:.0f} s" if budget_s else f"{steps} steps"
    pool = max(0, sizes.get("train", 0) - train_size)
    console.print(
        f"Torch: {tm.precision} on {tm.device}. The whole-prompt search, {limit} in all: instruction steps on "
        f"{train_size} training examples ({mode} mode), demonstration sets drawn from the other {pool} "
        "training rows and a label calibration fitted on the training rows; the result must beat the starting "
        f"prompt significantly on {min(dev_size, sizes.get('dev', 0))} dev examples to replace it."
    )
    config = GreaterConfig(
        mode=mode,
        steps=steps,
        n_train=train_size,
        n_dev=dev_size,
        seed=seed,
        batch_size=16,
        max_new_tokens=CHAIN_CAP,
        time_budget_s=budget_s,
    )
    result = optimize(
        project,
        task_row["id"],
        model_id=info.id,
        config=config,
        initial_prompt=initial_prompt,
        on_step=StepPrinter(steps, console, budget_s=budget_s),
        torch_model=tm,
    )
    if result.stop_reason:
        console.print(f"The search stopped early: {result.stop_reason}.")
    if result.selection:
        sel = result.selection
        console.print(
            ("Chosen on dev: " if sel["significant"] else "Kept the starting prompt: ") + sel["reason"] + ".",
            highlight=False,
            markup=False,
        )
    chosen = project.store.prompt(result.prompt_id)
    from .calibration import row_decision
    from .layout import demo_lines

    if chosen.get("demos"):
        console.print(
            "With demonstrations (earlier chat turns): " + "; ".join(demo_lines(chosen["demos"], 50)),
            highlight=False,
            markup=False,
        )
    if row_decision(chosen):
        console.print(f"With a label decision: {row_decision(chosen)}", highlight=False, markup=False)
    del tm
    what = "the starting prompt" if result.prompt_id == result.initial_prompt_id else "both prompts"
    console.print(
        f"\nOptimized in {result.seconds:.0f}s. Scoring {what} on {test_size} held-out test examples "
        "with llama.cpp (the GGUF you would deploy)..."
    )
    model = load_model("llamacpp", info)
    settings = EvalSettings(mode=mode, max_new_tokens=CHAIN_CAP)
    reports = {}
    kept = result.prompt_id == result.initial_prompt_id
    scored = (
        (("initial  ", result.initial_prompt_id),)
        if kept
        else (("initial  ", result.initial_prompt_id), ("optimized", result.prompt_id))
    )
    for label, pid in scored:
        with console.status(f"llama.cpp: {label.strip()} prompt...") as status:
            reports[label.strip()] = evaluate_prompt(
                project.store,
                model=model,
                task_row=task_row,
                prompt_row=project.store.prompt(pid),
                split="test",
                settings=settings,
                limit=test_size,
                progress=eval_progress(status, f"llama.cpp: {label.strip()} prompt"),
            )
        _print_eval(f"{label} prompt {pid}", reports[label.strip()], console)
    init = reports["initial"]
    opt = reports.get("optimized", init)
    delta = opt.accuracy - init.accuracy
    wins = losses = 0
    p_value = 1.0
    if kept:
        console.print(
            "Change: none. The search found no prompt significantly better than the starting prompt on "
            "the dev split, so the starting prompt was kept (it is not presented as an improvement). "
            "Try a weaker start (--initial-prompt), more training examples (--train-size) or a longer "
            "--budget."
        )
    else:
        from .stats import mcnemar_two_sided, paired_counts_by_key

        a = {r["example_id"]: bool(r["correct"]) for r in project.store.results(opt.evaluation_id)}
        b = {r["example_id"]: bool(r["correct"]) for r in project.store.results(init.evaluation_id)}
        wins, losses, _ = paired_counts_by_key(a, b)
        p_value = mcnemar_two_sided(wins, losses)
        verdict = (
            f"significant: exact McNemar p={p_value:.3f} on the same {opt.n} examples"
            if p_value < 0.05
            else f"not significant on {opt.n} test examples (exact McNemar p={p_value:.2f}): treat it as no difference"
        )
        console.print(f"Change: {delta * 100:+.1f} points, {wins} examples fixed and {losses} broken ({verdict}).")
    if kept:
        console.print(
            f"[dim]Every output: gradprompt evals show {init.evaluation_id}; the candidates the search "
            f"scored: gradprompt runs show {result.run_id}[/]"
        )
    else:
        console.print(
            f"[dim]The examples it fixed or broke: gradprompt evals flipped {init.evaluation_id} "
            f"{opt.evaluation_id}; every output: gradprompt evals show {opt.evaluation_id}; whether the "
            f"change survives other runtimes and quantizations: gradprompt compare "
            f"{result.initial_prompt_id} {result.prompt_id}[/]"
        )
    final_id = result.prompt_id if result.prompt_id is not None else result.initial_prompt_id
    path = export_prompt(project, final_id, "text")
    json_path = export_prompt(project, final_id, "json")
    total = time.perf_counter() - t_start
    parts = (f" [+ {len(result.demos)} demonstrations]" if result.demos else "") + (
        " [+ label calibration]" if result.calibration else ""
    )
    console.print(f"\nOptimized prompt: [bold cyan]{escape(result.prompt)}[/]{escape(parts)}", highlight=False)
    console.print(f"Exported to {path} and {json_path}")
    console.print(f"History: {project.history_path} (run {result.run_id}; `gradprompt runs show {result.run_id}`)")
    console.print(f"Prompt library: {project.path / 'prompts' / task_name}")
    console.print(f"Total time {total:.0f}s.")
    return {
        "run_id": result.run_id,
        "initial_accuracy": init.accuracy,
        "optimized_accuracy": opt.accuracy,
        "initial_ci": init.ci,
        "optimized_ci": opt.ci,
        "seconds": total,
        "prompt": result.prompt,
        "export": str(path),
        "wins": wins,
        "losses": losses,
        "p_value": p_value,
        "kept_initial": result.prompt_id == result.initial_prompt_id,
        "selection": result.selection,
        "demos": chosen.get("demos"),
        "calibration": chosen.get("calibration"),
    }
