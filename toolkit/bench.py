"""Methods x tasks on one model with an equal budget; final prompts chosen on dev, scored on test with llama.cpp.

Everything lands in the history (a ``benches`` row, its runs, their steps and the test evaluations); an
interrupted bench resumes by skipping the (task, method) runs it already finished. ``write_report`` renders
the Markdown table and the PNG chart.
"""

from __future__ import annotations

import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import defaults
from .errors import ConfigError
from .evaluate import EvalSettings
from .evaluation import evaluate_prompt, load_model
from .layout import CHAIN_CAP
from .stats import mcnemar_two_sided, paired_counts_by_key, sign_test

ALL_METHODS = (
    "initial",
    "cot",
    "ape",
    "opro",
    "kshot",
    "kshot-dev",
    "calibration",
    "demonstrations",
    "greater",
    "greater-instruction",
    "greater-random",
)
DEFAULT_METHODS = ("initial", "cot", "ape", "opro", "kshot", "kshot-dev", "calibration", "demonstrations", "greater")
# greater: the whole-prompt search (instruction and label decision); greater-instruction: the gradient search of
# the instruction alone (as before 2026-12-06); greater-random is the ablation: the same search with the gradient
# ranking replaced by a random order; calibration: the start with a label calibration alone (no search steps);
# demonstrations: the start with the best demonstration sets alone (no search steps); kshot: the start with random
# training rows as demonstrations; kshot-dev: the best of random demonstration sets on dev (DSPy's random search).
# reference is not chosen with --method: --reference-prompt TEXT adds it, the hand-written prompt as it is.
REFERENCE = "reference"
SEARCH_OF = {"greater-instruction": "instruction", "calibration": "calibration", "demonstrations": "demonstrations"}


@dataclass(frozen=True)
class BenchConfig:
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = DEFAULT_METHODS
    model_id: str = "smollm2-135m"
    budget_s: float = defaults.BENCH_BUDGET_S
    n_train: int = defaults.TRAIN_SIZE
    n_dev: int = defaults.DEV_SIZE
    n_test: int = defaults.TEST_SIZE
    seed: int = 0
    mode: str = "direct"
    initial_prompt: str | None = None  # None: the paper's prompt (toolkit.defaults.DEFAULT_INITIAL_PROMPT)
    width: int = 0  # GReaTer: candidates scored per step; 0: automatic and adaptive; N: fixed at N (no widening),
    # so that greater and greater-random differ only in how they rank the same pool (the ablation)
    reference_prompt: str | None = None  # a hand-written prompt scored as it is: the column "reference"

    def __post_init__(self):
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise ConfigError(f"Unknown method(s) {', '.join(bad)}: use {', '.join(ALL_METHODS)}.")
        if not self.tasks:
            raise ConfigError("Name at least one task (--task).")
        if self.reference_prompt is not None and not self.reference_prompt.strip():
            raise ConfigError("--reference-prompt is empty: give the prompt a user would write, or leave it out.")

    @property
    def columns(self) -> tuple[str, ...]:
        """The report's columns: the methods, with the reference prompt after the start when there is one."""
        return columns(self.methods, self.reference_prompt)


def columns(methods, reference_prompt: str | None) -> tuple[str, ...]:
    methods = tuple(methods)
    if not reference_prompt:
        return methods
    at = methods.index("initial") + 1 if "initial" in methods else 0
    return methods[:at] + (REFERENCE,) + methods[at:]


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
    evaluation_id: int | None = None
    steps: int = 0
    wins: int | None = None  # test examples this method's prompt gets right and the initial prompt's wrong
    losses: int | None = None
    p_value: float | None = None  # exact two-sided McNemar against the initial prompt on the same test examples
    kept_initial: bool = False
    agreement: list = field(default_factory=list)  # per step: the gradient's rank agreement with true scores
    parts: str = ""  # the final prompt's other parts: " [+ N demonstrations]", " [+ label calibration]"


