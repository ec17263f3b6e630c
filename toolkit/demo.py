"""The main job: import the demo task, optimize on the default model (torch, CPU), evaluate with llama.cpp."""

from __future__ import annotations

import time

from .engine.greater import GreaterConfig
from .tasks import DEMO_TASK_NAME, demo_task_files, read_task_file


def ensure_demo_task(project) -> dict:
    store = project.store
    existing = store.find_task(project.id, DEMO_TASK_NAME)
    if existing:
        return existing
    train, test = demo_task_files()
    store.add_task(project.id, read_task_file(train, name=DEMO_TASK_NAME, test_file=test))
    return store.find_task(project.id, DEMO_TASK_NAME)


def run_demo(project, console, *, steps: int = 16, train_size: int = 16, dev_size: int = 32, test_size: int = 100,
             seed: int = 0, mode: str = "direct", model_id: str | None = None) -> dict:
    """Run the whole path and print what it measured. Returns the numbers (also stored in the history)."""
    from .cli import StepPrinter, _print_eval, eval_progress
    from .engine.torch_backend import load_torch_model
    from .evaluate import EvalSettings, evaluate_prompt
    from .export import export_prompt
    from .llamacpp import LlamaCppModel
    from .models import get_model
    from .optimize import DEFAULT_INITIAL_PROMPT, optimize

    t_start = time.perf_counter()
    info = get_model(model_id or project.default_model)
    task_row = ensure_demo_task(project)
    sizes = {r["split"]: r["n"] for r in project.store.db.query(
        "select split, count(*) n from examples where task_id = ? group by split", [task_row["id"]])}
    console.print(f"[bold]gradprompt demo[/] - project {project.name} ({project.path})")
    console.print(f"Task {DEMO_TASK_NAME}: movie-review sentiment, splits {sizes}; model {info.id} ({info.name})")
    with console.status("Loading the model for torch (the first time converts the GGUF, ~20 s)..."):
        tm = load_torch_model(info, precision="auto", device="auto")
    console.print(f"Torch: {tm.precision} on {tm.device}. Optimizing {steps} steps on {train_size} training examples "
                  f"({mode} mode; the final prompt is chosen on {dev_size} dev examples).")
    config = GreaterConfig(mode=mode, steps=steps, n_train=train_size, n_dev=dev_size, seed=seed, batch_size=16,
                           max_new_tokens=48)
    result = optimize(project, task_row["id"], model_id=info.id, config=config, initial_prompt=DEFAULT_INITIAL_PROMPT,
                      on_step=StepPrinter(steps, console), torch_model=tm)
    del tm
    console.print(f"\nOptimized in {result.seconds:.0f}s. Scoring both prompts on {test_size} held-out test examples "
                  "with llama.cpp (the GGUF you would deploy)...")
    model = LlamaCppModel(info)
    settings = EvalSettings(mode=mode, max_new_tokens=48)
    reports = {}
    for label, pid in (("initial  ", result.initial_prompt_id), ("optimized", result.prompt_id)):
        with console.status(f"llama.cpp: {label.strip()} prompt...") as status:
            reports[label.strip()] = evaluate_prompt(project.store, model=model, task_row=task_row,
                                                     prompt_row=project.store.prompt(pid), split="test",
                                                     settings=settings, limit=test_size,
                                                     progress=eval_progress(status, f"llama.cpp: {label.strip()} prompt"))
        _print_eval(f"{label} prompt {pid}", reports[label.strip()], console)
    init, opt = reports["initial"], reports["optimized"]
    delta = opt.accuracy - init.accuracy
    overlap = not (opt.ci[0] > init.ci[1] or init.ci[0] > opt.ci[1])
    verdict = ("the intervals overlap: on this many examples the difference is not significant" if overlap
               else "the intervals do not overlap")
    console.print(f"Change: {delta * 100:+.1f} points ({verdict}).")
    console.print(f"[dim]The examples it fixed or broke: gradprompt evals flipped {init.evaluation_id} "
                  f"{opt.evaluation_id}; every output: gradprompt evals show {opt.evaluation_id}; whether the "
                  f"change survives other runtimes and quantizations: gradprompt compare "
                  f"{result.initial_prompt_id} {result.prompt_id}[/]")
    path = export_prompt(project, result.prompt_id, "text")
    json_path = export_prompt(project, result.prompt_id, "json")
    total = time.perf_counter() - t_start
    console.print(f"\nOptimized prompt: [bold cyan]{result.prompt}[/]", highlight=False)
    console.print(f"Exported to {path} and {json_path}")
    console.print(f"History: {project.history_path} (run {result.run_id}; `gradprompt runs show {result.run_id}`)")
    console.print(f"Prompt library: {project.path / 'prompts' / DEMO_TASK_NAME}")
    console.print(f"Total time {total:.0f}s.")
    return {"run_id": result.run_id, "initial_accuracy": init.accuracy, "optimized_accuracy": opt.accuracy,
            "initial_ci": init.ci, "optimized_ci": opt.ci, "seconds": total, "prompt": result.prompt,
            "export": str(path)}
