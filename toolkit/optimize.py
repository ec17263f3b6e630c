"""One call to optimize a prompt for a stored task, with every step written to the history as it completes.

``optimize()`` starts a run; ``resume()`` continues a stopped one exactly where it stopped (the engine's
state is stored with each step). Progress is reported through a callback; a ``threading.Event`` stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .defaults import DEFAULT_INITIAL_PROMPT
from .engine.config import GreaterConfig, Item
from .errors import ConfigError
from .evaluation import load_model
from .lifecycle import Finished, OptimizeResult, drive, library_versions
from .models import get_model


def _items(store, task_id: int, split: str) -> list[Item]:
    return [Item(input=e["input"], answer=e["answer"]) for e in store.examples(task_id, split)]


def _engine(project, task_row, model_id, config: GreaterConfig, precision: str, device: str, tm=None):
    from .engine.greater import GreaterEngine

    store = project.store
    if tm is None:
        tm = load_model("torch", model_id, precision=precision, device=device)
    spec = store.task_spec(task_row)
    train, dev = _items(store, task_row["id"], "train"), _items(store, task_row["id"], "dev")
    if not train:
        raise ConfigError(f"Task {task_row['name']!r} has no training examples.")
    return GreaterEngine(tm, spec, train, dev, config), tm


def optimize(
    project,
    task: str | int,
    *,
    model_id: str | None = None,
    config: GreaterConfig | None = None,
    precision: str = "auto",
    device: str = "auto",
    initial_prompt: str = DEFAULT_INITIAL_PROMPT,
    on_step: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    torch_model=None,
    bench_id: int | None = None,
    method_name: str = "greater",
) -> OptimizeResult:
    config = config or GreaterConfig()
    store = project.store
    task_row = store.task(project.id, task)
    model_id = model_id or project.default_model
    engine, tm = _engine(project, task_row, model_id, config, precision, device, torch_model)
    existing = store.find_prompt(project.id, task_row["id"], initial_prompt)
    initial_id = existing["id"] if existing else project.add_prompt(task_row, initial_prompt, origin="initial")
    run_config = {
        "method": "greater",
        "greater": config.to_dict(),
        "precision": tm.precision,
        "device": tm.device,
        "initial_prompt": initial_prompt,
        "task": task_row["name"],
        "bench_method": method_name,
    }
    run_id = store.create_run(
        project_id=project.id,
        task_id=task_row["id"],
        method="greater",
        model_id=model_id,
        model_sha256=tm.sha256,
        config=run_config,
        seed=config.seed,
        versions=library_versions(),
        initial_prompt_id=initial_id,
        bench_id=bench_id,
    )
    state = engine.initial_state(initial_prompt)
    return drive(project, task_row, run_id, GreaterRun(engine), state, initial_id, on_step, stop)


def resume(
    project,
    run_id: int,
    *,
    on_step: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    torch_model=None,
    force: bool = False,
) -> OptimizeResult:
    """Continue a stopped, failed or interrupted run. Refused for a finished run and for one that a live
    process is running (``force`` takes over a run whose owner cannot be checked, e.g. on another machine)."""
    store = project.store
    run = store.check_resumable(run_id, force=force)
    if run["method"] != "greater":
        raise ConfigError(f"Run {run_id} is a {run['method']} run; `gradprompt runs resume {run_id}` continues it.")
    cfg = run["config"]
    config = GreaterConfig.from_dict(cfg["greater"])
    task_row = store.task(project.id, run["task_id"])
    engine, _ = _engine(project, task_row, run["model_id"], config, cfg["precision"], cfg["device"], torch_model)
    steps = store.steps(run_id)
    state = steps[-1]["state"] if steps else engine.initial_state(cfg["initial_prompt"])
    state.setdefault("initial_ids", engine.encode_prompt(cfg["initial_prompt"]))  # runs stored before it was kept
    store.claim_run(run_id, force=force)  # after the model loaded: a failed load leaves the run as it was
    return drive(project, task_row, run_id, GreaterRun(engine), state, run["initial_prompt_id"], on_step, stop)


class GreaterRun:
    """The GReaTer engine seen through the one optimizer protocol that :func:`drive` runs:
    ``run(state, stop)`` yields step records, ``current_prompt(state)``, ``conclude(state) -> Finished``."""

    origin = "run"

    def __init__(self, engine):
        self.engine = engine

    def run(self, state: dict, stop=None):
        return self.engine.run(state, stop=stop)

    def current_prompt(self, state: dict) -> str:
        return self.engine.decode(state["prompt_ids"])

    def conclude(self, state: dict) -> Finished:
        result = self.engine.finish(state)
        return Finished(
            prompt=result.prompt,
            train_accuracy=result.train.accuracy if result.train else None,
            dev_accuracy=result.dev_accuracy,
            steps=result.steps_done,
            top=result.top,
            selection=result.selection,
            stop_reason=result.stop_reason,
            calibration=result.calibration,
            demos=result.demos,
            usage={
                "torch_forward_tokens": self.engine.stats["forward_tokens"],
                "torch_gradient_tokens": self.engine.stats["grad_tokens"],
            },
        )


# -- one entry point for every method -----------------------------------------------------------------------
# "greater or a baseline" is decided here and nowhere else: the CLI, the bench and the TUI call these two.


def is_greater(method: str) -> bool:
    # greater, the bench's greater-instruction and greater-random, and calibration alone: runs of the torch engine
    return method.startswith("greater") or method in ("calibration", "demonstrations")


def _default_load_torch(info, precision: str = "auto", device: str = "auto"):
    return load_model("torch", info, precision=precision, device=device)


def _default_load_llama(info):
    return load_model("llamacpp", info)


def start_run(
    project,
    task: str | int,
    method: str = "greater",
    *,
    model_id: str | None = None,
    greater: GreaterConfig | None = None,
    baseline=None,
    initial_prompt: str = DEFAULT_INITIAL_PROMPT,
    precision: str = "auto",
    device: str = "auto",
    on_step: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    torch_model=None,
    llama_model=None,
    load_torch: Callable | None = None,
    load_llama: Callable | None = None,
    bench_id: int | None = None,
    method_name: str | None = None,
) -> OptimizeResult:
    """Start a run of any method: GReaTer (torch; ``greater`` config) or a baseline (llama.cpp; ``baseline``
    config, a BaselineConfig whose method is ``method``). Models are loaded with ``load_torch(info, precision,
    device)`` / ``load_llama(info)`` unless given loaded."""
    info = get_model(model_id or project.default_model)
    if is_greater(method):
        if torch_model is None:
            torch_model = (load_torch or _default_load_torch)(info, precision, device)
        return optimize(
            project,
            task,
            model_id=info.id,
            config=greater,
            precision=precision,
            device=device,
            initial_prompt=initial_prompt,
            on_step=on_step,
            stop=stop,
            torch_model=torch_model,
            bench_id=bench_id,
            method_name=method,
        )
    from .baselines import BaselineConfig, optimize_baseline

    baseline = baseline or BaselineConfig(method=method)
    if baseline.method != method:
        raise ConfigError(f"The baseline settings are for {baseline.method!r}, not {method!r}.")
    if llama_model is None:
        llama_model = (load_llama or _default_load_llama)(info)
    return optimize_baseline(
        project,
        task,
        model=llama_model,
        config=baseline,
        initial_prompt=initial_prompt,
        on_step=on_step,
        stop=stop,
        bench_id=bench_id,
        method_name=method_name,
    )


def resume_run(
    project,
    run_id: int,
    *,
    on_step: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    force: bool = False,
    torch_model=None,
    llama_model=None,
    load_torch: Callable | None = None,
    load_llama: Callable | None = None,
) -> OptimizeResult:
    """Continue a run of any method where it stopped (the check comes before the slow model load)."""
    run = project.store.check_resumable(run_id, force=force)
    info = get_model(run["model_id"])
    if is_greater(run["method"]):
        if torch_model is None:
            torch_model = (load_torch or _default_load_torch)(
                info, run["config"].get("precision", "auto"), run["config"].get("device", "auto")
            )
        return resume(project, run_id, on_step=on_step, stop=stop, torch_model=torch_model, force=force)
    from .baselines import BaselineConfig, optimize_baseline

    if llama_model is None:
        llama_model = (load_llama or _default_load_llama)(info)
    return optimize_baseline(
        project,
        run["task_id"],
        model=llama_model,
        config=BaselineConfig.from_dict(run["config"]["baseline"]),
        on_step=on_step,
        stop=stop,
        run_id=run_id,
        force=force,
    )