def run_bench(
    project,
    config: BenchConfig | None,
    *,
    bench_id: int | None = None,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    cluster: str | None = None,
    cell_cpus: int = 1,
):
    """Run (or resume, with ``bench_id``) a bench. Returns (bench_id, cells). ``cluster``: a Ray address
    ("auto", "local", "ray://HOST:PORT" or HOST:PORT) to run each (task, method) cell as a Ray task with
    ``cell_cpus`` CPUs (llama.cpp and torch use that many threads there)."""
    from .optimize import is_greater

    store = project.store
    say = progress or (lambda text: None)
    if bench_id is None:
        if config is None:
            raise ConfigError("Give a bench configuration or the id of a bench to resume.")
        name = f"{len(config.tasks)} tasks x {len(config.methods)} methods, {config.budget_s:.0f}s each"
        bench_id = store.create_bench(project.id, name, asdict(config) | {"machine": machine()})
    else:
        names = set(BenchConfig.__dataclass_fields__)
        stored: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in store.bench(bench_id)["config"].items() if k in names
        }
        config = BenchConfig(**stored)
        store.update_bench(bench_id, status="running")
    for task in config.tasks:
        store.task(project.id, task)  # fail early on a missing task
    if cluster is None and any(is_greater(m) for m in config.methods):  # on a cluster, the workers need them
        from .errors import require

        require("torch", "transformers", what="The bench's greater methods")
    done = {
        (r["config"].get("task"), r["config"].get("bench_method", r["method"]))
        for r in store.bench_runs(bench_id)
        if r["status"] == "done"
    }
    todo = []
    for task in config.tasks:
        for method in config.columns:
            if (task, method) in done:
                continue
            if method == "calibration" and project.store.task(project.id, task)["answer_kind"] != "label":
                say(f"{task}: calibration skipped (not a label task)")
                continue
            todo.append((task, method))
    stopped = False
    if cluster is not None:  # each cell a Ray task; only this process writes the history (toolkit.cluster)
        failed = _run_on_cluster(project, config, bench_id, todo, cluster, say=say, stop=stop, cpus=cell_cpus)
        stopped = stop is not None and stop.is_set()
    else:
        failed = []
        models = CellModels(config.model_id)
        for task, method in todo:
            if stop is not None and stop.is_set():  # checked before each cell, as before
                stopped = True
                break
            run_cell(project, config, bench_id, task, method, models, say=say, stop=stop)
    if stopped:
        store.update_bench(bench_id, status="stopped")
    elif failed:  # a cluster's failed cells: the others are stored, --resume runs what is missing
        store.update_bench(bench_id, status="failed")
    else:
        store.update_bench(bench_id, status="done", finished=time.time())
    return bench_id, collect(project, bench_id)


class CellModels:
    """The bench's models, loaded when a cell first needs them and kept for the next cells (one process)."""

    def __init__(self, model_id: str, sha256: str | None = None, n_threads: int | None = None):
        from .models import get_model, locate_model

        self.info = get_model(model_id) if sha256 is None else locate_model(model_id, sha256)
        self.n_threads = n_threads
        self._llama = None
        self._torch = None

    @property
    def llama(self):
        if self._llama is None:
            self._llama = load_model("llamacpp", self.info, n_threads=self.n_threads)
        return self._llama

    @property
    def torch(self):
        if self._torch is None:
            self._torch = load_model("torch", self.info)
        return self._torch


