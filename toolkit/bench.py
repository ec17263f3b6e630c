"""Methods x tasks on one model with an equal budget; final prompts chosen on dev, scored on test with llama.cpp.

Everything lands in the history (a ``benches`` row, its runs, their steps and the test evaluations); an
interrupted bench resumes by skipping the (task, method) runs it already finished. ``write_report`` renders
the Markdown table and the PNG chart.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .evaluate import EvalSettings, evaluate_prompt

ALL_METHODS = ("initial", "cot", "ape", "opro", "greater")


@dataclass(frozen=True)
class BenchConfig:
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = ALL_METHODS
    model_id: str = "smollm2-135m"
    budget_s: float = 60.0
    n_train: int = 16
    n_dev: int = 32
    n_test: int = 100
    seed: int = 0
    mode: str = "direct"

    def __post_init__(self):
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise ConfigError(f"Unknown method(s) {', '.join(bad)}: use {', '.join(ALL_METHODS)}.")
        if not self.tasks:
            raise ConfigError("Name at least one task (--task).")


@dataclass
class BenchCell:
    task: str
    method: str
    run_id: int
    prompt: str
    accuracy: float
    ci: tuple[float, float]
    n: int
    seconds: float
    usage: dict = field(default_factory=dict)


def run_bench(project, config: BenchConfig | None, *, bench_id: int | None = None,
              progress: Callable[[str], None] | None = None, stop: threading.Event | None = None):
    """Run (or resume, with ``bench_id``) a bench. Returns (bench_id, cells)."""
    from .baselines import BaselineConfig, optimize_baseline
    from .engine.greater import GreaterConfig
    from .llamacpp import LlamaCppModel
    from .models import get_model
    from .optimize import optimize

    store = project.store
    say = progress or (lambda text: None)
    if bench_id is None:
        if config is None:
            raise ConfigError("Give a bench configuration or the id of a bench to resume.")
        name = f"{len(config.tasks)} tasks x {len(config.methods)} methods, {config.budget_s:.0f}s each"
        bench_id = store.create_bench(project.id, name, asdict(config) | {"machine": machine()})
    else:
        config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in store.bench(bench_id)["config"].items() if k != "machine"})
        store.update_bench(bench_id, status="running")
    for task in config.tasks:
        store.task(project.id, task)  # fail early on a missing task
    info = get_model(config.model_id)
    llama = LlamaCppModel(info)
    tm = None
    done = {(r["config"].get("task"), r["method"]) for r in store.bench_runs(bench_id) if r["status"] == "done"}
    for task in config.tasks:
        for method in config.methods:
            if stop is not None and stop.is_set():
                store.update_bench(bench_id, status="stopped")
                return bench_id, collect(project, bench_id)
            if (task, method) in done:
                continue
            say(f"{task}: {method}")
            if method == "greater":
                if tm is None:
                    from .engine.torch_backend import load_torch_model

                    tm = load_torch_model(info)
                gcfg = GreaterConfig(mode=config.mode, steps=10_000, n_train=config.n_train, n_dev=config.n_dev,
                                     seed=config.seed, time_budget_s=config.budget_s, max_new_tokens=48)
                result = optimize(project, task, model_id=info.id, config=gcfg, torch_model=tm, bench_id=bench_id,
                                  stop=stop)
            else:
                bcfg = BaselineConfig(method=method, budget_s=config.budget_s, n_train=config.n_train,
                                      n_dev=config.n_dev, seed=config.seed)
                result = optimize_baseline(project, task, model=llama, config=bcfg, bench_id=bench_id, stop=stop)
            if result.status != "done":
                continue
            say(f"{task}: {method}: test")
            evaluate_prompt(store, model=llama, task_row=store.task(project.id, task),
                            prompt_row=store.prompt(result.prompt_id), split="test",
                            settings=EvalSettings(mode=config.mode), limit=config.n_test)
    store.update_bench(bench_id, status="done", finished=time.time())
    return bench_id, collect(project, bench_id)


def collect(project, bench_id: int) -> list[BenchCell]:
    store = project.store
    cells = []
    for run in store.bench_runs(bench_id):
        if run["status"] != "done" or not run["best_prompt_id"]:
            continue
        evs = [e for e in store.evaluations(prompt_id=run["best_prompt_id"], task_id=run["task_id"])
               if e["split"] == "test" and e["status"] == "done" and e["backend"] == "llamacpp"]
        if not evs:
            continue
        ev = evs[-1]
        t = run["timings"]
        cells.append(BenchCell(task=run["config"]["task"], method=run["method"], run_id=run["id"],
                               prompt=store.prompt(run["best_prompt_id"])["text"], accuracy=ev["accuracy"],
                               ci=(ev["ci_low"], ev["ci_high"]), n=ev["n"],
                               seconds=t.get("optimize_seconds", t.get("seconds", 0.0)), usage=t.get("usage", {})))
    return cells


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(), "python": platform.python_version()}


def markdown_table(cells: list[BenchCell], methods: list[str], tasks: list[str]) -> str:
    by = {(c.task, c.method): c for c in cells}
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task in tasks:
        row = []
        for m in methods:
            c = by.get((task, m))
            row.append("-" if c is None else f"{100 * c.accuracy:.1f} ({100 * c.ci[0]:.0f}-{100 * c.ci[1]:.0f})")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    avg, secs = [], []
    for m in methods:
        accs = [by[(t, m)].accuracy for t in tasks if (t, m) in by]
        avg.append("-" if not accs else f"**{100 * sum(accs) / len(accs):.1f}**")
        s = [by[(t, m)].seconds for t in tasks if (t, m) in by]
        secs.append("-" if not s else f"{sum(s) / len(s):.0f}")
    lines.append("| **average** | " + " | ".join(avg) + " |")
    lines.append("| seconds used (mean) | " + " | ".join(secs) + " |")
    return "\n".join(lines)


def write_chart(cells: list[BenchCell], methods: list[str], tasks: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(c.task, c.method): c for c in cells}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [j + i * width for j in range(len(tasks))]
        ys = [100 * by[(t, m)].accuracy if (t, m) in by else 0 for t in tasks]
        err = [[100 * (by[(t, m)].accuracy - by[(t, m)].ci[0]) if (t, m) in by else 0 for t in tasks],
               [100 * (by[(t, m)].ci[1] - by[(t, m)].accuracy) if (t, m) in by else 0 for t in tasks]]
        ax.bar(xs, ys, width, label=m, yerr=err, capsize=2)
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy % (95% CI)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=len(methods))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(project, bench_id: int, out_dir: Path | None = None) -> tuple[Path, Path]:
    store = project.store
    bench = store.bench(bench_id)
    cfg = bench["config"]
    cells = collect(project, bench_id)
    methods = [m for m in cfg["methods"]]
    tasks = [t for t in cfg["tasks"]]
    out_dir = Path(out_dir or project.path / "reports")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = write_chart(cells, methods, tasks, out_dir / f"bench-{bench_id}.png")
    md = out_dir / f"bench-{bench_id}.md"
    text = [f"# Bench {bench_id}: {bench['name']}", "",
            f"Model {cfg['model_id']}; budget {cfg['budget_s']:.0f} s per method and task (proposal + scoring; "
            f"dev selection and the test evaluation not counted); {cfg['n_train']} train / {cfg['n_dev']} dev / "
            f"up to {cfg['n_test']} test examples; seed {cfg['seed']}; {cfg['mode']} mode. Test accuracy % with "
            "95% Wilson intervals, scored with llama.cpp on the GGUF.", "",
            markdown_table(cells, methods, tasks), "", f"![chart]({png.name})", "", "## Final prompts", ""]
    for c in sorted(cells, key=lambda c: (c.task, methods.index(c.method))):
        usage = ", ".join(f"{k} {v}" for k, v in c.usage.items()) if c.usage else ""
        text.append(f"* **{c.task} / {c.method}** (run {c.run_id}{'; ' + usage if usage else ''}): `{c.prompt}`")
    text += ["", f"Machine: {cfg.get('machine', {})}"]
    md.write_text("\n".join(text) + "\n", encoding="utf-8")
    store.update_bench(bench_id, report=str(md))
    return md, png