def run_cell(
    project,
    config: BenchConfig,
    bench_id: int,
    task: str,
    method: str,
    models: CellModels,
    *,
    say: Callable[[str], None] = lambda text: None,
    stop: threading.Event | None = None,
):
    """One (task, method) cell of a bench: the run, then the test evaluations of its prompt and of the start
    (the paired test needs the start's answers on the same rows; scored once per task, then reused). Returns the
    run's result."""
    from .baselines import BaselineConfig
    from .defaults import DEFAULT_INITIAL_PROMPT
    from .engine.config import GreaterConfig
    from .optimize import is_greater, start_run

    store = project.store
    start_text = config.initial_prompt or DEFAULT_INITIAL_PROMPT
    say(f"{task}: {method}")
    initial_prompt = start_text
    gcfg = bcfg = None
    if method == REFERENCE:  # the hand-written prompt, scored as it is (a run of "initial")
        initial_prompt = config.reference_prompt or start_text
    if is_greater(method):
        gcfg = GreaterConfig(
            mode=config.mode,
            steps=10_000,
            n_train=config.n_train,
            n_dev=config.n_dev,
            seed=config.seed,
            time_budget_s=config.budget_s,
            max_new_tokens=CHAIN_CAP,
            rank="random" if method == "greater-random" else "gradient",
            search=SEARCH_OF.get(method, "all"),
            width=config.width,
            width_max=config.width or 64,
        )
    else:
        bcfg = BaselineConfig(
            method="initial" if method == REFERENCE else method,
            budget_s=config.budget_s,
            n_train=config.n_train,
            n_dev=config.n_dev,
            seed=config.seed,
        )
    llama = models.llama
    result = start_run(
        project,
        task,
        "initial" if method == REFERENCE else method,
        model_id=models.info.id,
        greater=gcfg,
        baseline=bcfg,
        initial_prompt=initial_prompt,
        stop=stop,
        torch_model=models.torch if is_greater(method) else None,
        llama_model=llama,
        bench_id=bench_id,
        method_name=method,
    )
    if result.status != "done":
        return result
    say(f"{task}: {method}: test")
    task_row = store.task(project.id, task)
    start = store.find_prompt(project.id, task_row["id"], start_text)
    n_test = min(config.n_test, len(store.examples(task_row["id"], "test")))
    for prompt_id in dict.fromkeys(p for p in (result.prompt_id, start and start["id"]) if p):
        if _test_evaluation(store, prompt_id, task_row["id"], config.mode, models.info.id, n_test) is None:
            evaluate_prompt(
                store,
                model=llama,
                task_row=task_row,
                prompt_row=store.prompt(prompt_id),
                split="test",
                settings=EvalSettings(mode=config.mode),
                limit=config.n_test,
            )
    return result


# A worker process keeps the models it loaded for the next cells it is given (Ray reuses its workers).
_WORKER_MODELS: dict[tuple[str, str], CellModels] = {}


def _cell_on_worker(
    snapshot: bytes,
    settings: dict,
    config: BenchConfig,
    bench_id: int,
    task: str,
    method: str,
    model_id: str,
    sha256: str,
) -> dict:
    """A Ray task: one cell in a temporary copy of the history; returns the rows it added, the run's status and
    error (a failed run is stored too, as a local bench stores it), and who ran it."""
    from .cluster import WorkerProject, assigned_cpus, worker_identity

    key = (model_id, sha256)
    threads = assigned_cpus()
    if "torch" in sys.modules:  # the worker's torch uses the CPUs this cell was given, not the whole machine
        sys.modules["torch"].set_num_threads(threads)
    if key not in _WORKER_MODELS or _WORKER_MODELS[key].n_threads != threads:
        _WORKER_MODELS[key] = CellModels(model_id, sha256, n_threads=threads)
    who = worker_identity(_WORKER_MODELS[key].info)
    with WorkerProject(snapshot, settings) as wp:
        try:
            result = run_cell(wp.project, config, bench_id, task, method, _WORKER_MODELS[key])
            status, error = result.status, None
        except Exception as exc:  # the run is stored failed, with the steps before the error
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        return {"rows": wp.new_rows(), "status": status, "error": error, **who}


def _run_on_cluster(
    project,
    config: BenchConfig,
    bench_id: int,
    todo: list[tuple[str, str]],
    address: str,
    *,
    say: Callable[[str], None],
    stop: threading.Event | None,
    cpus: int = 1,
) -> list[tuple[str, str, str]]:
    """The bench's cells as Ray tasks; each is stored as it finishes. Returns the failed cells (task, method,
    error); the others are stored whatever happens to those."""
    from .cluster import connect, fan_out, history_snapshot, import_rows, mismatch, worker_identity
    from .models import get_model, verified_gguf

    info = get_model(config.model_id)
    sha = verified_gguf(info)[1]  # the file's hash, as the history records it
    if not todo:
        return []
    ray = connect(address)
    snapshot = ray.put(history_snapshot(project.store))
    settings = dict(project.settings)
    total, finished = len(todo), 0
    failed: list[tuple[str, str, str]] = []
    mine = worker_identity(info)
    say(f"{total} cells sent to the Ray cluster ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")

    def on_result(cell: tuple[str, str], out: dict) -> None:
        nonlocal finished
        task, method = cell
        finished += 1
        why = mismatch(out, mine)
        if why is not None:
            failed.append((task, method, why))
            say(f"[{finished}/{total}] {task}: {method}: not stored: {why}")
            return
        import_rows(project, out["rows"])
        if out["error"]:
            failed.append((task, method, out["error"]))
            say(f"[{finished}/{total}] {task}: {method}: failed on {out['host']}: {out['error']}")
        else:
            say(f"[{finished}/{total}] {task}: {method}: {out['status']} (on {out['host']})")

    def on_error(cell: tuple[str, str], message: str) -> None:
        nonlocal finished
        finished += 1
        failed.append((cell[0], cell[1], message))
        say(f"[{finished}/{total}] {cell[0]}: {cell[1]}: failed: {message}")

    fan_out(
        ray,
        _cell_on_worker,
        (((task, method), (snapshot, settings, config, bench_id, task, method, info.id, sha)) for task, method in todo),
        on_result=on_result,
        on_error=on_error,
        stop=stop,
        num_cpus=cpus,
    )
    return failed


def _test_evaluation(store, prompt_id: int, task_id: int, mode: str, model_id: str | None = None, n: int | None = None):
    """The newest finished llama.cpp test evaluation of a prompt version (on ``model_id``, of ``n`` rows, when
    given)."""
    evs = [
        e
        for e in store.evaluations(prompt_id=prompt_id, task_id=task_id)
        if e["split"] == "test"
        and e["status"] == "done"
        and e["backend"] == "llamacpp"
        and e["mode"] == mode
        and (model_id is None or e["model_id"] == model_id)
        and (n is None or e["n"] == n)
    ]
    return evs[-1] if evs else None


def collect(project, bench_id: int) -> list[BenchCell]:
    store = project.store
    cfg = store.bench(bench_id)["config"]
    mode = cfg.get("mode", "direct")
    cells = []
    for run in store.bench_runs(bench_id):
        if run["status"] != "done" or not run["best_prompt_id"]:
            continue
        ev = _test_evaluation(store, run["best_prompt_id"], run["task_id"], mode, cfg.get("model_id"))
        if ev is None:
            continue
        t = run["timings"]
        best = store.prompt(run["best_prompt_id"])
        parts = (f" [+ {len(json.loads(best['demos']))} demonstrations]" if best.get("demos") else "") + (
            " [+ label calibration]" if best.get("calibration") else ""
        )
        cell = BenchCell(
            task=run["config"]["task"],
            method=run["config"].get("bench_method", run["method"]),
            run_id=run["id"],
            prompt=best["text"],
            parts=parts,
            accuracy=ev["accuracy"],
            ci=(ev["ci_low"], ev["ci_high"]),
            n=ev["n"],
            seconds=t.get("seconds", t.get("optimize_seconds", 0.0)),  # the whole run: search and final choice
            usage=t.get("usage", {}),
            evaluation_id=ev["id"],
            kept_initial=run["best_prompt_id"] == run["initial_prompt_id"],
        )
        steps = store.steps(run["id"])
        cell.steps = len(steps)
        cell.agreement = [
            s["search"]["agreement"] for s in steps if s.get("search") and s["search"].get("agreement") is not None
        ]
        base_id = run["initial_prompt_id"]
        if cell.method == REFERENCE:  # compared with the bench's start, not with itself
            from .defaults import DEFAULT_INITIAL_PROMPT

            start = store.find_prompt(project.id, run["task_id"], cfg.get("initial_prompt") or DEFAULT_INITIAL_PROMPT)
            base_id = start["id"] if start else None
            cell.kept_initial = False
        base = _test_evaluation(store, base_id, run["task_id"], mode, cfg.get("model_id")) if base_id else None
        if base is not None:
            a = {r["example_id"]: bool(r["correct"]) for r in store.results(ev["id"])}
            b = {r["example_id"]: bool(r["correct"]) for r in store.results(base["id"])}
            cell.wins, cell.losses, _ = paired_counts_by_key(a, b)
            cell.p_value = mcnemar_two_sided(cell.wins, cell.losses)
        cells.append(cell)
    return cells


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
    }


def markdown_table(cells: list[BenchCell], methods: list[str], tasks: list[str]) -> str:
    by = {(c.task, c.method): c for c in cells}
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task in tasks:
        row = []
        for m in methods:
            c = by.get((task, m))
            if c is None:
                row.append("-")
                continue
            text = f"{100 * c.accuracy:.1f} ({100 * c.ci[0]:.0f}-{100 * c.ci[1]:.0f})"
            if m != "initial" and c.p_value is not None:
                bold = "**" if c.p_value < 0.05 else ""
                text += f" {bold}+{c.wins}/-{c.losses} p={c.p_value:.2f}{bold}"
            row.append(text)
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    avg, secs = [], []
    for m in methods:
        accs = [by[(t, m)].accuracy for t in tasks if (t, m) in by]
        avg.append("-" if not accs else f"**{100 * sum(accs) / len(accs):.1f}**")
        s = [by[(t, m)].seconds for t in tasks if (t, m) in by]
        secs.append("-" if not s else f"{sum(s) / len(s):.0f}")
    lines.append("| **average** | " + " | ".join(avg) + " |")
    lines.append("| seconds used, final choice included (mean) | " + " | ".join(secs) + " |")
    sig = []
    for m in methods:
        cs = [by[(t, m)] for t in tasks if (t, m) in by]
        if m == "initial" or not cs:
            sig.append("-")
            continue
        up = sum(1 for c in cs if c.p_value is not None and c.p_value < 0.05 and (c.wins or 0) > (c.losses or 0))
        down = sum(1 for c in cs if c.p_value is not None and c.p_value < 0.05 and (c.wins or 0) < (c.losses or 0))
        sig.append(f"{up} better, {down} worse")
    lines.append("| significant vs initial (p < 0.05) | " + " | ".join(sig) + " |")
    kept = []
    for m in methods:
        cs = [by[(t, m)] for t in tasks if (t, m) in by]
        kept.append("-" if m in ("initial", "cot") or not cs else f"{sum(c.kept_initial for c in cs)}/{len(cs)}")
    lines.append("| kept the initial prompt (dev test) | " + " | ".join(kept) + " |")
    return "\n".join(lines)


def agreement_table(cells: list[BenchCell], tasks: list[str]) -> str:
    """The gradient's rank agreement (Spearman, gradient rank vs true score of the fully scored candidates)
    per task and over all tasks: how often the gradient ranks candidates better than chance. The sign test asks
    whether positive and negative agreements are equally likely (what a ranking no better than random gives);
    steps with agreement exactly 0 are left out of it."""
    lines = [
        "| task | steps | median | quartiles | share > 0 | sign test p (two-sided) |",
        "|---|---|---|---|---|---|",
    ]
    by = {(c.task, c.method): c for c in cells}

    def row(name: str, values: list[float]) -> str:
        v = sorted(values)
        q = [v[min(len(v) - 1, int(f * (len(v) - 1) + 0.5))] for f in (0.25, 0.5, 0.75)]
        pos, _, p = sign_test(v)
        return f"| {name} | {len(v)} | {q[1]:+.2f} | {q[0]:+.2f} to {q[2]:+.2f} | {pos}/{len(v)} | {p:.3f} |"

    pooled: list[float] = []
    for t in tasks:
        c = by.get((t, "greater"))
        if c is None or not c.agreement:
            continue
        pooled += list(c.agreement)
        lines.append(row(t, list(c.agreement)))
    if len(lines) > 3:
        lines.append(row("**all tasks**", pooled))
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
        err = [
            [100 * (by[(t, m)].accuracy - by[(t, m)].ci[0]) if (t, m) in by else 0 for t in tasks],
            [100 * (by[(t, m)].ci[1] - by[(t, m)].accuracy) if (t, m) in by else 0 for t in tasks],
        ]
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


def write_report(project, bench_id: int, out_dir: Path | None = None) -> tuple[Path, Path | None]:
    store = project.store
    bench = store.bench(bench_id)
    cfg = bench["config"]
    cells = collect(project, bench_id)
    methods = list(columns(cfg["methods"], cfg.get("reference_prompt")))
    tasks = [t for t in cfg["tasks"]]
    out_dir = Path(out_dir or project.path / "reports")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401  (the bench extra: an edge install writes the table without the chart)

        png = write_chart(cells, methods, tasks, out_dir / f"bench-{bench_id}.png")
        chart = f"![chart]({png.name})"
    except ImportError:
        png, chart = None, "(no chart: this install has no matplotlib; `pip install 'gradprompt[bench]'` adds it)"
    md = out_dir / f"bench-{bench_id}.md"
    text = [
        f"# Bench {bench_id}: {bench['name']}",
        "",
        f"Model {cfg['model_id']}; budget {cfg['budget_s']:.0f} s per method and task (the whole search: "
        f"proposals, scoring and the final dev test; the test evaluation not counted); {cfg['n_train']} train / {cfg['n_dev']} dev / "
        f"up to {cfg['n_test']} test examples; seed {cfg['seed']}; {cfg['mode']} mode; initial prompt "
        f"{cfg.get('initial_prompt') or 'the paper' + chr(39) + 's'!r}"
        + (f"; reference (hand-written) prompt {cfg['reference_prompt']!r}" if cfg.get("reference_prompt") else "")
        + ". Test accuracy % with 95% Wilson "
        "intervals, scored with llama.cpp on the GGUF; +W/-L: test examples fixed / broken against the "
        "initial prompt, p: exact two-sided McNemar test on the same examples (bold: p < 0.05).",
        "",
        markdown_table(cells, methods, tasks),
        "",
        chart,
        "",
    ]
    if any(c.agreement for c in cells):
        text += [
            "## The gradient's rank agreement with the true scores (GReaTer runs)",
            "",
            agreement_table(cells, tasks),
            "",
        ]
    text += ["## Final prompts", ""]
    for c in sorted(cells, key=lambda c: (c.task, methods.index(c.method))):
        usage = ", ".join(f"{k} {v}" for k, v in c.usage.items()) if c.usage else ""
        kept = "; kept the initial prompt" if c.kept_initial and c.method not in ("initial", "cot") else ""
        text.append(
            f"* **{c.task} / {c.method}** (run {c.run_id}; {c.steps} steps{kept}"
            f"{'; ' + usage if usage else ''}): `{c.prompt}`{c.parts}"
        )
    from .memorization import warning_for

    for t in tasks:  # a test split the model looks to have memorized makes every number above optimistic
        row = store.find_task(project.id, t)
        memorized = warning_for(store, row["id"], "test", cfg["model_id"]) if row else None
        if memorized:
            text += ["", f"**{t}:** {memorized}"]
    text += ["", f"Machine: {cfg.get('machine', {})}"]
    md.write_text("\n".join(text) + "\n", encoding="utf-8")
    store.update_bench(bench_id, report=str(md))
    return md, png
